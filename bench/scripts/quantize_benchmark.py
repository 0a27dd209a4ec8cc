"""Figures for the INT8 targets (issue 4): not a test, a script that prints what it measured.

    python -m bench.scripts.quantize_benchmark [--run runs/demo] [--data fashion-mnist] [--skip-rss]
    python -m bench.scripts.quantize_benchmark --run runs/demo --compare-rounding [--rounding-method minmax]
    python -m bench.scripts.quantize_benchmark --run runs/demo --peers [--no-nncf] [--eval-limit N]

1. Throughput of RUN/model.int8-cpu.onnx vs RUN/model.onnx in ONNX Runtime at batch 8: interleaved
   rounds (FP32 then INT8, --rounds times, --window seconds each) in the same runner with the same
   session options and threads; the ratio is the median of the per-round ratios, with their range
   (a shared machine's load drifts over seconds and cancels within a round).
2. Calibration peak RSS per method for 512 images at 224 px (the ImageNet Lite0 on scikit-image
   photo crops), each method in its own subprocess so each peak is its own.
3. Wall time of calibration + quantization of 512 images (`edge calibrate` + `quantize --method
   auto`, target cpu) on RUN.
4. Accuracy of that INT8 model against its float parent on the full test split: top-1 and top-1
   agreement in percent (as the manifest holds them), the drop in points.

--compare-rounding prints only this instead: what the weight rounding and the bias correction each
bring. RUN's float model is quantized three times for target cpu with one method (--rounding-method,
every layer in INT8, no search): GPTQ weights with corrected biases (the default), GPTQ weights
alone, round-to-nearest weights alone; from the same calibration set (RUN/calibration, else one
drawn from the run's training split) and evaluated on the same test images (--eval-limit of the
run's test split; 0 = all of it): top-1, the drop in points, the agreement in percent and the flips
against the float model, with the number of images, on ONNX Runtime and (the same files, where the
openvino extra is installed) on OpenVINO. Nothing in RUN is changed.

--peers prints only this instead: our RUN/model.int8-cpu.onnx beside the peers a user would reach
for, each with its defaults, on the same calibration images (RUN/calibration, the set our model's
manifest names by content hash): ONNX Runtime's ``quantize_static`` (QDQ, per-tensor) and NNCF's
``nncf.quantize`` (a row saying "not installed" without the ``nncf`` extra). One table, one row per
quantizer and runtime (ONNX Runtime, OpenVINO): top-1, drop in points and top-1 agreement with the
float model on the run's test split (--eval-limit; 0 = all of it), ms per batch and the INT8
speed-up over the same runtime's FP32 and over ONNX Runtime FP32 (interleaved rounds, median of
per-round ratios), and the time to quantize (ours: as its manifest recorded it). Nothing in RUN is
changed (bench/scripts/peers.py holds the peers and the shared timing).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.quantize.ranges import METHODS
from edge.run import RunDir

RSS_IMAGES = 512
RSS_SIZE = 224


def rss_child(method: str, run: str, images: int) -> None:
    """Subprocess body: calibrate ``images`` cached images with one method, print peak RSS."""
    from calibration.reader import iter_batches
    from calibration.sets import load_calibration_set
    from edge.quantize.ranges import calibration_batch, collect_ranges
    from edge.quantize.targets import TARGET_CONFIGS, prepare_float_model

    before = peak_rss_mb()
    tensor = load_calibration_set(run).tensor[:images]
    config = TARGET_CONFIGS["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_float_model(Path(run) / "model.onnx", Path(tmp) / "float.onnx")
        start = time.perf_counter()
        collect_ranges(prepared, iter_batches(tensor, calibration_batch(tensor.shape[-1])), (method,), config.op_types, False)
        seconds = time.perf_counter() - start
    print(json.dumps({"method": method, "peak_rss_mb": peak_rss_mb(), "start_rss_mb": before, "seconds": seconds}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calibration_rss(work: Path) -> list[dict[str, Any]]:
    """Peak RSS per method for 512 photo crops at 224 px, one subprocess per method."""
    from calibration.sets import photo_calibration_set
    from edge.export import export_onnx
    from train.pretrained import write_pretrained_run

    run = work / "imagenet-224"
    write_pretrained_run(run)
    export_onnx(run, verify_limit=4)
    photo_calibration_set(run, count=RSS_IMAGES, seed=0)
    rows = []
    for method in METHODS:
        out = (
            subprocess.run(
                [sys.executable, "-m", "bench.scripts.quantize_benchmark", "--rss-child", method, "--run", str(run)],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        rows.append(json.loads(out))
    return rows


def calibrate_and_quantize(run: Path, data: str, work: Path) -> dict[str, Any]:
    """512-image calibration + auto quantization (target cpu) on a copy of RUN, accepted on the full test split."""
    from calibration.sets import build_calibration_set
    from edge.manifest import read_manifest
    from edge.quantize.cli import quantize_run

    copy = work / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("calibration", "model.int8-*", "bench", "engines", "*.pt"))
    start = time.perf_counter()
    build_calibration_set(copy, data, size=RSS_IMAGES, seed=0)
    drawn = time.perf_counter() - start
    path = quantize_run(copy, target="cpu", method="auto", data=data, eval_limit=0)
    metrics = read_manifest(path).metrics
    return {"calibration_set_s": drawn, **metrics, "path": path}


# (weight rounding, bias correction): the default, then each step taken away
VARIANTS = (("gptq", True), ("gptq", False), ("nearest", False))


def compare_rounding(
    run: RunDir, data: str | None, work: Path, method: str, eval_limit: int, calib_size: int = RSS_IMAGES
) -> list[dict[str, Any]]:
    """Quantize RUN (target cpu, one method, no layers in float) once per (weight rounding, bias
    correction) variant, from one calibration set, each evaluated against the float model on the
    same test images, on ONNX Runtime (the manifest's figures) and, where installed, on OpenVINO
    (the same file, against ONNX Runtime's float logits); one row each."""
    from calibration.sets import build_calibration_set
    from edge.manifest import read_manifest
    from edge.quantize.cli import quantize_run

    calibration = run.calibration_file
    if not calibration.exists():
        calibration = build_calibration_set(run.root, data, size=calib_size, seed=0, out=work / "calibration.npy").path
    rows, paths = [], []
    for rounding, bias in VARIANTS:
        path = quantize_run(
            run.root,
            target="cpu",
            method=method,
            data=data,
            eval_limit=eval_limit,
            calibration=calibration,
            max_excluded=0,
            out=work / f"model.int8-cpu.{rounding}{'.bias' if bias else ''}.onnx",
            weight_rounding=rounding,
            bias_correction=bias,
        )
        paths.append(path)
        manifest = read_manifest(path)
        corrected = manifest.provenance["bias_correction"]
        rows.append(
            {
                "rounding": rounding,
                "bias_correction": corrected is not None,
                "bias_layers": corrected["layers"] if corrected else None,
                "method": method,
                "calibration": str(calibration),
                "calibration_count": manifest.provenance["calibration"]["count"],
                "output_error_gain_db": manifest.provenance["weight_rounding"].get("output_error_gain_db"),
                **{
                    k: manifest.metrics[k]
                    for k in ("top1", "parent_top1", "drop_points", "agreement", "flips", "eval_count", "eval_source")
                },
            }
        )
    for row, figures in zip(rows, _openvino_figures(run, data, eval_limit, paths)):
        row["openvino"] = figures
    return rows


def _openvino_figures(run: RunDir, data: str | None, eval_limit: int, paths: list[Path]) -> list[dict[str, Any] | None]:
    """Each INT8 file on OpenVINO over the test images acceptance used (the same seeded subset):
    top-1, drop in points and flips against ONNX Runtime's float model; None without openvino."""
    import importlib.util

    from bench.scripts.peers import accuracy_row, logits_over, make_runner
    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import eval_set_from_data

    if importlib.util.find_spec("openvino") is None:
        return [None for _ in paths]
    spec = artifact_spec(run.onnx)
    test = eval_set_from_data(run.root, data, "test", eval_limit or None, spec)
    with make_runner("onnxruntime", run.onnx, spec, None) as runner:
        reference = logits_over(runner, test.tensor)
    figures: list[dict[str, Any] | None] = []
    for path in paths:
        with make_runner("openvino", path, spec, None) as runner:
            figures.append(accuracy_row(logits_over(runner, test.tensor), reference, test.labels))
    return figures


def _print_rounding(console: Any, run: RunDir, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"Weight rounding and bias correction on {run.root}: target cpu, {first['method']}, all layers INT8; "
        f"{first['calibration_count']} calibration images, {first['eval_count']} test images ({first['eval_source']})"
    )
    for column in (
        "weight rounding",
        "biases",
        "top-1",
        "float top-1",
        "drop (points)",
        "agreement (flips)",
        "OpenVINO drop",
        "OpenVINO agreement (flips)",
        "layer output gain dB",
    ):
        table.add_column(column)
    for row in rows:
        ov = row["openvino"]
        table.add_row(
            row["rounding"],
            f"corrected ({row['bias_layers']} layers)" if row["bias_correction"] else "as quantized",
            _fmt(row["top1"], "{:.2f}%"),
            _fmt(row["parent_top1"], "{:.2f}%"),
            _fmt(row["drop_points"], "{:.2f}"),
            f"{row['agreement']:.2f}% ({row['flips']})",
            _fmt(ov["drop"] if ov else None, "{:.2f}"),
            f"{ov['agreement']:.2f}% ({ov['flips']})" if ov else "n/a (openvino not installed)",
            _fmt(row["output_error_gain_db"], "{:.1f}"),
        )
    console.print(table)
    print(json.dumps({"compare_rounding": rows}))  # the figures, machine-readable


def _fmt(value: float | None, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def _print_throughput(console: Any, run: RunDir, int8: Path, args: argparse.Namespace) -> None:
    from rich.table import Table

    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import interleaved_throughput

    spec = artifact_spec(run.onnx)
    data = np.random.default_rng(0).standard_normal((args.batch, *spec.input_shape)).astype(np.float32)
    fp32, q8 = interleaved_throughput(
        [run.onnx, int8], spec, data, threads=args.threads, rounds=args.rounds, window_s=args.window, warmup=10
    )
    table = Table(
        title=f"ONNX Runtime CPU throughput at batch {args.batch}, {fp32['threads']} intra-op thread(s), "
        f"{args.rounds} interleaved rounds of {args.window:g} s ({run.root})"
    )
    for column in ("model", "p50 ms/batch", "images/s (median round)", "calls"):
        table.add_column(column)
    for name, row in (("fp32 model.onnx", fp32), (f"int8-cpu {Path(int8).name}", q8)):
        table.add_row(name, f"{row['p50_ms']:.2f}", f"{row['images_per_s']:.0f}", str(row["calls"]))
    table.add_row(
        "ratio int8/fp32",
        f"{fp32['p50_ms'] / q8['p50_ms']:.2f}x (p50)",
        f"{q8['ratio']:.2f}x (median of rounds; range {q8['ratio_min']:.2f}-{q8['ratio_max']:.2f}x)",
        "",
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.quantize_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", default="runs/demo", help="a fine-tuned run with model.onnx (default runs/demo)")
    parser.add_argument("--data", default="fashion-mnist", help="its data (default fashion-mnist)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: physical cores)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved FP32/INT8 timing rounds (default 15)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per model and round (default 0.5)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 224 px peak-RSS measurement")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the INT8/FP32 throughput")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip calibration+quantization and the full test set")
    parser.add_argument(
        "--compare-rounding",
        action="store_true",
        help="only compare GPTQ and nearest weight rounding, with and without bias correction (same calibration set, same test images)",
    )
    parser.add_argument(
        "--rounding-method",
        default="minmax",
        choices=METHODS,
        help="calibration method of --compare-rounding (default minmax)",
    )
    parser.add_argument(
        "--eval-limit", type=int, default=0, help="test images of --compare-rounding (default 0: the whole test split)"
    )
    parser.add_argument(
        "--peers", action="store_true", help="only compare with ONNX Runtime's and NNCF's default quantizers (see above)"
    )
    parser.add_argument("--no-nncf", action="store_true", help="with --peers: leave out NNCF even where it is installed")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (("--batch", args.batch), ("--rounds", args.rounds), ("--window", args.window)):
        if value <= 0:
            parser.error(f"{name} must be positive, got {value}")
    if args.eval_limit < 0:
        parser.error(f"--eval-limit must be >= 0 (0 = the whole test split), got {args.eval_limit}")
    if args.rss_child:
        rss_child(args.rss_child, args.run, RSS_IMAGES)
        return 0
    try:
        return _main(args)
    except UserError as exc:
        print(f"quantize_benchmark: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edge.quantize.cli import quantize_run

    console = Console()
    run = RunDir.open(args.run)
    with tempfile.TemporaryDirectory(prefix="edge-qbench-") as tmp_name:
        work = Path(tmp_name)
        if args.compare_rounding:
            _print_rounding(console, run, compare_rounding(run, args.data, work, args.rounding_method, args.eval_limit))
            return 0
        if args.peers:
            _print_peers(console, run, compare_peers(run, args, work), args)
            return 0
        if not args.skip_accuracy:
            result = calibrate_and_quantize(run.root, args.data, work)
            _print_accuracy(console, run, result)
            int8 = result["path"]
        else:
            int8 = (
                run.int8_cpu if run.int8_cpu.exists() else quantize_run(run.root, target="cpu", method="minmax", data=args.data)
            )
        if not args.skip_throughput:
            _print_throughput(console, run, Path(int8), args)
        if not args.skip_rss:
            _print_rss(console, calibration_rss(work))
    return 0


QUANTIZERS = ("ours", "onnxruntime-default", "nncf-default")
RUNTIMES = ("onnxruntime", "openvino")


def compare_peers(run: RunDir, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Our INT8 model and the peers' on the same calibration images: one row per quantizer and
    runtime (accuracy against ONNX Runtime FP32 on the test split, interleaved speed)."""
    from bench.scripts.peers import peer_models, run_calibration
    from edge.artifact_spec import artifact_spec
    from edge.manifest import read_manifest
    from edge.quantize.evaluate import eval_set_from_data
    from edge.runners.openvino_runner import require_openvino

    require_openvino("Comparing the peers on OpenVINO")
    float_model = run.require(run.onnx, f"run `edge export {run.root}`")
    ours = run.require(run.int8_cpu, f"run `edge quantize {run.root} --target cpu`")
    tensor, content_hash, ours_hash = run_calibration(run.root)
    if ours_hash is not None and ours_hash != content_hash:
        print(
            f"warning: {ours.name} was calibrated on set {ours_hash[:12]}, the peers get {run.calibration_file} ({content_hash[:12]})"
        )
    spec = artifact_spec(float_model)
    models = {"ours": {"path": ours, "seconds": read_manifest(ours).metrics.get("quantization_s"), "from_manifest": True}}
    models.update(peer_models(float_model, tensor, work, with_nncf=not args.no_nncf))
    evaluation = eval_set_from_data(run.root, args.data, "test", args.eval_limit or None, spec)
    paths = [("fp32", runtime, float_model) for runtime in RUNTIMES]
    paths += [(q, runtime, models[q]["path"]) for q in QUANTIZERS if "path" in models[q] for runtime in RUNTIMES]
    accuracy = _peer_accuracy(paths, spec, evaluation, args)
    timings = _peer_timing(paths, spec, evaluation.tensor, args)
    rows = []
    for quantizer in ("fp32", *QUANTIZERS):
        for runtime in RUNTIMES:
            rows.append(_peer_row(quantizer, runtime, models.get(quantizer), accuracy, timings, len(evaluation), len(tensor)))
    return rows


def _peer_accuracy(paths: list[tuple[str, str, Path]], spec: Any, evaluation: Any, args: argparse.Namespace) -> dict[Any, Any]:
    from bench.scripts.peers import accuracy_row, logits_over, make_runner

    logits = {}
    for quantizer, runtime, path in paths:
        with make_runner(runtime, path, spec, args.threads) as runner:
            logits[quantizer, runtime] = logits_over(runner, evaluation.tensor, 64)
    reference = logits["fp32", "onnxruntime"]
    return {key: accuracy_row(out, reference, evaluation.labels) for key, out in logits.items()}


def _peer_timing(paths: list[tuple[str, str, Path]], spec: Any, tensor: np.ndarray, args: argparse.Namespace) -> dict[Any, Any]:
    from bench.scripts.peers import active, make_runner
    from edge.measure.timing import interleaved_rounds

    batch = np.resize(tensor, (args.batch, *spec.input_shape)).astype(np.float32)
    runners = [(f"{q}/{r}", make_runner(r, path, spec, args.threads)) for q, r, path in paths]
    with active(runners):
        timings = interleaved_rounds(runners, batch, args.rounds, args.window)
    return {tuple(label.split("/")): timing for label, timing in timings.items()}


def _peer_row(
    quantizer: str,
    runtime: str,
    model: dict[str, Any] | None,
    accuracy: dict[Any, Any],
    timings: dict[Any, Any],
    n_eval: int,
    n_cal: int,
) -> dict[str, Any]:
    from edge.measure.timing import median_ratio

    row: dict[str, Any] = {"quantizer": quantizer, "runtime": runtime, "eval_count": n_eval, "calibration_count": n_cal}
    if model is not None and "error" in model:
        return {**row, "error": model["error"]}
    timing = timings[quantizer, runtime]
    same, ort = median_ratio(timing, timings["fp32", runtime]), median_ratio(timing, timings["fp32", "onnxruntime"])
    return {
        **row,
        **accuracy[quantizer, runtime],
        "p50_ms": timing.p50_ms,
        "speedup_same_runtime": same[0],
        "speedup_same_runtime_range": same[1:],
        "speedup_vs_ort_fp32": ort[0],
        "quantize_s": None if model is None else model["seconds"],
        "quantize_s_from_manifest": bool(model and model.get("from_manifest")),
    }


def _print_peers(console: Any, run: RunDir, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(console.width, 160))  # nine columns: never fold the figures

    first = rows[0]
    table = Table(
        title=f"INT8 quantizers side by side on {run.root}: {first['calibration_count']} calibration images (the same for "
        f"all), {first['eval_count']} test images; speed at batch {args.batch}, {args.rounds} interleaved rounds of "
        f"{args.window:g} s (median of per-round ratios)"
    )
    for column in ("quantizer", "runtime", "top-1", "drop", "agreement", "p50 ms", "INT8 speed-up", "x ORT FP32", "quantize s"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row(row["quantizer"], row["runtime"], row["error"], *[""] * 6)
            continue
        low, high = row["speedup_same_runtime_range"]
        speedup = "-" if row["quantizer"] == "fp32" else f"{row['speedup_same_runtime']:.2f}x ({low:.2f}-{high:.2f})"
        seconds = _fmt(row["quantize_s"], "{:.1f}") + (" (manifest)" if row["quantize_s_from_manifest"] else "")
        table.add_row(
            row["quantizer"],
            row["runtime"],
            _fmt(row["top1"], "{:.2f}%"),
            _fmt(row["drop"], "{:+.2f}"),
            f"{row['agreement']:.2f}%",
            f"{row['p50_ms']:.2f}",
            speedup,
            f"{row['speedup_vs_ort_fp32']:.2f}x",
            "-" if row["quantizer"] == "fp32" else seconds,
        )
    console.print(table)
    print(json.dumps({"peers": rows}, default=str))  # the figures, machine-readable


def _print_accuracy(console: Any, run: RunDir, result: dict[str, Any]) -> None:
    """Times and accuracy of calibrate_and_quantize (top-1 and agreement in percent, drop in points)."""
    from rich.table import Table

    table = Table(title=f"calibration + quantization ({RSS_IMAGES} images, target cpu, auto) on {run.root}")
    for column in (
        "calib set s",
        "calib+quant s",
        "total incl. acceptance s",
        "top-1",
        "float top-1",
        "drop (points)",
        "agreement",
        "test images",
    ):
        table.add_column(column)
    table.add_row(
        f"{result['calibration_set_s']:.1f}",
        f"{result['calibration_set_s'] + result['quantization_s']:.1f}",
        f"{result['calibration_set_s'] + result['total_s']:.1f}",
        f"{result['top1']:.2f}%",
        f"{result['parent_top1']:.2f}%",
        f"{result['drop_points']:.2f}",
        f"{result['agreement']:.2f}%",
        str(result["eval_count"]),
    )
    console.print(table)


def _print_rss(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"calibration peak RSS, {RSS_IMAGES} images at {RSS_SIZE} px (ImageNet Lite0, one process per method)")
    for column in ("method", "peak RSS MB", "RSS before MB", "collect s"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["method"], f"{row['peak_rss_mb']:.0f}", f"{row['start_rss_mb']:.0f}", f"{row['seconds']:.1f}")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
