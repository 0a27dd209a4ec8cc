"""The fastest CPU INT8 path against its targets (issue 14): a script that prints what it measured.

    python -m bench.scripts.cpu_speed_benchmark [--run runs/demo] [--imagenet-run DIR | --skip-224]
        [--batch 8] [--threads N] [--rounds 10] [--window 0.3] [--repeat 3] [--work DIR] [--profile]

For each model (the demo run at its own size; the ImageNet Lite0 at 224 px, built from the offline
weights, exported and INT8-calibrated on 512 photo crops unless --imagenet-run names one) it times,
at batch --batch, in interleaved rounds (every path for --window seconds in turn, --rounds times,
the whole repeated --repeat times): ONNX Runtime FP32 (model.onnx, dynamic batch: the reference),
OpenVINO FP32 (static batch, f32), our model.int8-cpu.onnx on ONNX Runtime and on OpenVINO (the QDQ
file as it is), and OpenVINO running NNCF's default ``nncf.quantize`` of the same float model on the
same calibration images (when nncf is installed). With --ort-static, ONNX Runtime also runs copies of
both files with the batch dimension fixed (the free-dimension override, measured).

Speed-ups are medians of per-round throughput ratios, the median over repeats printed with every
repeat's value and the absolute ms per batch beside them. Accuracy is measured on the run's whole
pinned test split (--eval-limit to subsample) or, for the ImageNet model, on the bundled photos
(unlabelled: agreement only): top-1, drop in points and top-1 agreement with ONNX Runtime FP32, and
the agreement of ONNX Runtime INT8 with OpenVINO INT8 on the same file.

Targets: the fastest INT8 path >= 2.5x ONNX Runtime FP32 (>= 2.8x at 224 px), >= 1.0x OpenVINO
running NNCF's model, drop <= 0.1 points and agreement >= 99%. A missed speed target (or --profile)
prints where the time goes: OpenVINO's per-layer-type profile of our file and of NNCF's, and ONNX
Runtime's per-op profile of FP32 and INT8. The machine may be shared: run the script more than once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.scripts.peers import (
    NNCF_HINT,
    accuracy_row,
    active,
    logits_over,
    make_runner,
    nncf_default_quantize,
    ort_op_profile,
)
from edge.errors import MissingDependencyError, UserError
from edge.measure.timing import Timing, interleaved_rounds, median_ratio
from edge.run import RunDir
from edge.spec import PreprocessSpec

MIN_VS_NNCF, MAX_DROP, MIN_AGREEMENT = 1.0, 0.1, 99.0
REFERENCE, NNCF_ROW = "onnxruntime fp32", "openvino int8 (nncf)"
INT8_OURS = ("onnxruntime int8 (ours)", "openvino int8 (ours)")


def target_ratio(spec: PreprocessSpec) -> float:
    """The speed-up target over ONNX Runtime FP32: 2.8x at 224 px and above, else 2.5x."""
    return 2.8 if spec.input_size >= 224 else 2.5


@dataclass
class Case:
    """One model measured: its run, spec, evaluation images (labels None: agreement only), calibration tensor."""

    title: str
    run: RunDir
    spec: PreprocessSpec
    eval_name: str
    eval_tensor: np.ndarray
    labels: np.ndarray | None
    calibration: np.ndarray
    calibration_hash: str


def static_batch_copy(path: Path, batch: int, out: Path) -> Path:
    """A copy of an ONNX model with its batch dimension fixed to ``batch`` (inputs and outputs)."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = batch
    onnx.save(model, str(out))
    return out


def nncf_model(case: Case, work: Path) -> Path | None:
    """NNCF's default quantization of the case's float model (cached in --work by calibration hash); None without nncf."""
    out = work / f"{case.run.root.name}.nncf-{case.calibration_hash[:12]}.onnx"
    if not out.exists():
        try:
            seconds = nncf_default_quantize(case.run.onnx, out, case.calibration)
        except MissingDependencyError:
            return None
        print(f"nncf.quantize of {case.run.onnx} on {len(case.calibration)} calibration images: {seconds:.1f} s")
    return out


