"""One LoadGen run: settings, the SUT and the library handed to ``StartTestWithLogSettings``, and
the report entry read back from LoadGen's own logs (kept in ``out_dir``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen.library import SampleLibrary
from bench.loadgen.logs import ACCURACY, DETAIL, SUMMARY, read_accuracy, read_detail, summarize
from bench.loadgen.scenarios import ScenarioOptions, loadgen, test_settings
from edge.errors import UserError


def run_scenario(
    sut: Any, library: SampleLibrary, scenario: str, accuracy: bool, options: ScenarioOptions, out_dir: Path
) -> dict[str, Any]:
    """Run ``scenario`` on ``sut`` (a ``LocalSUT`` or ``RemoteSUT``), LoadGen's logs into ``out_dir``.

    Performance mode: LoadGen's verdict, figures and settings, plus the rounds the gate compares.
    Accuracy mode: every sample once; top-1 scored from LoadGen's accuracy log against the labels.
    """
    lg = loadgen()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (SUMMARY, DETAIL, ACCURACY, "mlperf_log_trace.json"):
        (out_dir / stale).unlink(missing_ok=True)
    settings = test_settings(scenario, accuracy, options)
    log = lg.LogSettings()
    log.log_output.outdir = str(out_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl = library.construct(lg)
    started = time.monotonic()
    try:
        with sut:
            lg.StartTestWithLogSettings(handle, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(handle)
    seconds = time.monotonic() - started
    if sut.error is not None:
        raise sut.error
    trace = out_dir / "mlperf_log_trace.json"
    if trace.exists() and trace.stat().st_size == 0:
        trace.unlink()
    events = read_detail(out_dir / DETAIL)
    mode = "accuracy" if accuracy else ("find-peak" if scenario == "server" and options.find_peak else "performance")
    entry: dict[str, Any] = {
        "scenario": scenario,
        "mode": mode,
        "status": "ok",
        **summarize(events, scenario),
        "qsl": library.describe(),
        "options": options.to_dict(),
        "max_batch": getattr(sut, "max_batch", None),
        "seconds": seconds,
        "logs": {"summary": str(out_dir / SUMMARY), "detail": str(out_dir / DETAIL)},
    }
    if accuracy:
        entry["accuracy"] = score(read_accuracy(out_dir / ACCURACY), library)
        entry["logs"]["accuracy"] = str(out_dir / ACCURACY)
    else:
        (out_dir / ACCURACY).unlink(missing_ok=True)  # an empty list in performance mode
        entry["rounds_ms"] = sut.log.rounds_ms(scenario)
    return entry


def score(predictions: dict[int, int], library: SampleLibrary) -> dict[str, Any]:
    """Top-1 (percent) of LoadGen's logged answers against the labels, with its count."""
    if library.labels is None:
        return {"count": len(predictions), "top1": None, "predictions": None}
    missing = library.total - len(predictions)
    if missing:
        raise UserError(f"LoadGen's accuracy log answers {len(predictions)} of {library.total} samples: the run did not finish")
    ordered = np.array([predictions[i] for i in range(library.total)], dtype=np.int64)
    return {
        "count": library.total,
        "top1": float(np.mean(ordered == library.labels) * 100.0),
        "predictions": ordered.tolist(),
    }
