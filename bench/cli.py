"""Measure latency, throughput, memory and accuracy of every artifact of a run on every device.

    edge bench RUN --eval fashion-mnist                      # full matrix, full test split
    edge bench RUN --eval fashion-mnist --profile demo       # batch 1, 8, 32; short windows; 2000 images
    edge bench RUN --artifacts onnx-fp32,int8-cpu --devices cpu --batch-sizes 1,8 --threads 2
    edge bench --zoo resnet18,resnet50,tf_efficientnet_lite0 # params, GMACs, published top-1, latency

Each artifact x device runs in its own process. Latency is ms per batch, compute-only (a
preprocessed batch in host memory) and end-to-end (from decoded images, with preprocessing)
separately; throughput is images / wall time. Accuracy is measured on the test split of --eval
against the float parent, with paired flips for `edge check`. Reports go to RUN/bench/
(report.png only where matplotlib is installed: the `train` extra).

Ctrl-C stops the worker of the row being measured (its whole process group: no orphan keeps the
machine busy), writes the report of what was measured with that row ``interrupted``, prints one
line and exits 130. A row past --timeout is stopped the same way and recorded as an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.artifact_spec import artifact_spec
from edge.checkpoints import CHECKPOINT_SUFFIXES, load_checkpoint
from edge.errors import UserError
from edge.measure.acceptance import DEFAULT_MAX_DROP
from edge.measure.report import MEASURED
from edge.measure.timing import TimingWindow, percentile_samples_needed
from edge.tracking import add_tracking_arguments, track_stage
from edge.verify import verify_artifact

if TYPE_CHECKING:
    from bench.matrix import EvalPlan

PROFILES: dict[str, dict[str, Any]] = {
    # the whole matrix: the numbers a release quotes
    "full": {
        "batch_sizes": "1,2,4,8,16,32,64",
        "warmup_s": 1.0,
        "min_iters": 50,
        "min_seconds": 2.0,
        "eval_count": None,
        "single_stream": percentile_samples_needed(99),
        "max_seconds": 60.0,
        "rounds": 10,  # 10 rounds of 0.2 s: rounds on a shared 2-core VM spread 25-40%; 5 leave a 1.4x slowdown unjudged
    },
    # `make demo`: about 2 minutes on 2 cores, accuracy on a fixed test subset. 2000 images (the demo
    # preset's whole test split) resolve `edge check --max-drop 0.5`: its minimum detectable drop
    # there is 0.80 points, within the gate's 2x margin (1100 images at least; 300 gave 2.33).
    "demo": {
        "batch_sizes": "1,8,32",
        "warmup_s": 0.2,
        "min_iters": 5,
        "min_seconds": 1.0,
        "eval_count": 2000,
        "single_stream": percentile_samples_needed(90),
        "max_seconds": 5.0,
        "rounds": 5,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (runs/NAME); not needed with --zoo")
    parser.add_argument("--artifacts", default="all", help="'all' or a comma list: torch-fp32,onnx-fp32,int8-cpu,int8-trt,trt-*")
    parser.add_argument("--devices", default="cpu,cuda", help="comma list of cpu, cuda (absent devices are listed as skipped)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full", help="defaults for the options below")
    parser.add_argument("--batch-sizes", help="comma list of batch sizes (full: 1,2,4,8,16,32,64; demo: 1,8,32)")
    parser.add_argument(
        "--eval",
        metavar="DATA",
        help="evaluation data: the run's own ('fashion-mnist' or its ImageFolder): its pinned test split; other data: all of it, as an external set",
    )
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="--eval data other than the run's: leave out its train/val images (counted) instead of refusing it",
    )
    parser.add_argument("--eval-count", type=int, help="stratified subset of the test split (full: all; demo: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation subset")
    parser.add_argument("--warmup-s", type=float, help="warm-up seconds per cell")
    parser.add_argument("--min-iters", type=int, help="at least this many timed calls per cell")
    parser.add_argument("--min-seconds", type=float, help="and at least this many seconds per cell (over all its rounds)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="timing rounds per cell, stepped in turn across the artifacts of a device (full: 10; demo: 5; p50 intervals need >= 5)",
    )
    parser.add_argument("--threads", type=int, help="intra-op CPU threads (recorded; default: the backend's)")
    parser.add_argument("--single-stream", type=int, metavar="N", help="single-stream samples at batch 1 (0: off)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip end-to-end (preprocessing) timing")
    parser.add_argument(
        "--max-drop", type=float, default=DEFAULT_MAX_DROP, help="drop budget in points, to flag too-small eval sets"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a row's worker is stopped")
    parser.add_argument("--out", type=Path, help="report directory (default RUN/bench)")
    parser.add_argument("--zoo", help="compare models instead: comma list of architectures (no weights needed)")
    add_tracking_arguments(parser)
    add_loadgen_arguments(parser)


# ---- MLPerf LoadGen scenarios and sustained runs (bench.loadgen, bench.sustain) ------------------


def add_loadgen_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MLPerf LoadGen scenarios (the loadgen extra) and sustained runs")
    group.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="single-stream, multi-stream, offline, server or all (repeat it or give a comma list): run through MLPerf LoadGen after the cells",
    )
    group.add_argument("--quick", action="store_true", help="LoadGen runs shortened for CI (LoadGen judges them as it does)")
    group.add_argument(
        "--loadgen-mode", choices=("performance", "accuracy", "both"), default="performance", help="LoadGen's test mode"
    )
    group.add_argument(
        "--latency-bound", type=float, metavar="MS", help="Server: the p99 latency bound (LoadGen's default 100 ms)"
    )
    group.add_argument("--server-qps", type=float, help="Server: Poisson arrivals per second (default: half the best images/s)")
    group.add_argument(
        "--find-peak", action="store_true", help="Server: LoadGen's find-peak mode, the highest rate within the bound"
    )
    group.add_argument(
        "--loadgen-seconds", type=float, help="LoadGen's minimum duration of a performance run (its default: 10 s)"
    )
    group.add_argument("--qsl-memory-mib", type=float, default=256.0, help="preprocessed samples LoadGen may load (MiB)")
    group.add_argument("--url", help="Server scenario against a live Triton (http://HOST:PORT or grpc://HOST:PORT)")
    group.add_argument("--model", help="with --url: the model's name (default: the server's only model)")
    group.add_argument("--sustain", metavar="DURATION", help="a sustained run of one artifact instead: 90s, 10m, 1h")
    group.add_argument(
        "--sustain-windows", type=int, default=20, help="windows of a sustained run (p50, p99, images/s, sensors each)"
    )
    group.add_argument("--sustain-batch", type=int, default=1, help="batch size of a sustained run's fixed load")


def scenario_options(args: argparse.Namespace) -> Any:
    from bench.loadgen.scenarios import ScenarioOptions

    for flag, value in (
        ("--latency-bound", args.latency_bound),
        ("--server-qps", args.server_qps),
        ("--qsl-memory-mib", args.qsl_memory_mib),
        ("--loadgen-seconds", args.loadgen_seconds),
    ):
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be positive, got {value}")
    return ScenarioOptions(
        quick=args.quick,
        latency_bound_ms=args.latency_bound,
        server_qps=args.server_qps,
        find_peak=args.find_peak or bool(args.url),
        min_duration_ms=None if args.loadgen_seconds is None else int(args.loadgen_seconds * 1000),
    )


def planned_scenarios(args: argparse.Namespace) -> list[str]:
    """The scenarios asked for, checked before any work: LoadGen installed, the flags that need them."""
    from bench.loadgen.scenarios import loadgen, parse_scenarios

    scenarios = parse_scenarios(args.scenario)
    if not scenarios:
        for flag, given in (
            ("--quick", args.quick),
            ("--find-peak", args.find_peak),
            ("--url", args.url),
            ("--latency-bound", args.latency_bound),
        ):
            if given:
                raise UserError(f"{flag} belongs to a LoadGen run: add --scenario (e.g. --scenario single-stream)")
        return []
    loadgen()
    if not args.eval:
        raise UserError("--scenario needs --eval DATA: LoadGen's samples are the run's pinned test split")
    if args.url and scenarios != ["server"]:
        raise UserError("--url measures a live endpoint in the Server scenario only: --scenario server")
    return scenarios


def parse_int_list(text: str, what: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; anything else, or a value <= 0, is a user error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UserError(f"{what} must be a comma list of whole numbers, got {text!r}") from exc
    bad = [v for v in values if v <= 0]
    if not values or bad:
        raise UserError(f"{what} must be positive, got {text!r}")
    return sorted(set(values))


def parse_devices(text: str) -> list[str]:
    from edge.runners import DEVICES

    devices = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown or not devices:
        raise UserError(f"unknown device(s) {unknown or text!r}: use a comma list of {', '.join(DEVICES)}")
    return list(dict.fromkeys(devices))


def check_classes(artifacts: dict[str, Path], classes: tuple[str, ...], data: str) -> None:
    """Evaluation classes must be the model's labels, in the same order (index i is class i)."""
    for name, path in artifacts.items():
        labels = artifact_spec(path).labels
        if tuple(labels) != tuple(classes):
            if set(labels) == set(classes):
                detail = "same classes in another order"
            else:
                detail = f"model has {len(labels)} labels ({', '.join(labels[:4])}, ...), data has {len(classes)} ({', '.join(classes[:4])}, ...)"
            raise UserError(
                f"evaluation data {data!r} does not match {name}'s labels ({detail}): evaluate on the data the model was trained on"
            )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES[args.profile]

    def pick(name: str, key: str | None = None) -> Any:
        value = getattr(args, name)
        return profile[key or name] if value is None else value

    return {
        "batch_sizes": parse_int_list(pick("batch_sizes"), "--batch-sizes"),
        "warmup_s": pick("warmup_s"),
        "min_iters": pick("min_iters"),
        "min_seconds": pick("min_seconds"),
        "max_seconds": profile["max_seconds"],
        "eval_count": pick("eval_count"),
        "single_stream": pick("single_stream"),
        "rounds": pick("rounds"),
    }


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console

    console = make_console()  # COLUMNS / NO_COLOR honoured; tables re-flow instead of cutting cells
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be positive, got {args.threads}")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    devices = parse_devices(args.devices)
    if args.zoo:
        from bench.zoo import run_zoo

        batches = parse_int_list(args.batch_sizes, "--batch-sizes") if args.batch_sizes else None
        return run_zoo(args.zoo, devices, args.threads, args.out, args.timeout, console, batches)
    if not args.run:
        raise UserError("give a run directory (edge bench runs/NAME) or --zoo MODELS")
    if args.sustain:
        from bench.sustain import run_sustain

        return run_sustain(args, devices, console)
    status = run_bench(args, devices, console)
    track_stage(args, "bench", args.run, report=args.out)
    return status


