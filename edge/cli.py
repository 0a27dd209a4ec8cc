"""The ``edge`` command line: thin argparse wrappers over library functions.

Each subcommand lives in the module that owns its work; that module provides
``add_arguments(parser)`` and ``run(args) -> int | None``. Modules are imported lazily, so
``edge camera`` on a Jetson never imports the training code's heavy dependencies.

A user error (``edge.errors.UserError``, an ``OSError``, a missing optional package) prints one line
and exits 2; Ctrl-C exits 130 with one line; a bug shows its traceback (see ``main``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge.errors import UserError, missing_module_line, os_error_line

TENSORRT_UNVERIFIED = "TensorRT path: not yet verified on hardware"

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrained": ("train.pretrained", "write a run with an ImageNet-pretrained checkpoint (no training)"),
    "train": ("train.cli", "fine-tune a pretrained model on your images (transfer learning)"),
    "export": ("edge.export", "export a run's checkpoint to ONNX (verified against PyTorch)"),
    "calibrate": ("calibration.cli", "draw and cache a calibration set from the training split"),
    "quantize": ("edge.quantize.cli", "INT8 static quantization for ONNX Runtime CPU or TensorRT"),
    "engine": ("edge.tensorrt.cli", f"build TensorRT engines (FP32/FP16/INT8) [{TENSORRT_UNVERIFIED}]"),
    "bench": ("bench.cli", "latency, throughput and accuracy of every artifact on every device"),
    "check": ("bench.gate", "CI gate: fail on accuracy drops or latency regressions"),
    "compare": ("bench.compare", "one table across bench reports from several machines"),
    "runs": ("edge.tracking.runs", "list an MLflow experiment's tracked runs as one table"),
    "camera": ("edge.camera.cli", "classify a camera or video stream live with any artifact"),
    "inspect": ("edge.inspect", "show a checkpoint's or artifact's spec and manifest"),
    "pack": ("edge.pack", "bundle a run's deployable artifacts for copying to a device"),
    "verify": ("bench.verify_bundle", "run every artifact on every backend here over the bundle's verification set"),
    "triton": ("edge.triton.cli", "write a Triton Inference Server model repository from a run"),
    "serve": ("edge.triton.serve", "serve a run's ONNX model with Triton Inference Server (HTTP, gRPC, /metrics)"),
    "selftest": ("edge.selftest", f"prove the TensorRT path on this device [{TENSORRT_UNVERIFIED}]"),
}

# command -> the options that name what it writes: (attribute, "file" or "dir"). Checked before the
# command's work starts (edge.atomic.check_writable), so an unwritable, read-only, full or
# mistyped output fails in a second with one line, not after training or a benchmark.
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "pretrained": (("out", "dir"),),
    "train": (("out", "dir"),),
    "export": (("out", "file"),),
    "calibrate": (("out", "file"),),
    "quantize": (("out", "file"),),
    "engine": (("timing_cache", "file"),),
    "bench": (("out", "dir"),),
    "check": (("junit", "file"),),
    "compare": (("out", "dir"),),
    "camera": (("record", "file"), ("jsonl", "file")),
    "pack": (("out", "file"),),
    "verify": (("junit", "file"), ("markdown", "file")),
    "triton": (("out", "dir"),),
    "selftest": (("out", "dir"),),
}


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse the outputs named on the command line that cannot be written (an OSError naming the path)."""
    from edge.atomic import check_writable

    for attribute, kind in OUTPUTS.get(args.command, ()):
        value = getattr(args, attribute, None)
        if value is None or str(value) in ("", "-"):
            continue
        check_writable(value, directory=kind == "dir")


def _check_tracking(args: argparse.Namespace) -> None:
    """A command with the tracking flags: mlflow must be there before the work starts (edge.tracking)."""
    if hasattr(args, "track"):
        from edge.tracking import check_tracking

        check_tracking(args)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` command's module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Train, optimize, measure and run image classifiers for edge devices.",
        epilog=f"{TENSORRT_UNVERIFIED}: `edge selftest --tensorrt` proves it on your device.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if selected is not None and name != selected:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        command = sub.add_parser(name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_module=module_name)
    return parser


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_time=False, show_path=False, markup=False)],
        force=True,
    )
    for noisy in ("matplotlib", "PIL", "urllib3", "onnxscript", "torch.onnx", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. The one error path of every command:

    - a user error (``UserError``), an ``OSError`` (permission denied, no space left, read-only file
      system, is a directory, ...: the path and the errno's plain meaning) and a missing optional
      package print ONE line on stderr, ``edge CMD: error: ...``, and exit 2;
    - Ctrl-C, at any point (imports and argument parsing included), prints ``edge CMD: interrupted``
      and exits 130;
    - any other exception is a bug and shows its traceback. ``-v`` shows the traceback of the
      one-line errors too.
    """
    command, verbose = "edge", False
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        selected = next((a for a in argv if not a.startswith("-")), None)
        if selected in COMMANDS:
            command = f"edge {selected}"
        before_command = argv[: argv.index(selected)] if selected is not None else argv
        verbose = any(a in ("-v", "--verbose") for a in before_command)  # until parse_args has run
        parser = build_parser(selected if selected in COMMANDS else "")
        args = parser.parse_args(argv)
        command, verbose = f"edge {args.command}", args.verbose
        _setup_logging(args.verbose)
        check_outputs(args)
        _check_tracking(args)
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        return _fail(command, str(exc), exc, verbose)
    except OSError as exc:
        return _fail(command, os_error_line(exc), exc, verbose)
    except ImportError as exc:
        line = missing_module_line(exc, purpose=command)
        if line is None:  # not an optional package: a bug
            raise
        return _fail(command, line, exc, verbose)


def _fail(command: str, message: str, exc: BaseException, verbose: bool) -> int:
    """Print ``edge CMD: error: MESSAGE`` as one line (the traceback first with -v); exit status 2."""
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    line = " ".join(part.strip() for part in message.splitlines() if part.strip()) or type(exc).__name__
    print(f"{command}: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
