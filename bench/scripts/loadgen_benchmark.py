"""Does the LoadGen harness add nearly nothing? LoadGen's scenarios beside bench's own cells, and a
served model under load.

    python -m bench.scripts.loadgen_benchmark runs/demo [--artifact onnx-fp32] [--eval fashion-mnist]
        [--eval-count 2000] [--latency-bound 50] [--quick] [--threads N] [--no-serve] [--out DIR]

1. One ``edge bench`` of the artifact on the CPU (batch 1, 8, 32, the full profile's timing window
   and rounds) with ``--scenario all`` (LoadGen's default settings unless ``--quick``): its
   compute-only batch-1 p50 and p90 (with the p90's order-statistic interval) and best images/s
   beside LoadGen's SingleStream p50 and early-stopping p90 estimate and Offline samples/s, from the
   same run. Targets: SingleStream p50 within 5% of bench's batch-1 p50; the early-stopping p90
   inside bench's p90 interval; Offline within 5% of bench's best images/s.
2. Unless ``--no-serve``: ``edge serve``'s tritonserver on 127.0.0.1 (with, then without dynamic
   batching), LoadGen's find-peak Server scenario over gRPC under ``--latency-bound``: the peak rate
   of each; and the serving overhead at batch 1 (the median of 200 one-at-a-time requests over the
   runner's own batch-1 p50).

Prints every figure with its absolute values and n beside each ratio, and writes them to
``OUT/loadgen_benchmark.json`` (default: a temporary folder, kept and named).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGET_PCT = 5.0


def bench(run: Path, out: Path, args: argparse.Namespace, extra: list[str], quick: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "edge",
        "bench",
        str(run),
        "--eval",
        args.eval,
        "--eval-count",
        str(args.eval_count),
        "--out",
        str(out),
    ]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--quick"] if quick else []
    proc = subprocess.run(command + extra, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edge bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text())


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in report["loadgen"]["entries"] if e["scenario"] == name and e["mode"] != "accuracy")


def free_port_block() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65000:
            return port
    raise SystemExit("no free port")


def served(run: Path, out: Path, args: argparse.Namespace, dynamic: bool, direct_ms: float) -> dict[str, Any]:
    """Find-peak over gRPC against `edge serve`'s server, and the batch-1 overhead of serving."""
    from bench.loadgen.library import SampleLibrary
    from bench.loadgen.remote import RemoteSUT, probe_latency_ms, read_endpoint
    from bench.loadgen.scenarios import loadgen
    from bench.worker import synthetic_frames
    from edge.triton.serve import start_server

    with start_server(run, args.artifact, free_port_block(), "127.0.0.1", dynamic_batching=dynamic) as server:
        server.wait_ready()
        url = f"grpc://127.0.0.1:{server.grpc_port}"
        endpoint = read_endpoint(url, None)
        spec = endpoint.spec
        assert spec is not None
        library = SampleLibrary(spec, synthetic_frames(spec, 1), None, 16)
        one_ms = probe_latency_ms(RemoteSUT(loadgen(), library, endpoint), library, count=200)
        extra = ["--scenario", "server", "--url", url, "--latency-bound", str(args.latency_bound)]
        report = bench(run, out, args, extra, args.quick or args.quick_served)
    entry = report["loadgen"]["entries"][0]
    return {
        "dynamic_batching": dynamic,
        "peak_qps": entry["peak_qps"],
        "validity": entry["validity"],
        "invalid_reasons": entry["invalid_reasons"],
        "p99_ms": entry["latency_ms"]["p99"],
        "queries": entry["query_count"],
        "latency_bound_ms": args.latency_bound,
        "served_batch1_ms": one_ms,
        "direct_batch1_ms": direct_ms,
        "overhead_ratio": one_ms / direct_ms,
        "settings": "quick" if args.quick or args.quick_served else "LoadGen defaults",
        "effective": entry["effective"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--artifact", default="onnx-fp32")
    parser.add_argument("--eval", default="fashion-mnist")
    parser.add_argument("--eval-count", type=int, default=2000)
    parser.add_argument("--latency-bound", type=float, default=50.0, help="the Server scenario's p99 bound (ms)")
    parser.add_argument("--quick", action="store_true", help="LoadGen's --quick settings (CI), not its defaults")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick-served", action="store_true", help="--quick for the served model's find-peak runs only")
    parser.add_argument("--no-serve", action="store_true", help="skip the served model (no tritonserver here)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="loadgen-benchmark-"))
    report = bench(
        args.run, out / "bench", args,
        ["--artifacts", args.artifact, "--devices", "cpu", "--batch-sizes", "1,8,32", "--single-stream", "0", "--no-end-to-end", "--scenario", "all"],
        args.quick,
    )  # fmt: skip
    row = report["rows"][0]
    cells = {c["batch"]: c["compute"] for c in row["cells"] if c.get("status") == "ok"}
    one = cells[1]
    best_batch = max(cells, key=lambda b: cells[b]["items_per_s"])
    single, offline, multi = scenario(report, "single-stream"), scenario(report, "offline"), scenario(report, "multi-stream")
    figures: dict[str, Any] = {
        "artifact": args.artifact,
        "settings": "quick" if args.quick else "LoadGen defaults",
        "bench_batch1": {
            k: one[k] for k in ("p50_ms", "p50_ci_ms", "ci_level", "p90_ms", "p90_ci_ms", "p90_ci_level", "samples")
        },
        "bench_best": {
            "batch": best_batch,
            "images_per_s": cells[best_batch]["items_per_s"],
            "samples": cells[best_batch]["samples"],
        },
        "single_stream": {k: single[k] for k in ("validity", "early_stopping_met", "estimate_ms", "latency_ms", "query_count")},
        "multi_stream": {k: multi[k] for k in ("validity", "early_stopping_met", "estimate_ms", "latency_ms", "query_count")},
        "offline": {k: offline[k] for k in ("validity", "qps", "query_count", "max_batch")},
        "server": {k: scenario(report, "server")[k] for k in ("validity", "qps", "latency_ms", "query_count")},
    }
    lines = [
        f"artifact {args.artifact} on the CPU, {figures['settings']}; bench: {one['samples']} batch-1 calls in "
        f"{len(one['rounds'])} rounds (the full profile's window); MLPerf LoadGen scenario, not an audited MLPerf result",
    ]
    ss_p50 = single["latency_ms"]["p50"]
    ratio = ss_p50 / one["p50_ms"]
    lines.append(
        f"SingleStream p50 {ss_p50:.3f} ms ({single['query_count']} queries) / bench batch-1 p50 {one['p50_ms']:.3f} ms "
        f"[{one['p50_ci_ms'][0]:.3f}, {one['p50_ci_ms'][1]:.3f}]: x{ratio:.3f} (target within {TARGET_PCT:g}%: {'met' if abs(ratio - 1) * 100 <= TARGET_PCT else 'missed'})"
    )
    estimate, (low, high) = single["estimate_ms"], one["p90_ci_ms"]
    inside = estimate is not None and low <= estimate <= high
    lines.append(
        f"SingleStream early-stopping p90 {'n/a' if estimate is None else f'{estimate:.3f}'} ms (early stopping "
        f"{'met' if single['early_stopping_met'] else 'not met'}) vs bench batch-1 p90 {one['p90_ms']:.3f} ms, interval "
        f"[{low:.3f}, {high:.3f}] at {one['p90_ci_level'] * 100:.1f}% over {one['samples']} calls: {'inside' if inside else 'outside'}"
    )
    off = offline["qps"] / cells[best_batch]["items_per_s"]
    lines.append(
        f"Offline {offline['qps']:.1f} samples/s (batch {offline['max_batch']}) / bench best {cells[best_batch]['items_per_s']:.1f} images/s "
        f"(batch {best_batch}): x{off:.3f} (target within {TARGET_PCT:g}%: {'met' if abs(off - 1) * 100 <= TARGET_PCT else 'missed'})"
    )
    figures["ratios"] = {"single_stream_p50": ratio, "offline": off, "p90_inside": inside}
    if not args.no_serve:
        figures["served"] = [served(args.run, out / f"served-{d}", args, d, one["p50_ms"]) for d in (True, False)]
        for entry in figures["served"]:
            peak = "n/a" if entry["peak_qps"] is None else f"{entry['peak_qps']:.1f}"
            why = f" ({'; '.join(entry['invalid_reasons'])})" if entry["invalid_reasons"] else ""
            lines.append(
                f"served ({'dynamic batching' if entry['dynamic_batching'] else 'no dynamic batching'}, {entry['settings']}): peak {peak} queries/s "
                f"under p99 <= {entry['latency_bound_ms']:g} ms (LoadGen {entry['validity']}{why}, {entry['queries']} queries); batch 1 one at "
                f"a time {entry['served_batch1_ms']:.3f} ms served vs {entry['direct_batch1_ms']:.3f} ms direct: overhead x{entry['overhead_ratio']:.2f} (200 requests)"
            )
    (out / "loadgen_benchmark.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(lines))
    print(f"figures: {out / 'loadgen_benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
