"""Can noise fail the latency check, and does a real slowdown? Identical and slowed bench pairs, gated.

    python -m bench.scripts.latency_gate_benchmark runs/demo [--pairs 10] [--tolerance 10] [--out DIR]

Runs 2N+1 real ``edge bench`` runs of RUN (``onnx-fp32,int8-cpu`` on the CPU at batch 1 and 8, the
default timing window and rounds; single stream and end-to-end off, since the gate does not read
them) in the order N0, S1, N1, S2, N2 ... where N is the run as it is and S a copy whose
``model.int8-cpu.onnx`` is the same INT8 model with a *float island*: its 41st convolution runs
in FP32 (the quantize/dequantize pair in front of its input removed, its weights dequantized),
which costs that convolution and the conversions at its borders: 1.45x slower at batch 1 and
1.33x at batch 8 on the demo model (quiet machine, 200 calls each), under the same name and at
the same accuracy. Each (N[i-1], N[i]) pair is gated as identical benches, each (N[i-1], S[i]) as
a slowdown, with ``edge check``'s own latency checks and the default --max-latency-regression.
Prints a table: false failures (an identical pair with any failed latency check, any cell) and
detected slowdowns (a slowed pair where the gate fails int8-cpu: its p50 against the baseline, or
its p50 over onnx-fp32's from the same rounds against the baseline's ratio), and the "too noisy
to judge" warnings of each kind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ISLANDS = (40,)  # the 41st convolution: about 1.4x slower at batch 1 and 8 on the demo model (see the docstring)
BENCH_ARGS = [
    "--artifacts",
    "onnx-fp32,int8-cpu",
    "--devices",
    "cpu",
    "--batch-sizes",
    "1,8",
    "--single-stream",
    "0",
    "--no-end-to-end",
]


def float_islands(source: Path, target: Path, convs: tuple[int, ...] = ISLANDS) -> int:
    """Copy a QDQ model with the Convs numbered ``convs`` (graph order) in FP32: the quantize/dequantize pair in front
    of its input removed and its weight and bias dequantized into float initializers, so ONNX
    Runtime runs it as a float convolution; returns how many convolutions were floated."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    floated = 0
    for i, conv in enumerate(n for n in list(graph.node) if n.op_type == "Conv"):
        dq = producers.get(conv.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if i not in convs or q is None or q.op_type != "QuantizeLinear":
            continue
        conv.input[0] = q.input[0]
        for slot in range(1, len(conv.input)):
            weight_dq = producers.get(conv.input[slot])
            if weight_dq is not None and weight_dq.op_type == "DequantizeLinear":
                graph.initializer.append(_dequantized(weight_dq, initializers, f"{conv.name}_float_{slot}"))
                conv.input[slot] = f"{conv.name}_float_{slot}"
        floated += 1
    onnx.save(model, str(target))
    return floated


def _dequantized(node: Any, initializers: dict[str, Any], name: str) -> Any:
    """The float initializer a DequantizeLinear of constant inputs produces (per-tensor or per-axis)."""
    import numpy as np
    from onnx import numpy_helper

    values = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return numpy_helper.from_array(((values - zero) * scale).astype(np.float32), name)


def slowed_run(run: Path, where: Path) -> Path:
    """A copy of ``run`` (no bench folder) whose INT8 model has float islands, its manifest rewritten."""
    from edge.manifest import read_manifest, write_manifest

    copy = where / "slowed"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("bench", "engines"))
    int8 = copy / "model.int8-cpu.onnx"
    old = read_manifest(int8)
    floated = float_islands(run / "model.int8-cpu.onnx", int8)
    provenance = dict(old.provenance, float_islands=floated)
    write_manifest(int8, old.kind, old.preprocess_spec, copy / "model.onnx", provenance, old.metrics)
    return copy


def bench(run: Path, out: Path, extra: list[str]) -> Path:
    command = [sys.executable, "-m", "edge", "bench", str(run), *BENCH_ARGS, *extra, "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edge bench failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return out / "report.json"


def latency_outcome(new: Path, old: Path, tolerance: float) -> dict[str, Any]:
    """The latency checks of ``edge check NEW --baseline OLD``, by status, and int8-cpu's p50 checks."""
    from bench.gate import evaluate_gate
    from edge.measure.report import read_report

    checks = evaluate_gate(read_report(new), read_report(old), 0.5, tolerance, allow_unmeasured=True)
    latency = [c for c in checks if c.name.startswith(("p50 ", "latency ratio "))]
    int8 = [c for c in latency if c.name.startswith("p50 int8-cpu@cpu")]
    return {
        "fail": [f"{c.name}: {c.detail}" for c in latency if c.status == "fail"],
        "noisy": [c.name for c in latency if c.status == "warn"],
        "int8_failed": any(
            c.status == "fail" for c in latency if c.name.startswith(("p50 int8-cpu@", "latency ratio int8-cpu/"))
        ),
        "int8_estimates": [
            f"{c.name.split()[-2]} {c.name.split()[-1]}: {c.detail.split('new/old ')[1].split(' over')[0]}"
            for c in int8
            if "new/old " in c.detail
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=10.0, help="--max-latency-regression in percent")
    parser.add_argument("--out", type=Path, help="keep the reports and a summary.json here")
    parser.add_argument("bench_args", nargs="*", help="more `edge bench` options after --, e.g. -- --profile demo")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-gate-bench-")) if args.out is None else args.out
    work.mkdir(parents=True, exist_ok=True)
    slowed = slowed_run(args.run, work)
    outcomes: dict[str, list[dict[str, Any]]] = {"identical": [], "slowed": []}
    previous = bench(args.run, work / "normal-0", args.bench_args)
    for i in range(1, args.pairs + 1):
        slow = bench(slowed, work / f"slowed-{i}", args.bench_args)
        outcomes["slowed"].append(latency_outcome(slow, previous, args.tolerance))
        normal = bench(args.run, work / f"normal-{i}", args.bench_args)
        outcomes["identical"].append(latency_outcome(normal, previous, args.tolerance))
        previous = normal
        same, slower = outcomes["identical"][-1], outcomes["slowed"][-1]
        print(
            f"pair {i}: identical {len(same['fail'])} failed, {len(same['noisy'])} too noisy; "
            f"slowed int8-cpu {'; '.join(slower['int8_estimates'])} {'detected' if slower['int8_failed'] else 'NOT detected'}",
            flush=True,
        )
    print_table(outcomes, args.pairs, args.tolerance)
    (work / "summary.json").write_text(json.dumps(outcomes, indent=1))
    print(f"reports and summary.json: {work}")
    return 0


def print_table(outcomes: dict[str, list[dict[str, Any]]], pairs: int, tolerance: float) -> None:
    same, slowed = outcomes["identical"], outcomes["slowed"]
    rows = [
        ("identical benches", "false failures", sum(bool(o["fail"]) for o in same), sum(bool(o["noisy"]) for o in same)),
        (
            "int8-cpu with float islands",
            "slowdowns detected",
            sum(o["int8_failed"] for o in slowed),
            sum(bool(o["noisy"]) for o in slowed),
        ),
    ]
    print(f"\nlatency check, --max-latency-regression {tolerance:g}, {pairs} pairs each")
    print(f"{'pairs':<30} {'outcome':<20} {'count':>7} {'with a too-noisy warning':>26}")
    for name, outcome, count, noisy in rows:
        print(f"{name:<30} {outcome:<20} {f'{count}/{pairs}':>7} {f'{noisy}/{pairs}':>26}")
    for o in same:
        for line in o["fail"]:
            print(f"  false failure: {line}")


if __name__ == "__main__":
    sys.exit(main())
