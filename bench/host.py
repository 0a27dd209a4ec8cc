"""What this host can run and what a row used: shared by every kind of bench row.

A row (``bench.worker``'s artifact rows, ``bench.zoo``'s model rows) first asks
``unavailable_reason`` whether its artifact can run on its device here and raises ``Skip`` if not,
so it is recorded as skipped rather than as an error; at the end it reads its own ``peak_memory``.
"""

from __future__ import annotations

import importlib.util
import resource
import sys
from pathlib import Path


class Skip(Exception):
    """The row cannot run here (device or backend absent): recorded as skipped, not as an error."""


def unavailable_reason(path: Path, device: str, backend: str = "auto") -> str | None:
    """Why ``path`` cannot run on ``device`` (with ``backend``) here, or None. Checked before loading anything."""
    if backend == "openvino":
        if importlib.util.find_spec("openvino") is None:
            return "OpenVINO is not installed (pip install -e '.[openvino]', or make install EXTRAS=...,openvino)"
        if device == "cuda":
            return "OpenVINO runs on the CPU (and Intel GPU/NPU plugins), not on CUDA"
        return None
    suffix = path.suffix
    if suffix in (".engine", ".plan"):
        from edge.runners import tensorrt_available

        if device != "cuda":
            return "TensorRT engines run on CUDA only"
        if not tensorrt_available():
            return "TensorRT is not installed here"
    if device != "cuda":
        return None
    if suffix in (".pt", ".pth", ".engine", ".plan"):
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
    if suffix == ".onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "ONNX Runtime has no CUDAExecutionProvider here (needs onnxruntime-gpu and a CUDA device)"
    return None


def peak_memory(device: str) -> dict[str, float | None]:
    """Peak RSS of this process (MiB) and, on CUDA with torch loaded, peak GPU memory allocated."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    gpu = None
    if device == "cuda" and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.max_memory_allocated() / 2**20
    return {"peak_rss_mib": rss_kib / 1024.0, "peak_gpu_mib": gpu}
