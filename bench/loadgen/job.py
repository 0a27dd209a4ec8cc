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
import time
import traceback
from pathlib import Path
from typing import Any

from bench.host import Skip, unavailable_reason
from bench.loadgen.library import SampleLibrary
from bench.loadgen.runner import run_scenario
from bench.loadgen.scenarios import ScenarioOptions, loadgen
from bench.loadgen.suts import LocalSUT
from bench.worker import load_eval_images
from edge.atomic import atomic_write_json
from edge.errors import MissingDependencyError, UserError


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
    """``run_loadgen_job`` with absence as ``skipped`` and failures as ``error`` (never raising)."""
    started = time.time()
    try:
        result = run_loadgen_job(job)
        result["status"] = "ok"
    except (Skip, MissingDependencyError) as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except UserError as exc:
        result = {"status": "error", "error": str(exc)}
    except Exception as exc:  # a bug or a backend crash in this row: recorded, the others go on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    result.setdefault("artifact", job.get("name"))
    result.setdefault("device", job.get("device"))
    result["seconds"] = time.time() - started
    return result


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.loadgen.job JOB.json RESULT.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    result = run_job(json.loads(Path(args[0]).read_text()))
    atomic_write_json(args[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