def run_bench(args: argparse.Namespace, devices: list[str], console: Any) -> int:
    from bench.matrix import BenchPlan, run_matrix, select_artifacts
    from bench.plots import plot_unavailable
    from bench.report import KEPT_REASON, build_report, forget, keep_previous, rich_headline, write_report
    from edge.history import kept_line
    from edge.run import RunDir

    settings = _settings(args)
    window = _timing_window(settings)
    scenarios, options = planned_scenarios(args), scenario_options(args)
    run_dir = RunDir.open(args.run)
    artifacts = select_artifacts(run_dir, args.artifacts)
    for path in [] if args.url else artifacts.values():  # before any worker starts: a damaged file is one line, not an error row
        verify_artifact(path)
        if path.suffix in CHECKPOINT_SUFFIXES:
            load_checkpoint(path)  # and so is a checkpoint that only an unsafe (pickle) load could read
    eval_plan, eval_info, labels = _evaluation(args, settings, artifacts)
    plan = BenchPlan(
        run=run_dir.root,
        artifacts=artifacts,
        devices=devices,
        batch_sizes=settings["batch_sizes"],
        window=window,
        threads=args.threads,
        eval=eval_plan,
        single_stream_samples=settings["single_stream"],
        end_to_end=not args.no_end_to_end,
        timeout_s=args.timeout,
        profile=args.profile,
        max_drop=args.max_drop,
    )
    load_before = _load_average()
    rows = [] if args.url else run_matrix(plan, labels, console)
    report = build_report(
        {
            "run": str(run_dir.root),
            "profile": args.profile,
            "artifacts": list(artifacts),
            "devices": devices,
            "batch_sizes": plan.batch_sizes,
            "threads": args.threads,
            "window": window.__dict__,
            "single_stream_samples": plan.single_stream_samples,
            "end_to_end": plan.end_to_end,
            "max_drop": args.max_drop,
        },
        eval_info,
        rows,
    )
    report["noise"] = noise_figures(rows, load_before, _load_average())
    out_dir = args.out or run_dir.bench
    if scenarios and not any(r.get("status") == "interrupted" for r in rows):
        report["loadgen"] = _loadgen_section(args, plan, rows, scenarios, options, out_dir, run_dir.root, console)
    previous = keep_previous(out_dir, run_dir.root)
    try:
        paths = write_report(report, out_dir, spec=_report_spec(artifacts))
    except BaseException:
        forget(previous)
        raise
    console.print(rich_headline(report, title=f"bench: {run_dir.root} ({args.profile})"))
    others = ", ".join(path.name for fmt, path in paths.items() if fmt != "json")
    console.print(f"report: {paths['json']} (also {others})", soft_wrap=True, highlight=False)
    if previous is not None:
        console.print(kept_line(previous, KEPT_REASON), soft_wrap=True, highlight=False, markup=False)
    if "png" not in paths and report["rows"]:
        console.print(f"note: {plot_unavailable()}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    stopped = next((r for r in rows + (report.get("loadgen") or {}).get("entries", []) if r.get("status") == "interrupted"), None)
    if stopped is not None:  # Ctrl-C: the worker is gone, what was measured is written; one line
        done, planned = sum(r.get("status") != "interrupted" for r in rows), len(artifacts) * len(devices)
        before = f"{done} of {planned} rows finished before it" if done else "no row finished before it"
        print(
            f"edge bench: interrupted while measuring {stopped['artifact']} on {stopped['device']} "
            f"(its worker was stopped; {before}): partial report {paths['json']}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    measured = any(e.get("status") == "ok" for e in (report.get("loadgen") or {}).get("entries", []))
    return (
        0 if measured or any(r.get("status") in MEASURED for r in rows) else 1
    )  # rejected rows were measured: the gate fails them


def _loadgen_section(
    args: argparse.Namespace,
    plan: Any,
    rows: list[dict[str, Any]],
    scenarios: list[str],
    options: Any,
    out_dir: Path,
    run_root: Path,
    console: Any,
) -> dict[str, Any]:
    """The report's ``loadgen`` section: each measured row's scenarios, or the endpoint at --url;
    LoadGen's logs under OUT/loadgen/ (the previous ones kept under history/ first)."""
    from bench.loadgen.matrix import run_scenarios
    from edge.history import history_root, keep_previous

    logs = out_dir / "loadgen"
    if logs.is_dir():
        keep_previous(
            history_root(logs, run_root), [p for p in logs.rglob("*") if p.is_file()], "edge bench --scenario replaces them"
        )
    if args.url:
        from bench.loadgen.remote import run_remote

        return run_remote(args.url, args.model, plan, options, args.loadgen_mode, args.qsl_memory_mib, logs)

    def on_row(row: dict[str, Any]) -> None:
        console.print(f"LoadGen: {', '.join(scenarios)} on {row['artifact']}@{row['device']}", highlight=False)

    return run_scenarios(rows, plan, scenarios, args.loadgen_mode, options, args.qsl_memory_mib, logs, on_row)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on this platform
        return None


def noise_figures(rows: list[dict[str, Any]], load_before: float | None, load_after: float | None) -> dict[str, Any]:
    """How noisy the machine was: the 1-minute load average around the run, the machine probe's
    spread over every round, and the median spread of a cell's round p50s (all in percent)."""
    from edge.measure.intervals import spread_pct

    probes, spreads, others = [], [], []
    for row in rows:
        for cell in row.get("cells") or []:
            compute = cell.get("compute") or {}
            probes += [r["probe_ms"] for r in compute.get("rounds") or [] if r.get("probe_ms")]
            others += [r["others_cpu"] for r in compute.get("rounds") or [] if r.get("others_cpu") is not None]
            if compute.get("spread_pct") is not None:
                spreads.append(compute["spread_pct"])
    return {
        "load_average_1m": [load_before, load_after],
        "cpu_count": os.cpu_count(),
        "probe_p50_ms": float(sorted(probes)[len(probes) // 2]) if probes else None,
        "probe_spread_pct": spread_pct(probes),
        "median_round_spread_pct": float(sorted(spreads)[len(spreads) // 2]) if spreads else None,
        "others_cpu_pct": float(sorted(others)[len(others) // 2] * 100.0) if others else None,
    }


def _timing_window(settings: dict[str, Any]) -> TimingWindow:
    """The per-cell timing window of the settings, after checking the counts given with them."""
    if settings["eval_count"] is not None and settings["eval_count"] <= 0:
        raise UserError(f"--eval-count must be positive, got {settings['eval_count']}")
    if settings["single_stream"] < 0:
        raise UserError(f"--single-stream must be >= 0, got {settings['single_stream']}")
    return TimingWindow(
        settings["warmup_s"],
        settings["min_iters"],
        settings["min_seconds"],
        max(settings["max_seconds"], settings["min_seconds"]),
        settings["rounds"],
    )


def _evaluation(
    args: argparse.Namespace, settings: dict[str, Any], artifacts: dict[str, Path]
) -> tuple[EvalPlan | None, dict[str, Any] | None, list[int] | None]:
    """With --eval: the workers' evaluation plan, the report's description of the data, the labels."""
    if not args.eval:
        return None, None, None
    from bench.matrix import EvalPlan
    from bench.worker import eval_split

    plan = EvalPlan(args.eval, settings["eval_count"], args.seed, str(args.run), args.exclude_seen)
    data_of_run, split = eval_split(plan.run, plan.data, plan.count, plan.seed, plan.exclude_seen)
    check_classes(artifacts, tuple(split.classes), args.eval)
    labels = [int(v) for v in split.labels]
    eval_info = {
        **data_of_run.describe(split, "test"),
        "seed": args.seed,
        "classes": list(split.classes),
        "labels": labels,
    }
    return plan, eval_info, labels


def _report_spec(artifacts: dict[str, Path]) -> Any:
    """The float model's spec for the report's manifest (None when no artifact has one)."""
    for path in artifacts.values():
        try:
            return artifact_spec(path)
        except UserError:
            continue
    return None
