"""Build TensorRT engines from a run's ONNX models, check them against this machine, run them.

    edge engine RUN --precision fp16 --batch 1:8:32

writes RUN/engines/<gpu>-sm<cc>-trt<version>/model.<precision>.engine and its manifest, so one
machine's engines never overwrite another's (an engine already there is kept under
RUN/history/<UTC time>/ first). An int8 engine is refused when edge quantize did not
accept model.int8-trt.onnx (its manifest says accepted: false), unless --force. FP32 and FP16 engines come from model.onnx, INT8 from
the TensorRT-targeted QDQ model (model.int8-trt.onnx, explicit quantization, no calibrator).
TensorRT 10.x and 11.x differ in precision control; build_settings() is the only place that branches
on the version. Loading an engine built by another TensorRT or for another GPU is refused
unless it was built --version-compatible; `--rebuild-stale` rebuilds such engines where the ONNX
parent is present.

TensorRT path: not yet verified on hardware. Everything here was written from NVIDIA's API notes
and type-checked against tensorrt-stubs; `edge selftest --tensorrt` proves it on a device.
"""

from __future__ import annotations

import argparse
from typing import Any

from edge.runners.tensorrt_engines import UNVERIFIED
from edge.tensorrt.build import DEFAULT_WORKSPACE_GIB, PRECISIONS, build_engines, validate_request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (reads model.onnx, or model.int8-trt.onnx for int8)")
    parser.add_argument("--precision", choices=PRECISIONS, help="engine precision")
    parser.add_argument("--batch", default="1:8:32", help="optimization profile MIN:OPT:MAX batch sizes (default 1:8:32)")
    parser.add_argument("--workspace", type=float, default=DEFAULT_WORKSPACE_GIB, help="builder workspace in GiB (default 2)")
    parser.add_argument(
        "--dla", type=int, default=None, metavar="CORE", help="build for this DLA core, with GPU fallback (Jetson)"
    )
    parser.add_argument("--timing-cache", default=None, metavar="PATH", help="timing cache file (default: beside the engine)")
    parser.add_argument("--version-compatible", action="store_true", help="build an engine later TensorRT versions can run")
    parser.add_argument("--rebuild-stale", action="store_true", help="also rebuild this run's stale or incompatible engines")
    parser.add_argument(
        "--force",
        action="store_true",
        help="build int8 from a model.int8-trt.onnx that edge quantize did not accept (the engine is marked so too), "
        "or from an ONNX file without a manifest (unverified)",
    )


def run(args: argparse.Namespace) -> int:
    request = validate_request(
        args.run,
        args.precision,
        args.batch,
        args.workspace,
        args.dla,
        args.timing_cache,
        args.version_compatible,
        args.rebuild_stale,
        args.force,
    )
    rows = build_engines(request)
    from edge.console import make_console

    make_console().print(engines_table(rows))
    return 0


def engines_table(rows: list[dict[str, Any]]) -> Any:
    """One row per engine built or reused: size, flags, shape profile, build time."""
    from edge.console import make_table

    table = make_table("precision", "engine", "MB", "flags", "profile", "build s", title=f"TensorRT engines ({UNVERIFIED})")
    for row in rows:
        profile = row["profile"]
        table.add_row(
            row["precision"],
            row["engine"],
            f"{row['size_mb']:.1f}",
            " ".join(row["build_flags"] + row["network_flags"]) or "-",
            f"{profile['min']}:{profile['opt']}:{profile['max']}",
            f"{row['build_seconds']:.1f}",
        )
    return table
