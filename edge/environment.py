"""The environment fingerprint: where an artifact was built or a figure was measured.

Package versions, CPU model and instruction-set flags, GPU and driver (from nvidia-smi, without
importing torch), and on a Jetson its L4T release and model. Every manifest and every bench report
records it; :func:`machine_fingerprint` hashes the part that decides absolute speed, so latencies
are compared only between reports from the same machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "torchvision",
    "timm",
    "opencv-python",
    "opencv-python-headless",
    "tensorrt",
    "rich",
)
_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
)


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:  # JetPack installs tensorrt as a system module without pip metadata
        if "tensorrt" not in versions:
            import importlib.util

            if importlib.util.find_spec("tensorrt") is not None:
                import tensorrt  # type: ignore[import-not-found,unused-ignore]

                versions["tensorrt"] = str(tensorrt.__version__)
    except Exception as exc:  # a broken TensorRT install must not break fingerprinting
        versions["tensorrt"] = f"unimportable: {exc}"
    return versions


def _cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count() or 0,
        "cpu_flags": sorted(f for f in _CPU_FLAGS if f in flags),
    }


def _gpu_info() -> dict[str, Any]:
    """GPU name, driver, compute capability and CUDA, from nvidia-smi when present (no torch import)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        version_out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    name, driver, cc = (part.strip() for part in (out[0].split(",") + ["", "", ""])[:3])
    cuda = ""
    if "CUDA Version:" in version_out:
        cuda = version_out.split("CUDA Version:")[1].split()[0]
    return {"gpu_name": name, "gpu_driver": driver, "gpu_compute_capability": cc, "cuda": cuda, "gpu_count": len(out)}


def _jetson_info() -> dict[str, Any]:
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return {}
    info: dict[str, Any] = {"l4t_release": release.read_text().splitlines()[0].strip()}
    model = Path("/proc/device-tree/model")
    if model.exists():
        info["jetson_model"] = model.read_text(errors="replace").strip("\x00\n ")
    return info


def environment_fingerprint() -> dict[str, Any]:
    """Where an artifact was built or a figure measured."""
    env: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": _package_versions(),
    }
    env.update(_cpu_info())
    env.update(_gpu_info())
    env.update(_jetson_info())
    env["machine_fingerprint"] = machine_fingerprint(env)
    return env


def machine_fingerprint(env: dict[str, Any]) -> str:
    """A short hash of what decides absolute speed: CPU model and count, GPU, Jetson model."""
    key = "|".join(str(env.get(k, "")) for k in ("machine", "cpu_model", "cpu_count", "gpu_name", "jetson_model"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]
