"""The ``edge`` command line: thin argparse wrappers over library functions.

Each subcommand lives in the module that owns its work; that module provides
``add_arguments(parser)`` and ``run(args) -> int | None``. Modules are imported lazily, so
``edge camera`` on a Jetson never imports the training code's heavy dependencies.

A user error (``edge.errors.UserError``) prints one line and exits 2; a bug shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge.errors import UserError

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
    "camera": ("edge.camera.cli", "classify a camera or video stream live with any artifact"),
    "inspect": ("edge.inspect", "show a checkpoint's or artifact's spec and manifest"),
    "pack": ("edge.pack", "bundle a run's deployable artifacts for copying to a device"),
    "selftest": ("edge.selftest", f"prove the TensorRT path on this device [{TENSORRT_UNVERIFIED}]"),
}


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
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else "")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    module = importlib.import_module(args._module)
    try:
        result = module.run(args)
    except UserError as exc:
        print(f"edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
