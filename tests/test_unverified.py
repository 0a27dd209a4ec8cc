"""A model file without its manifest is unverified (issue 25, item 6): edge inspect says so, edge bench
marks its row, edge check fails it unless --allow-unverified, and pack, engine and triton refuse it
unless --force. Made with a real exported run whose manifest is deleted, and with a bare file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.gate import evaluate_gate
from edge.cli import main
from edge.manifest import manifest_path
from edge.verify import unverified_reason
from tests.bench.test_gate import _row, make_report


@pytest.fixture()
def bare_run(fashion_onnx_run: Path, tmp_path: Path) -> Path:
    """The small exported run, with model.onnx's manifest deleted (or a bare file dropped in)."""
    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    manifest_path(run / "model.onnx").unlink()
    return run


def test_the_reason_names_the_missing_manifest(bare_run: Path, fashion_onnx_run: Path) -> None:
    assert unverified_reason(fashion_onnx_run / "model.onnx") is None
    reason = unverified_reason(bare_run / "model.onnx")
    assert reason is not None and reason.startswith("model.onnx has no manifest (model.onnx.json): made outside edge")


def test_inspect_says_unverified(bare_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(bare_run / "model.onnx")]) in (0, None)
    assert "unverified: model.onnx has no manifest" in " ".join(capsys.readouterr().out.split())
    assert main(["inspect", str(bare_run)]) in (0, None)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "model.onnx" in line and "checkpoint" not in line)
    assert "unverified" in line


def test_bench_marks_the_row_and_the_gate_fails_it(bare_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--artifacts", "onnx-fp32", "--devices", "cpu", "--batch-sizes", "1", "--warmup-s", "0", "--min-iters", "3"]
    args += ["--min-seconds", "0", "--rounds", "1", "--threads", "1"]
    assert main(["bench", str(bare_run), *args]) == 0
    report = json.loads((bare_run / "bench" / "report.json").read_text())
    (row,) = report["rows"]
    assert row["status"] == "unverified" and row["cells"][0]["status"] == "ok"  # measured, numbers kept
    assert row["reason"].startswith("model.onnx has no manifest")
    capsys.readouterr()
    assert main(["check", str(bare_run), "--allow-small-eval", "--allow-unmeasured"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "FAIL verified onnx-fp32@cpu: unverified: model.onnx has no manifest" in out
    assert main(["check", str(bare_run), "--allow-small-eval", "--allow-unmeasured", "--allow-unverified"]) == 0


def test_the_gate_fails_an_unverified_row_unless_allowed() -> None:
    report = make_report()
    _row(report, "int8-cpu@cpu").update(status="unverified", reason="model.int8-cpu.onnx has no manifest")
    failed = {c.name: c for c in evaluate_gate(report, None, 0.5, 10.0) if c.status == "fail"}
    assert failed["verified int8-cpu@cpu"].detail.endswith("make it with edge, or give --allow-unverified")
    allowed = {c.name: c.status for c in evaluate_gate(report, None, 0.5, 10.0, allow_unverified=True)}
    assert allowed["verified int8-cpu@cpu"] == "warn"
    assert allowed["top-1 drop int8-cpu@cpu vs onnx-fp32"] == "pass"  # still measured and judged


def test_pack_refuses_unless_forced(bare_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", str(bare_run), "--out", str(tmp_path / "b.tar.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unverified: model.onnx has no manifest" in err[0] and "--force" in err[0]
    assert not (tmp_path / "b.tar.gz").exists()
    assert main(["pack", str(bare_run), "--out", str(tmp_path / "b.tar.gz"), "--force"]) in (0, None)
    index = json.loads(Path(str(tmp_path / "b.tar.gz") + ".json").read_text())["provenance"]
    assert index["unverified"] == ["model.onnx"]


def test_engine_refuses_an_unverified_parent_unless_forced(bare_run: Path) -> None:
    from edge.errors import UserError
    from edge.tensorrt.build import validate_request

    with pytest.raises(UserError, match=r"model.onnx: unverified: model.onnx has no manifest.*--force"):
        validate_request(bare_run, "fp16", "1:8:32", 1.0, None, None, False, False, False)
    assert validate_request(bare_run, "fp16", "1:8:32", 1.0, None, None, False, False, True).force


def test_triton_leaves_it_out_unless_forced(bare_run: Path) -> None:
    from edge.errors import UserError
    from edge.triton.models import Options
    from edge.triton.repository import plan_models

    with pytest.raises(UserError, match=r"has no artifact to serve: model.onnx left out: unverified: .*--force includes it"):
        plan_models(bare_run, Options())
    plans, _ = plan_models(bare_run, Options(force=True))
    assert [p.artifact for p in plans] == ["onnx-fp32"]