def paths_of(case: Case, work: Path, args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    """(label, backend, ONNX file) of every path timed for this case."""
    int8 = case.run.require(case.run.int8_cpu, f"run `edge quantize {case.run.root} --target cpu`")
    rows = [
        (REFERENCE, "onnxruntime", case.run.onnx),
        ("openvino fp32", "openvino", case.run.onnx),
        (INT8_OURS[0], "onnxruntime", int8),
        (INT8_OURS[1], "openvino", int8),
    ]
    nncf = nncf_model(case, work) if not args.no_nncf else None
    if nncf is not None:
        rows.append((NNCF_ROW, "openvino", nncf))
    if args.ort_static:
        for label, path in (("onnxruntime fp32 static-batch", case.run.onnx), ("onnxruntime int8 static-batch", int8)):
            rows.append((label, "onnxruntime", static_batch_copy(path, args.batch, work / f"static{args.batch}-{path.name}")))
    return rows


def measure_speed(case: Case, paths: list[tuple[str, str, Path]], args: argparse.Namespace) -> list[dict[str, Timing]]:
    """--repeat sets of interleaved rounds over every path at batch --batch."""
    batch = np.ascontiguousarray(case.eval_tensor[: args.batch])
    if len(batch) < args.batch:
        batch = np.resize(case.eval_tensor, (args.batch, *case.spec.input_shape)).astype(np.float32)
    runners = [(label, make_runner(backend, path, case.spec, args.threads)) for label, backend, path in paths]
    repeats = []
    with active(runners):
        for repeat in range(args.repeat):
            repeats.append(interleaved_rounds(runners, batch, args.rounds, args.window))
            print(f"  timing repeat {repeat + 1}/{args.repeat} done", file=sys.stderr)
    return repeats


def measure_accuracy(case: Case, paths: list[tuple[str, str, Path]], args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy of every path against ONNX Runtime FP32 on the case's evaluation images, and the
    top-1 agreement of ONNX Runtime INT8 with OpenVINO INT8 on our file."""
    logits: dict[str, np.ndarray] = {}
    for label, backend, path in paths:
        if "static-batch" in label:
            continue  # the same arithmetic as its dynamic row; its batch is fixed to the timing batch
        with make_runner(backend, path, case.spec, args.threads) as runner:
            logits[label] = logits_over(runner, case.eval_tensor, 64)
    rows = {label: accuracy_row(out, logits[REFERENCE], case.labels) for label, out in logits.items()}
    cross = accuracy_row(logits[INT8_OURS[1]], logits[INT8_OURS[0]], None)["agreement"]
    return {"rows": rows, "ort_vs_openvino_int8_agreement": cross}


def summarize(case: Case, repeats: list[dict[str, Timing]], accuracy: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per path: ms, images/s, speed-ups (median over repeats of medians of rounds), accuracy."""
    rows = []
    for label in repeats[0]:
        vs_ref = [median_ratio(r[label], r[REFERENCE])[0] for r in repeats]
        vs_nncf = [median_ratio(r[label], r[NNCF_ROW])[0] for r in repeats] if NNCF_ROW in repeats[0] else None
        rows.append(
            {
                "path": label,
                "p50_ms": float(np.median([r[label].p50_ms for r in repeats])),
                "images_per_s": float(np.median([r[label].images_per_s for r in repeats])),
                "vs_ort_fp32": float(np.median(vs_ref)),
                "vs_ort_fp32_repeats": vs_ref,
                "vs_openvino_nncf": None if vs_nncf is None else float(np.median(vs_nncf)),
                **accuracy["rows"].get(label, {"top1": None, "drop": None, "agreement": None, "flips": None}),
            }
        )
    return rows


def verdict(case: Case, rows: list[dict[str, Any]], nncf_present: bool) -> dict[str, Any]:
    """The fastest of our INT8 paths and each target met (True/False) or unmeasured (None)."""
    ours = [row for row in rows if row["path"] in INT8_OURS]
    best = max(ours, key=lambda row: row["vs_ort_fp32"])
    drop = best["drop"]
    return {
        "fastest_int8": best["path"],
        "vs_ort_fp32": best["vs_ort_fp32"],
        "target_vs_ort_fp32": target_ratio(case.spec),
        "meets_vs_ort_fp32": best["vs_ort_fp32"] >= target_ratio(case.spec),
        "vs_openvino_nncf": best["vs_openvino_nncf"],
        "meets_vs_openvino_nncf": None if not nncf_present else best["vs_openvino_nncf"] >= MIN_VS_NNCF,
        "drop": drop,
        "meets_drop": None if drop is None else drop <= MAX_DROP,
        "agreement": best["agreement"],
        "meets_agreement": best["agreement"] >= MIN_AGREEMENT,
    }


def _fmt(value: float | None, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def print_table(console: Any, case: Case, rows: list[dict[str, Any]], accuracy: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(
        title=f"{case.title}: batch {args.batch}, {args.threads or 'default'} thread(s), {args.repeat} x {args.rounds} "
        f"interleaved rounds of {args.window:g} s; accuracy on {len(case.eval_tensor)} images ({case.eval_name})"
    )
    for column in ("path", "p50 ms/batch", "images/s", "x ORT FP32 (repeats)", "x OV NNCF", "top-1", "drop", "agreement"):
        table.add_column(column)
    for row in rows:
        repeats = ", ".join(f"{r:.2f}" for r in row["vs_ort_fp32_repeats"])
        table.add_row(
            row["path"],
            f"{row['p50_ms']:.2f}",
            f"{row['images_per_s']:.0f}",
            f"{row['vs_ort_fp32']:.2f}x ({repeats})",
            _fmt(row["vs_openvino_nncf"], "{:.2f}x"),
            _fmt(row["top1"], "{:.2f}%"),
            _fmt(row["drop"], "{:+.2f}"),
            _fmt(row["agreement"], "{:.2f}%"),
        )
    console.print(table)
    print(
        f"ONNX Runtime INT8 vs OpenVINO INT8 on {case.run.int8_cpu.name}: {accuracy['ort_vs_openvino_int8_agreement']:.2f}% top-1 agreement"
    )


def print_verdict(case: Case, result: dict[str, Any], nncf_present: bool) -> None:
    def mark(flag: bool | None) -> str:
        return "n/a" if flag is None else ("met" if flag else "MISSED")

    print(
        f"fastest INT8 path: {result['fastest_int8']}: {result['vs_ort_fp32']:.2f}x ONNX Runtime FP32 "
        f"(target >= {result['target_vs_ort_fp32']:.1f}x: {mark(result['meets_vs_ort_fp32'])}); "
        + (
            f"{result['vs_openvino_nncf']:.2f}x OpenVINO on NNCF's model (target >= {MIN_VS_NNCF:.1f}x: "
            f"{mark(result['meets_vs_openvino_nncf'])}); "
            if nncf_present
            else f"OpenVINO on NNCF's model: {NNCF_HINT}; "
        )
        + f"drop {_fmt(result['drop'], '{:+.2f}')} points (<= {MAX_DROP}: {mark(result['meets_drop'])}), "
        f"agreement {result['agreement']:.2f}% (>= {MIN_AGREEMENT:.0f}%: {mark(result['meets_agreement'])})"
    )


def print_profile(console: Any, case: Case, paths: list[tuple[str, str, Path]], best: str, args: argparse.Namespace) -> None:
    """Where the time goes: OpenVINO's per-layer-type profile of the fastest path (or of our file on
    OpenVINO) and ONNX Runtime's per-op profile of FP32 and of our INT8 file, ms per batch."""
    from rich.table import Table

    from edge.runners.onnxruntime_runner import physical_cores
    from edge.runners.openvino_runner import OpenVinoRunner

    by_label = {label: path for label, _, path in paths}
    batch = np.resize(case.eval_tensor, (args.batch, *case.spec.input_shape)).astype(np.float32)
    threads = args.threads or physical_cores()
    profiles = {}
    openvino_files = {f"OpenVINO int8 (ours){' (fastest)' if best == INT8_OURS[1] else ''}": by_label[INT8_OURS[1]]}
    if NNCF_ROW in by_label:
        openvino_files["OpenVINO int8 (NNCF's model)"] = by_label[NNCF_ROW]
    for name, path in openvino_files.items():
        with OpenVinoRunner(path, case.spec, threads=threads, perf_count=True) as runner:
            calls = []
            for _ in range(20):
                runner.infer(batch)
                calls.append(runner.op_profile(args.batch))
            profiles[name] = _median_profile(calls[5:])  # per layer type, the median call (a shared machine's spikes)
    profiles["ONNX Runtime fp32"] = ort_op_profile(by_label[REFERENCE], batch, threads)
    profiles["ONNX Runtime int8 (ours)"] = ort_op_profile(by_label[INT8_OURS[0]], batch, threads)
    for name, rows in profiles.items():
        total = sum(row["ms"] for row in rows)
        table = Table(title=f"profile of {name} on {case.title}, batch {args.batch}: {total:.2f} ms per call in layers")
        for column in ("layer type", "kernel", "layers", "ms", "share"):
            table.add_column(column)
        for row in rows[:8]:
            table.add_row(row["op"], row["kernel"], str(row["layers"]), f"{row['ms']:.2f}", f"{100 * row['ms'] / total:.0f}%")
        console.print(table)


def _median_profile(calls: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (layer type, kernel), the median of its ms over several calls' profiles, slowest first."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in calls:
        for row in rows:
            samples.setdefault((row["op"], row["kernel"]), []).append(row)
    merged = [{**rows[0], "ms": float(np.median([r["ms"] for r in rows]))} for rows in samples.values()]
    return sorted(merged, key=lambda row: -row["ms"])


def demo_case(run_path: str, data: str | None, eval_limit: int) -> Case:
    """The fine-tuned run: its whole pinned test split (or --eval-limit of it), its calibration set."""
    from bench.scripts.peers import run_calibration
    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import eval_set_from_data

    run = RunDir.open(run_path)
    run.require(run.onnx, f"run `edge export {run.root}`")
    spec = artifact_spec(run.onnx)
    calibration, content_hash, ours = run_calibration(run.root)
    if ours is not None and ours != content_hash:
        print(
            f"warning: {run.int8_cpu.name} was calibrated on another set ({ours[:12]}) than {run.calibration_file} "
            f"({content_hash[:12]}): NNCF gets the latter"
        )
    evaluation = eval_set_from_data(run.root, data, "test", eval_limit or None, spec)
    title = f"{run.root} at {spec.input_size} px"
    return Case(title, run, spec, evaluation.name, evaluation.tensor, evaluation.labels, calibration, content_hash)


def imagenet_case(path: str | None, work: Path, calib_count: int, photos: int) -> Case:
    """The ImageNet Lite0 at 224 px (built in --work from the offline weights unless given):
    INT8 calibrated on photo crops, evaluated on the bundled test photos (unlabelled)."""
    from bench.scripts.peers import run_calibration
    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import eval_set_from_photos

    root = Path(path) if path else work / "imagenet-lite0"
    if path is None and not (root / "model.int8-cpu.onnx").exists():
        from calibration.sets import photo_calibration_set
        from edge.export import export_onnx
        from edge.quantize.cli import quantize_run
        from train.pretrained import write_pretrained_run

        print(f"building {root}: pretrained Lite0, export, {calib_count} photo crops, INT8 (minmax) ...", file=sys.stderr)
        write_pretrained_run(root)
        export_onnx(root, verify_limit=4)
        photo_calibration_set(root, count=calib_count, seed=0)
        quantize_run(root, target="cpu", method="minmax", eval_limit=64)
    run = RunDir.open(root)
    spec = artifact_spec(run.require(run.onnx, f"run `edge export {root}`"))
    calibration, content_hash, _ = run_calibration(run.root)
    evaluation = eval_set_from_photos(photos, spec, role="test")
    return Case(
        f"ImageNet Lite0 at {spec.input_size} px", run, spec, evaluation.name, evaluation.tensor, None, calibration, content_hash
    )


def measure_case(console: Any, case: Case, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Time, evaluate, print the table and the verdict (and the profile where the target is missed)."""
    paths = paths_of(case, work, args)
    nncf_present = any(label == NNCF_ROW for label, _, _ in paths)
    accuracy = measure_accuracy(case, paths, args)
    rows = summarize(case, measure_speed(case, paths, args), accuracy)
    result = verdict(case, rows, nncf_present)
    print_table(console, case, rows, accuracy, args)
    print_verdict(case, result, nncf_present)
    if args.profile or not result["meets_vs_ort_fp32"] or result["meets_vs_openvino_nncf"] is False:
        print_profile(console, case, paths, result["fastest_int8"], args)
    return {"case": case.title, "rows": rows, "verdict": result, **{k: v for k, v in accuracy.items() if k != "rows"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.cpu_speed_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", default="runs/demo", help="a fine-tuned run with model.onnx, model.int8-cpu.onnx, calibration/")
    parser.add_argument("--data", default=None, help="its data (default: the data its splits.json pins)")
    parser.add_argument("--eval-limit", type=int, default=0, help="test images (default 0: the whole pinned test split)")
    parser.add_argument(
        "--imagenet-run", default=None, help="an ImageNet Lite0 run with model.int8-cpu.onnx (default: build one)"
    )
    parser.add_argument("--skip-224", action="store_true", help="skip the ImageNet Lite0 at 224 px")
    parser.add_argument("--skip-demo", action="store_true", help="skip --run")
    parser.add_argument("--calib-count", type=int, default=512, help="photo crops calibrating a built ImageNet run (512)")
    parser.add_argument("--photos", type=int, default=100, help="bundled test photos and crops for the 224 px accuracy (100)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: physical cores)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per repeat (default 10)")
    parser.add_argument("--window", type=float, default=0.3, help="seconds per path and round (default 0.3)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the interleaved rounds (default 3)")
    parser.add_argument("--ort-static", action="store_true", help="also time ONNX Runtime with the batch dimension fixed")
    parser.add_argument("--no-nncf", action="store_true", help="leave out OpenVINO running NNCF's model")
    parser.add_argument("--profile", action="store_true", help="print the per-op profiles even when the target is met")
    parser.add_argument("--work", default=None, help="keep built models here (the ImageNet run, NNCF's models) between runs")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for name in ("batch", "rounds", "window", "repeat", "calib_count", "photos"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_limit < 0 or (args.threads is not None and args.threads <= 0):
        parser.error("--eval-limit must be >= 0 and --threads positive")
    try:
        return _main(args)
    except UserError as exc:
        print(f"cpu_speed_benchmark: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edge.runners.openvino_runner import require_openvino

    require_openvino("The CPU speed benchmark")
    console = Console(width=200)
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-cpu-speed-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_demo:
            results.append(measure_case(console, demo_case(args.run, args.data, args.eval_limit), work, args))
        if not args.skip_224:
            results.append(
                measure_case(console, imagenet_case(args.imagenet_run, work, args.calib_count, args.photos), work, args)
            )
    payload = json.dumps({"cpu_speed": results}, default=str)
    if args.json:
        from edge.atomic import atomic_write_text

        atomic_write_text(args.json, payload + "\n")
    print(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
