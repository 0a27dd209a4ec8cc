"""edge compare: one table across real bench reports; accuracy side by side only on the same eval set."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import DIFFERENT_EVAL, write_outputs
from tests.bench.conftest import edge_cli

QUICK = ("--artifacts", "onnx-fp32", "--devices", "cpu", "--warmup-s", "0", "--min-iters", "3", "--min-seconds", "0")
QUICK += ("--single-stream", "0", "--no-end-to-end", "--timeout", "180")


@pytest.fixture(scope="module")
def three_reports(pipeline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two reports on the same 200 test images with different settings, one on 150 (another eval set)."""
    root = tmp_path_factory.mktemp("compare")
    run = root / "run"
    shutil.copytree(pipeline_run, run)
    settings = (
        ("a", ("--batch-sizes", "1", "--threads", "1", "--eval-count", "200")),
        ("b", ("--batch-sizes", "1,4", "--threads", "2", "--eval-count", "200")),
        ("c", ("--batch-sizes", "1", "--threads", "1", "--eval-count", "150")),
    )
    reports = []
    for name, options in settings:
        edge_cli("bench", str(run), "--eval", "fashion-mnist", *QUICK, *options, "--out", str(root / name))
        reports.append(root / name / "report.json")
    return reports


def compare(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="80")
    return subprocess.run([sys.executable, "-m", "edge", "compare", *args], capture_output=True, text=True, env=env, timeout=120)


def test_compare_three_real_reports(three_reports: list[Path], tmp_path: Path) -> None:
    proc = compare(*map(str, three_reports), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("\nnote:")[0].split("\nwrote ")[0]  # notes are soft-wrapped lines
    assert "…" not in proc.stdout and max(len(line) for line in table.splitlines()) <= 80, proc.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "compare.csv").open()))
    assert [(r["report"], r["artifact"], r["device"]) for r in rows] == [(f"R{i}", "onnx-fp32", "cpu") for i in (1, 2, 3)]
    reports = [json.loads(p.read_text()) for p in three_reports]
    for row, report in zip(rows, reports):
        measured = next(r for r in report["rows"] if r["artifact"] == "onnx-fp32" and r["device"] == "cpu")
        b1 = next(c for c in measured["cells"] if c["batch"] == 1)
        assert float(row["p50_b1_ms"]) == pytest.approx(b1["compute"]["p50_ms"])
        assert float(row["best_images_per_s"]) == pytest.approx(max(c["compute"]["items_per_s"] for c in measured["cells"]))
        assert row["machine_fingerprint"] == report["environment"]["machine_fingerprint"]
    # R1 and R2 share the evaluation set: their top-1 side by side, the real figures; R3 is marked
    for row, report in zip(rows[:2], reports[:2]):
        top1 = next(r for r in report["rows"] if r["artifact"] == "onnx-fp32")["accuracy"]["top1"]
        assert float(row["top1"]) == pytest.approx(top1)
    assert rows[0]["eval"] == rows[1]["eval"] == "E1" and rows[2]["eval"] == "E2"
    assert rows[2]["top1"] == rows[2]["agreement"] == DIFFERENT_EVAL
    assert table.count("diff.") == 3 and 'accuracy of the others reads "different eval set"' in proc.stdout
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert markdown.count("| R3 |") == 2 and DIFFERENT_EVAL in markdown
    assert (tmp_path / "out" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_and_mixed_schema_reports_fail_in_one_line(three_reports: list[Path], tmp_path: Path) -> None:
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text(json.dumps({"hello": 1}))
    older = tmp_path / "older.json"
    older.write_text(json.dumps(dict(json.loads(three_reports[0].read_text()), schema_version=1)))
    truncated = tmp_path / "cut.json"
    truncated.write_text(three_reports[0].read_text()[:100])
    for bad, message in (
        (not_a_report, "is not an edge bench report"),
        (older, "different schema versions"),
        (truncated, "is not a readable bench report"),
        (tmp_path / "missing.json", "does not exist"),
    ):
        proc = compare(str(three_reports[1]), str(bad), "--out", str(tmp_path / "out"))
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_png_is_skipped_with_a_note_without_matplotlib(three_reports: list[Path], tmp_path: Path, monkeypatch) -> None:
    import bench.compare as compare_module

    monkeypatch.setattr(compare_module, "plot_unavailable", lambda: "report.png not written: it needs matplotlib")
    reports = compare_module.load_reports([str(p) for p in three_reports[:2]])
    written, note = write_outputs(tmp_path, compare_module.machine_rows(reports), compare_module.comparison_rows(reports))
    assert [p.name for p in written] == ["compare.csv", "compare.md"] and not (tmp_path / "compare.png").exists()
    assert note == "compare.png not written: it needs matplotlib"


def test_out_keeps_the_files_it_replaces(tmp_path: Path, capsys) -> None:
    from edge.cli import main
    from tests.bench.test_gate import make_report

    reports = []
    for name, machine in (("a.json", "m1"), ("b.json", "m2")):
        reports.append(tmp_path / name)
        reports[-1].write_text(json.dumps(make_report(machine=machine)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.md").write_text("my own notes on these machines\n")
    assert main(["compare", *map(str, reports), "--out", str(out)]) == 0

    (kept,) = (out / "history").iterdir()
    assert [p.name for p in kept.iterdir()] == ["compare.md"]
    assert (kept / "compare.md").read_text() == "my own notes on these machines\n"
    assert "my own notes" not in (out / "compare.md").read_text()
    assert f"kept the previous compare.md in {kept}/ (edge compare replaces it)" in capsys.readouterr().out
