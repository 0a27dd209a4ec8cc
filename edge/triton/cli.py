"""Write a Triton Inference Server model repository from a run's artifacts.

    edge triton RUN --out REPO                    # ONNX FP32 / INT8-cpu on CPU, every TensorRT engine
    edge triton RUN --out REPO --gpu              # ONNX models on GPU through ORT's TensorRT accelerator
    tritonserver --model-repository=REPO

One model per artifact: model.onnx and model.int8-cpu.onnx as platform onnxruntime_onnx, the
engines under RUN/engines/ as platform tensorrt_plan with one plan per GPU architecture
(cc_model_filenames). A model folder of the same name is replaced; its files (and the previous
REPO/README.md) are kept under history/<UTC time>/ beside REPO, or in RUN/history/ when REPO is in
the run. Names, dtypes and dims come from the models; max_batch_size from the dynamic
batch axis or the engine profile; preferred batch sizes from RUN/bench/report.json where there is
one (else 4, 8, 16); class names as label_filename. REPO/README.md gives the server command and the
client-side preprocessing. Every config.pbtxt is checked against Triton's schema when tritonclient
is installed (pip install -e '.[triton]').
"""

from __future__ import annotations

import argparse

from edge.triton.models import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, Options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument(
        "--out",
        required=True,
        help="model repository folder (created; other models in it are left alone, those replaced kept in history/ beside it)",
    )
    parser.add_argument("--name", default=None, help="model name prefix (default: the run folder's name)")
    parser.add_argument("--artifacts", default=None, help="comma list of onnx-fp32,int8-cpu,int8-trt,trt-fp16,... (default: all)")
    parser.add_argument("--gpu", action="store_true", help="ONNX models on KIND_GPU with ONNX Runtime's TensorRT accelerator")
    parser.add_argument(
        "--trt-precision", choices=("fp16", "fp32"), default="fp16", help="that accelerator's precision for model.onnx"
    )
    parser.add_argument(
        "--max-batch", type=int, default=None, help=f"max_batch_size of dynamic-batch ONNX models (default {DEFAULT_MAX_BATCH})"
    )
    parser.add_argument("--instances", type=int, default=1, help="model instances per device (instance_group count)")
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, help="dynamic batcher's wait to form a preferred batch"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="include artifacts their maker did not accept (manifest accepted: false) or without a manifest (unverified)",
    )


def options_from(args: argparse.Namespace) -> Options:
    from edge.errors import UserError

    for flag, value, least in (
        ("--max-batch", args.max_batch, 1),
        ("--instances", args.instances, 1),
        ("--max-queue-delay-us", args.max_queue_delay_us, 0),
    ):
        if value is not None and value < least:
            raise UserError(f"{flag} {value}: give a whole number >= {least}")
    artifacts = tuple(a.strip() for a in args.artifacts.split(",") if a.strip()) if args.artifacts else None
    return Options(
        gpu=args.gpu,
        trt_precision=args.trt_precision,
        max_batch=args.max_batch,
        instances=args.instances,
        queue_delay_us=args.max_queue_delay_us,
        prefix=args.name,
        artifacts=artifacts,
        force=args.force,
    )


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console, make_table
    from edge.triton.pbtxt import schema_available
    from edge.triton.repository import write_repository

    kept: list[str] = []
    plans, notes = write_repository(args.run, args.out, options_from(args), say=kept.append)
    table = make_table(
        "model", "platform", "device", "max batch", "preferred", "files", title=f"Triton model repository {args.out}"
    )
    for plan in plans:
        table.add_row(
            plan.name,
            plan.platform,
            plan.device + (f" (ORT-TRT {plan.accelerator_precision})" if plan.accelerator_precision else ""),
            str(plan.max_batch_size),
            ", ".join(map(str, plan.preferred)) or "none",
            ", ".join(plan.files),
        )
    console = make_console()
    console.print(table)
    for line in kept:  # the model folders and README it replaced, beside the repository
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True)
    if not schema_available():
        console.print(
            "note: config.pbtxt not checked against Triton's schema: pip install -e '.[triton]' to check it", soft_wrap=True
        )
    console.print(f"serve it: tritonserver --model-repository={args.out}  (see {args.out}/README.md)", soft_wrap=True)
    return 0
