"""Triton Inference Server: a model repository from any run (``edge triton``), and serving it (``edge serve``).

``repository`` turns a run's artifacts into Triton models (ONNX Runtime for the ONNX models, TensorRT
plans for the engines, one ``cc_model_filenames`` entry per GPU architecture found), ``pbtxt`` writes
and validates their ``config.pbtxt`` against Triton's own schema, ``readme`` writes the repository's
README (server command, client-side preprocessing), ``serve`` runs PyPI's bundled ``tritonserver``.
"""
