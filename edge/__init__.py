"""edge: the deployable core of the edge classification harness, and its deployment stages.

The core is ``errors``, ``spec``, ``run``, ``checkpoints``, ``photos``, the artifact modules
(``atomic`` writes, the ``environment`` fingerprint, the ``manifest``, ``verify``, ``lineage``,
``artifact_spec``) and ``runners``; the stages over it are ``export``, ``quantize/``,
``tensorrt/``, ``camera/``, ``inspect``, ``pack`` and ``selftest``; ``cli`` is the ``edge``
command. The layering is an import-linter contract in pyproject.toml.

Importing ``edge`` needs only numpy, onnx and rich: torch, onnxruntime, OpenCV and TensorRT are
imported inside the functions that use them, so this package runs on a Jetson with JetPack's own
builds, without CUDA-enabled torch, without TensorRT and without a camera.
"""

__version__ = "0.1.0"
