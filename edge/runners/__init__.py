"""The Runner contract, every backend, and the selector that picks one from an artifact and a device.

``base`` is the contract (``with runner: logits = runner.infer(batch)``; backends implement
``_activate/_infer/_deactivate``); ``torch_runner``, ``onnxruntime_runner`` (CPU, and the CUDA and
TensorRT execution providers) and ``tensorrt_runner`` (native engines, over ``cuda_io``'s buffers
and streams) are the backends, all built as ``Backend(path, spec, device=..., threads=...)``;
``tensorrt_engines`` knows which engine of a run can run on this machine. Bench and camera call
:func:`select_runner` and never special-case a backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.artifacts import artifact_spec, verify_artifact
from edge.errors import UserError
from edge.runners.base import DEVICES, Runner, RunnerInputError
from edge.runners.tensorrt_engines import pick_engine, require_tensorrt, tensorrt_available

BACKENDS = ("auto", "torch", "onnxruntime", "ort-tensorrt", "tensorrt")
_SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
_COMPATIBLE = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "ort-tensorrt"),
    "tensorrt": ("tensorrt",),
}

__all__ = [
    "BACKENDS",
    "DEVICES",
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
        "auto": [run.onnx, run.checkpoint],
    }[backend]
    for candidate in candidates:
        if candidate.exists():
            if backend == "onnxruntime" and candidate.suffix != ".onnx":
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
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    path = resolve_artifact(artifact, backend=backend, device=device)
    verify_artifact(path)  # a file that no longer matches its manifest is refused, with the command that remakes it
    file_backend = _SUFFIX_BACKEND.get(path.suffix)
    if file_backend is None:
        raise UserError(f"{path}: unknown artifact type {path.suffix!r} (expected .pt, .onnx or .engine)")
    chosen = file_backend if backend == "auto" else backend
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
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, spec, device=device, threads=threads, **options)
