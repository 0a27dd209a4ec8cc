"""The Runner contract, every backend, and the selector that picks one from an artifact and a device.

``base`` is the contract (``with runner: logits = runner.infer(batch)``; backends implement
``_activate/_infer/_deactivate``); ``torch_runner``, ``onnxruntime_runner`` (CPU, and the CUDA and
TensorRT execution providers), ``tensorrt_runner`` (native engines, over ``cuda_io``'s buffers and
streams) and ``openvino_runner`` (any ONNX file on OpenVINO's CPU, GPU or NPU plugin, compiled per
batch size) are the backends, all built as ``Backend(path, spec, device=..., threads=...)``;
``tensorrt_engines`` knows which engine of a run can run on this machine;
:func:`compatible_backends` and :func:`available_backends` say which backends run an artifact (for
``edge inspect`` and ``edge pack``). Bench and camera call :func:`select_runner` and never
special-case a backend.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from edge.artifact_spec import artifact_spec
from edge.errors import UserError
from edge.runners.base import DEVICES, Runner, RunnerInputError
from edge.runners.tensorrt_engines import pick_engine, require_tensorrt, tensorrt_available
from edge.verify import verify_artifact

BACKENDS = ("auto", "torch", "onnxruntime", "ort-tensorrt", "tensorrt", "openvino")
OPENVINO_ONLY_DEVICES = ("gpu", "npu")  # Intel GPU / NPU plugins: --device values only the openvino backend takes
# Manifest kinds whose file is made for one runtime: ``auto`` runs it there (``edge quantize --target openvino``).
OWN_RUNTIME = {"onnx-int8-openvino": "openvino"}
_SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
_COMPATIBLE = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "ort-tensorrt", "openvino"),
    "tensorrt": ("tensorrt",),
}

__all__ = [
    "BACKENDS",
    "DEVICES",
    "OPENVINO_ONLY_DEVICES",
    "available_backends",
    "compatible_backends",
    "Runner",
    "RunnerInputError",
    "select_runner",
    "resolve_artifact",
    "tensorrt_available",
    "require_tensorrt",
]


def resolve_artifact(path: str | os.PathLike[str], backend: str = "auto", device: str = "cpu") -> Path:
    """A run directory or an artifact file -> the artifact file a backend should run."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: give a run directory or an artifact file (.pt, .onnx, .engine)")
    if path.is_file():
        return path
    from edge.run import RunDir

    run = RunDir.open(path)
    if backend == "tensorrt":
        engines = run.engine_files()
        if not engines:
            raise UserError(f"{path} has no TensorRT engines: build them with `make engine RUN={path}`")
        return pick_engine(engines)
    candidates = {
        "torch": [run.checkpoint],
        "onnxruntime": [run.onnx, run.checkpoint],
        "ort-tensorrt": [run.onnx],
        "openvino": [run.onnx],
        "auto": [run.onnx, run.checkpoint],
    }[backend]
    for candidate in candidates:
        if candidate.exists():
            if backend in ("onnxruntime", "openvino") and candidate.suffix != ".onnx":
                break
            return candidate
    raise UserError(
        f"{path} has no artifact for backend {backend!r}: expected "
        f"{' or '.join(c.name for c in candidates)} (run `edge export {path}` for ONNX)"
    )


def select_runner(
    artifact: str | os.PathLike[str],
    device: str = "cpu",
    backend: str = "auto",
    threads: int | None = None,
    **options: Any,
) -> Runner:
    """The runner for an artifact (or a run directory) on a device."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if device not in DEVICES and not (backend == "openvino" and device in OPENVINO_ONLY_DEVICES):
        extra = f" (and {', '.join(OPENVINO_ONLY_DEVICES)} with --backend openvino)"
        raise UserError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}{extra}")
    path = resolve_artifact(artifact, backend=backend, device=device)
    manifest = verify_artifact(path)  # a file that no longer matches its manifest is refused, with the command that remakes it
    file_backend = _SUFFIX_BACKEND.get(path.suffix)
    if file_backend is None:
        raise UserError(f"{path}: unknown artifact type {path.suffix!r} (expected .pt, .onnx or .engine)")
    chosen = file_backend if backend == "auto" else backend
    if backend == "auto" and manifest is not None and manifest.kind in OWN_RUNTIME:
        chosen = OWN_RUNTIME[manifest.kind]  # a target-openvino model runs where it was made for
    if chosen not in _COMPATIBLE[file_backend]:
        raise UserError(f"backend {chosen!r} cannot run {path.name}: {file_backend} runs {path.suffix} files")

    if chosen == "tensorrt":
        require_tensorrt()  # before the spec lookup: "TensorRT is not installed" is the error to show first
    spec = artifact_spec(path)
    if chosen == "tensorrt":
        from edge.runners.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, spec, device=device, threads=threads, **options)
    if chosen == "torch":
        from edge.runners.torch_runner import TorchRunner

        return TorchRunner(path, spec, device=device, threads=threads, **options)
    if chosen == "ort-tensorrt":
        from edge.runners.onnxruntime_runner import ort_tensorrt_runner

        return ort_tensorrt_runner(path, spec, device=device, threads=threads, **options)
    if chosen == "openvino":
        from edge.runners.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, spec, device=device, threads=threads, **options)
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, spec, device=device, threads=threads, **options)


def compatible_backends(path: str | os.PathLike[str], kind: str | None = None) -> tuple[str, ...]:
    """The backends that can run an artifact file, from its suffix (whether or not they are installed
    here). ``kind`` is its manifest kind: an ``onnx-int8-cpu`` model (uint8 activations with zero
    points) and an ``onnx-int8-openvino`` one (uint8 where a tensor is non-negative) are not for
    TensorRT, which takes symmetric int8 only."""
    family = _SUFFIX_BACKEND.get(Path(path).suffix)
    if family is None:
        return ()
    backends = _COMPATIBLE[family]
    if kind in ("onnx-int8-cpu", "onnx-int8-openvino"):
        backends = tuple(b for b in backends if b != "ort-tensorrt")
    return backends


def available_backends(path: str | os.PathLike[str], kind: str | None = None) -> tuple[str, ...]:
    """The backends of :func:`compatible_backends` whose packages are installed here (for a .engine:
    whether TensorRT imports; ort-tensorrt: whether ONNX Runtime has its TensorRT provider)."""
    return tuple(b for b in compatible_backends(path, kind) if _installed(b))


def _installed(backend: str) -> bool:
    if backend == "tensorrt":
        return tensorrt_available()
    if backend == "ort-tensorrt":
        if importlib.util.find_spec("onnxruntime") is None:
            return False
        import onnxruntime

        return "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[backend]
    return importlib.util.find_spec(module) is not None
