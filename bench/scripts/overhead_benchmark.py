"""Is bench's timing honest? Its p50 for the ONNX Runtime FP32 cell against a bare ``session.run`` loop.

    python -m bench.scripts.overhead_benchmark RUN [--batch 1] [--iters 300] [--threads N] [--rounds 3]

Times the same model on the same input two ways, interleaved in rounds so that machine noise
hits both alike: (a) a bare ``InferenceSession.run`` loop with ``perf_counter`` around each call,
(b) bench's own path (``select_runner`` -> ``Runner.infer`` -> ``edge.measure.timing.time_calls``).
Prints both medians per round and the ratio; the target is bench within 3% of the bare loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def _session(path: Path, threads: int) -> Any:
    """An InferenceSession with the same options as the runner's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bare_block(session: Any, name: str, batch: np.ndarray, iters: int) -> float:
    """p50 ms of a bare ``session.run`` loop with ``perf_counter`` around each call."""
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(None, {name: batch})
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def bench_block(runner: Any, batch: np.ndarray, iters: int) -> float:
    """p50 ms through ``Runner.infer`` and bench's timing loop (``edge.measure.timing.time_calls``)."""
    from edge.measure.timing import TimingWindow, time_calls

    def call(_: int) -> None:
        runner.infer(batch)

    stats, _ = time_calls(call, TimingWindow(0.0, iters, 0.0, 600.0), len(batch))
    return stats.p50_ms


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from edge.run import RunDir
    from edge.runners.onnxruntime_runner import physical_cores

    parser = argparse.ArgumentParser(prog="python -m bench.scripts.overhead_benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with model.onnx (or an .onnx file)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args(argv)
    target = Path(args.run)
    path = target if target.is_file() else RunDir.open(target).require(RunDir.open(target).onnx, "run `edge export RUN`")

    from edge.artifact_spec import artifact_spec

    spec = artifact_spec(path)
    batch = np.random.default_rng(0).standard_normal((args.batch, *spec.input_shape)).astype(np.float32)
    table = Table(title=f"bench overhead: {path.name}, batch {args.batch}, {args.threads} threads, {args.iters} calls per block")
    for column in ("round", "bare session.run p50 ms", "bench p50 ms", "bench / bare"):
        table.add_column(column, justify="right")
    from edge.runners import select_runner

    session = _session(path, args.threads)
    name = session.get_inputs()[0].name
    bare_all, ours_all = [], []
    with select_runner(path, device="cpu", threads=args.threads) as runner:
        for _ in range(30):  # warm both
            session.run(None, {name: batch})
            runner.infer(batch)
        # Alternate blocks so that the shared machine's noise hits both paths alike.
        for i in range(args.rounds):
            bare = bare_block(session, name, batch, args.iters)
            ours = bench_block(runner, batch, args.iters)
            bare_all.append(bare)
            ours_all.append(ours)
            table.add_row(str(i + 1), f"{bare:.4f}", f"{ours:.4f}", f"{ours / bare:.3f}")
    bare_med, ours_med = statistics.median(bare_all), statistics.median(ours_all)
    table.add_row("median", f"{bare_med:.4f}", f"{ours_med:.4f}", f"{ours_med / bare_med:.3f}", style="bold")
    console = Console()
    console.print(table)
    ratio = ours_med / bare_med
    console.print(
        f"bench / bare = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%): {'within' if abs(ratio - 1) <= 0.03 else 'outside'} the 3% target"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
