"""The layering is a checked rule: the import-linter contracts in pyproject.toml hold on this tree
and break on a deliberate violation, and no module of the deployable core (nor any `edge` command
module) imports torch, TensorRT, OpenCV, ONNX Runtime or MLflow when it is imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "train", "calibration", "bench")
HEAVY = ("torch", "tensorrt", "cv2", "onnxruntime", "mlflow")


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("import-linter is not installed in this environment (dev extra)")
    return found


def _copy_tree(dest: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _run_contracts(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(cwd)}
    )


def test_contracts_hold_on_this_tree(tmp_path):
    _copy_tree(tmp_path)
    result = _run_contracts(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "injected", "broken"),
    [
        ("edge/spec.py", "import edge.quantize.cli\n", "edge.spec -> edge.quantize.cli"),
        ("bench/gate.py", "import train.loop\n", "bench.gate -> train.loop"),
        ("edge/run.py", "import edge.runners\n", "No cycles are allowed in edge"),
    ],
)
def test_a_deliberate_violation_breaks_a_contract(tmp_path, module, injected, broken):
    _copy_tree(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + "\n" + injected)
    result = _run_contracts(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    # edge.triton.python_model is not a module of the package: it is the script edge serve copies into
    # a Triton repository as 1/model.py, run by Triton's Python-backend stub (it imports pb_utils).
    return [n for n in names if not n.endswith("__main__") and n != "edge.triton.python_model"]


def test_no_edge_module_imports_a_heavy_package_at_import_time():
    """A Jetson imports edge with JetPack's own torch/TensorRT/OpenCV, or without them: every
    module of the package (core, stages, commands) imports them inside functions only."""
    modules = _modules("edge")
    assert {"edge.spec", "edge.runners", "edge.runners.onnxruntime_runner", "edge.camera.cli", "edge.quantize.cli"} <= set(
        modules
    )
    code = (
        "import importlib, sys\n"
        f"heavy = {HEAVY!r}\n"
        "bad = {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(h for h in heavy if h in sys.modules)\n"
        "    if loaded:\n"
        "        bad[name] = loaded\n"
        "        break\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{}", f"imported at module level (first module that pulled one in): {result.stdout}"
