"""Process hygiene of `edge bench`: a timeout or a Ctrl-C stops the worker's whole process group
(SIGTERM, SIGKILL after the grace period), so no orphan keeps the machine busy for the next
benchmark; a Ctrl-C ends the matrix with the row `interrupted`, the report of what was measured,
one line on stderr and exit 130; the gate fails an interrupted row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import matrix, processes
from bench.gate import evaluate_gate
from bench.matrix import BenchPlan, run_matrix
from bench.processes import run_worker, stop_process_group
from edge.cli import main
from edge.manifest import read_manifest
from edge.measure.report import read_report
from edge.measure.timing import TimingWindow

from .conftest import PIPELINE_ENV

REPO = Path(__file__).resolve().parents[2]


# ---- /proc ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie (exited, waiting for its reaper) is not alive."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _processes() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _descendants(root: int) -> set[int]:
    parents = {pid: int(fields[1]) for pid in _processes() if (fields := _stat(pid)) is not None}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _group(pgid: int) -> set[int]:
    return {pid for pid in _processes() if (fields := _stat(pid)) is not None and int(fields[2]) == pgid and _alive(pid)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- a worker that will not go quietly ----------------------------------------------------------


def _stubborn_worker(tmp_path: Path, ignore_term: bool) -> tuple[Path, Path]:
    """A stand-in for `python -m bench.worker`: starts a grandchild in its process group, writes both
    pids, and waits forever; with ``ignore_term`` both ignore SIGTERM (only SIGKILL stops them)."""
    pids = tmp_path / "pids"
    script = tmp_path / "stubborn-python"
    script.write_text(
        "#!/bin/bash\n"
        + ("trap '' TERM\n" if ignore_term else "")
        + f'sleep 300 &\necho "$$ $!" > {pids}.part && mv {pids}.part {pids}\nwait\nsleep 300\n'
    )
    script.chmod(0o755)
    return script, pids


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def test_a_timeout_stops_the_whole_process_group(tmp_path: Path, monkeypatch):
    script, pids = _stubborn_worker(tmp_path, ignore_term=True)
    monkeypatch.setattr(processes.sys, "executable", str(script))
    monkeypatch.setattr(processes, "GRACE_S", 1.0)
    started = time.monotonic()
    result = run_worker({"kind": "artifact", "name": "x"}, timeout_s=1.0)
    took = time.monotonic() - started
    assert result == {"status": "error", "error": "timed out after 1 s (raise --timeout)"}
    worker, grandchild = _pids(pids)
    assert not _alive(worker) and not _alive(grandchild), "the timed-out worker or its child survived"
    assert not _group(worker)
    assert 2.0 <= took < 30, took  # the timeout, then the grace period SIGTERM was given in vain


@pytest.mark.parametrize(
    ("ignore_term", "ended_by"), [(False, signal.SIGTERM), (True, signal.SIGKILL)], ids=["heeds-sigterm", "ignores-sigterm"]
)
def test_sigterm_first_sigkill_after_the_grace_period(tmp_path: Path, ignore_term: bool, ended_by: int):
    script, pids = _stubborn_worker(tmp_path, ignore_term)
    proc = subprocess.Popen([str(script)], start_new_session=True)
    _wait_for(pids.exists, 30, "the worker to start")
    pressed = stop_process_group(proc, grace_s=10.0 if not ignore_term else 0.5)
    assert proc.returncode == -ended_by and pressed is False
    worker, grandchild = _pids(pids)
    # SIGKILL went to the whole group; on a loaded machine the grandchild can take a moment to die
    _wait_for(lambda: not _alive(grandchild) and not _group(worker), 10, "the grandchild to end")


_DRIVER = """
import json, sys
from bench import processes
sys.executable = {script!r}
processes.GRACE_S = 0.5
try:
    processes.run_worker({{"kind": "artifact", "name": "x"}}, timeout_s=120)
except processes.WorkerInterrupted as exc:
    print(json.dumps(exc.row))
    sys.exit(130)
print("not interrupted")
"""


def test_ctrl_c_stops_the_worker_and_its_children(tmp_path: Path):
    """run_worker in a process of its own (the SIGINT must not reach pytest): Ctrl-C in the parent
    ends a worker and grandchild that ignore SIGTERM, and raises WorkerInterrupted with the row."""
    script, pids = _stubborn_worker(tmp_path, ignore_term=True)
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER.format(script=str(script))],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, even under a CI runner
    )
    try:
        _wait_for(pids.exists, 30, "the worker to start")
        worker, grandchild = _pids(pids)
        assert _alive(worker) and _alive(grandchild)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=30)
    finally:
        driver.kill()
    assert driver.returncode == 130, err
    assert json.loads(out) == {"status": "interrupted", "reason": processes.INTERRUPTED_REASON}
    assert not _alive(worker) and not _alive(grandchild) and not _group(worker)


# ---- the matrix stops at the interrupted row -------------------------------------------------


def _ok_row() -> dict:
    compute = {"p50_ms": 2.0, "p90_ms": 2.5, "p99_ms": 3.0, "mean_ms": 2.1, "std_ms": 0.1, "samples": 5, "items_per_s": 500.0}
    return {"status": "ok", "cells": [{"batch": 1, "status": "ok", "compute": compute}], "threads": 1}


def _fake_workers(monkeypatch, interrupt_at: int) -> list[str]:
    """LiveWorker replaced: workers started before the ``interrupt_at``-th measure, that start is
    Ctrl-C'd; returns the workers started, in order."""
    calls: list[str] = []

    class FakeWorker:
        def __init__(self, job: dict, timeout_s: float):
            self.job, self.label, self.result = job, f"{job['name']}@{job['device']}", None

        @property
        def alive(self) -> bool:
            return self.result is None

        def start(self) -> None:
            calls.append(self.label)
            if len(calls) - 1 == interrupt_at:
                raise KeyboardInterrupt

        def step(self, batch: int) -> None:
            pass

        def finish(self) -> None:
            self.result = _ok_row()

        def stop(self) -> None:
            pass

    monkeypatch.setattr(matrix, "LiveWorker", FakeWorker)
    return calls


