"""One artifact's LoadGen scenarios in a worker process of its own:
``python -m bench.loadgen.job JOB.json RESULT.json`` (started by ``bench.processes.run_worker``).

The job names the artifact, device and backend (``bench.matrix.artifact_job``'s fields), the
evaluation plan, the scenarios and mode, the options, the memory budget, the best batch size
bench measured for the row, and where LoadGen's logs go. A crash or a hang loses this row's
scenarios only; an absent device or backend comes back ``skipped`` with the reason.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from bench.host import Skip, unavailable_reason
from bench.loadgen.library import SampleLibrary
from bench.loadgen.runner import run_scenario
from bench.loadgen.scenarios import ScenarioOptions, loadgen
from bench.loadgen.suts import LocalSUT
from bench.worker import guarded_row, load_eval_images, stop_on_sigterm
from edge.atomic import atomic_write_json


def modes(mode: str) -> list[bool]:
    """'performance' / 'accuracy' / 'both' -> the accuracy flags to run, in order."""
    return {"performance": [False], "accuracy": [True], "both": [False, True]}[mode]


def scenario_dir(root: Path, artifact: str, device: str, scenario: str, accuracy: bool) -> Path:
    """``RUN/bench/loadgen/<artifact>/<scenario>/`` (``<artifact>@cuda`` on another device; an
    accuracy run's logs in ``accuracy/`` below)."""
    folder = root / (artifact if device == "cpu" else f"{artifact}@{device}") / scenario
    return folder / "accuracy" if accuracy else folder


def run_loadgen_job(job: dict[str, Any]) -> dict[str, Any]:
    from edge.runners import select_runner

    lg = loadgen()  # the missing extra is one line before any model loads
    path, device = Path(job["path"]), job["device"]
    reason = unavailable_reason(path, device, job.get("backend") or "auto")
    if reason:
        raise Skip(reason)
    images, labels, _, _ = load_eval_images(job["eval"])
    options = ScenarioOptions(**job["options"])
    entries = []
    with select_runner(path, device=device, threads=job.get("threads"), backend=job.get("backend") or "auto") as runner:
        library = SampleLibrary(runner.spec, images, labels, job["budget_mib"])
        for scenario in job["scenarios"]:
            for accuracy in modes(job["mode"]):
                print(f"progress 0 1 {scenario} {'accuracy' if accuracy else 'performance'}", flush=True)
                sut = LocalSUT(lg, library, runner.infer, scenario, job["max_batch"])
                out = scenario_dir(Path(job["out"]), job["name"], device, scenario, accuracy)
                entries.append(run_scenario(sut, library, scenario, accuracy, options, out))
    return {"artifact": job["name"], "device": device, "scenarios": entries}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """``run_loadgen_job`` as one row: absence ``skipped``, failures ``error`` (never raising)."""
    result = guarded_row(job, lambda: run_loadgen_job(job))
    assert result is not None  # run_loadgen_job always returns a row
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.loadgen.job JOB.json RESULT.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    result = run_job(json.loads(Path(args[0]).read_text()))
    atomic_write_json(args[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
