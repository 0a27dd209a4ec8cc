"""A new bench report never silently replaces the previous one: it is kept under history/."""

from __future__ import annotations

import json

from bench.report import forget, keep_previous, write_report
from tests.bench.test_gate import make_report


def test_the_previous_report_set_is_kept_under_history(tmp_path):
    first = make_report()
    first["settings"].update(run="runs/demo", profile="demo", window={"warmup_s": 0, "min_iters": 1, "min_seconds": 0})
    assert keep_previous(tmp_path) is None  # nothing to keep yet
    write_report(first, tmp_path)
    second = json.loads(json.dumps(first))
    second["settings"]["profile"] = "full"
    kept = keep_previous(tmp_path)
    write_report(second, tmp_path)
    assert kept is not None and kept.parent == tmp_path / "history"
    assert {p.name for p in kept.iterdir()} >= {"report.json", "report.json.json", "report.csv", "report.md"}
    assert json.loads((kept / "report.json").read_text())["settings"]["profile"] == "demo"
    assert json.loads((tmp_path / "report.json").read_text())["settings"]["profile"] == "full"


def test_a_failed_write_forgets_what_it_kept(tmp_path):
    report = make_report()
    report["settings"].update(run="runs/demo", profile="demo", window={"warmup_s": 0, "min_iters": 1, "min_seconds": 0})
    write_report(report, tmp_path)
    kept = keep_previous(tmp_path)
    forget(kept)
    assert not (tmp_path / "history").exists()
    assert (tmp_path / "report.json").is_file()  # the set in place is untouched


def _report(profile):
    report = make_report()
    report["settings"].update(run="runs/demo", profile=profile, window={"warmup_s": 0, "min_iters": 1, "min_seconds": 0})
    return report


def test_the_previous_report_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    # vfat and exFAT (SD cards) have no hard links: os.link raises EPERM there
    import errno
    import os

    write_report(_report("demo"), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", no_links)
    kept = keep_previous(tmp_path)
    write_report(_report("full"), tmp_path)
    assert kept is not None
    for name, data in before.items():
        assert (kept / name).read_bytes() == data, name
    assert json.loads((kept / "report.json").read_text())["settings"]["profile"] == "demo"
    assert json.loads((tmp_path / "report.json").read_text())["settings"]["profile"] == "full"


def test_a_run_keeps_its_previous_report_under_run_history(tmp_path):
    run = tmp_path / "run"
    out = run / "bench"
    write_report(_report("demo"), out)
    kept = keep_previous(out, run)
    write_report(_report("full"), out)
    assert kept is not None and kept.parent == run / "history"
    assert json.loads((kept / "bench" / "report.json").read_text())["settings"]["profile"] == "demo"
    assert (kept / "bench" / "report.json.json").is_file()