def test_the_matrix_stops_at_the_interrupted_device(tmp_path: Path, monkeypatch):
    artifacts = {}
    for name in ("onnx-fp32", "int8-cpu"):
        artifacts[name] = tmp_path / f"{name}.onnx"
        artifacts[name].write_bytes(b"x")
    plan = BenchPlan(run=tmp_path, artifacts=artifacts, devices=["cpu", "cuda"], batch_sizes=[1], window=TimingWindow(0, 1, 0, 1))
    calls = _fake_workers(monkeypatch, interrupt_at=2)
    rows = run_matrix(plan, None)
    assert calls == ["onnx-fp32@cpu", "int8-cpu@cpu", "onnx-fp32@cuda"]  # int8-cpu@cuda never started
    # the device being measured when Ctrl-C came: all its rows interrupted; the finished device kept
    # (measured, and unverified: the stand-in files have no manifest)
    assert [(r["artifact"], r["device"], r["status"]) for r in rows] == [
        ("onnx-fp32", "cpu", "unverified"),
        ("onnx-fp32", "cuda", "interrupted"),
        ("int8-cpu", "cpu", "unverified"),
        ("int8-cpu", "cuda", "interrupted"),
    ]


def test_ctrl_c_writes_the_partial_report_and_exits_130(pretrained_run: Path, tmp_path: Path, monkeypatch, capsys):
    calls = _fake_workers(monkeypatch, interrupt_at=1)
    out = tmp_path / "reports"
    code = main(["bench", str(pretrained_run), "--devices", "cpu,cuda", "--batch-sizes", "1", "--out", str(out)])
    assert code == 130 and calls == ["torch-fp32@cpu", "torch-fp32@cuda"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "edge bench: interrupted while measuring torch-fp32 on cuda (its worker was stopped; 1 of 2 rows finished "
        f"before it): partial report {out / 'report.json'}"
    ]
    report = read_report(out / "report.json")  # the schema takes the new status
    assert [r["status"] for r in report["rows"]] == ["ok", "interrupted"]
    assert read_manifest(out / "report.json").metrics["interrupted"] == 1
    assert (
        "**interrupted** (Ctrl-C) while measuring torch-fp32 on cuda: a partial report; 1 of 2 rows finished"
        in (out / "report.md").read_text()
    )
    assert "interrupted: Ctrl-C stopped its worker mid-measurement" in (out / "report.csv").read_text()
    # an interrupted row is not a measurement: the gate fails it, and says so
    checks = evaluate_gate(report, None, 0.5, 10.0, allow_unmeasured=True)
    failed = {c.name: c.detail for c in checks if c.status == "fail"}
    assert failed == {
        "run torch-fp32@cuda": "interrupted: Ctrl-C stopped its worker mid-measurement (no numbers kept): not a measurement, bench it again"
    }


# ---- the real thing: SIGINT to a running `edge bench` ---------------------------------------


def test_sigint_to_a_running_bench_leaves_no_process_behind(pretrained_run: Path, tmp_path: Path):
    out = tmp_path / "reports"
    # one row whose timing window lasts a minute: Ctrl-C lands while its worker measures
    argv = ["bench", str(pretrained_run), "--devices", "cpu", "--batch-sizes", "1", "--warmup-s", "0"]
    argv += ["--min-iters", "100000", "--min-seconds", "60", "--single-stream", "0", "--no-end-to-end", "--threads", "1"]
    argv += ["--timeout", "120", "--out", str(out)]
    bench = subprocess.Popen(
        [sys.executable, "-m", "edge", *argv],
        cwd=REPO,
        env=dict(os.environ, **PIPELINE_ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, even under a CI runner
    )
    try:
        workers = _wait_for(
            lambda: [p for p in _descendants(bench.pid) if "bench.worker" in _cmdline(p)], 120, "the bench worker to start"
        )
        (worker,) = workers
        assert _stat(worker)[2] == str(worker), "the worker leads its own process group"
        # let it get into the measurement (model built, timing loop running)
        _wait_for(lambda: bench.poll() is not None or _cpu_seconds(worker) > 4.0, 120, "the worker to be busy")
        assert bench.poll() is None, bench.communicate()
        everyone = _descendants(bench.pid)
        bench.send_signal(signal.SIGINT)
        stdout, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, stdout[-2000:] + stderr
    assert stderr.strip().splitlines() == [
        f"edge bench: interrupted while measuring torch-fp32 on cpu (its worker was stopped; no row finished before it): "
        f"partial report {out / 'report.json'}"
    ]
    survivors = [f"{pid} {_cmdline(pid)}" for pid in everyone | _group(worker) if _alive(pid)]
    assert not survivors, survivors
    report = json.loads((out / "report.json").read_text())
    (row,) = report["rows"]
    assert row["status"] == "interrupted" and row["artifact"] == "torch-fp32" and not row.get("cells")
    assert read_manifest(out / "report.json").metrics["interrupted"] == 1


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 once it is gone)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
