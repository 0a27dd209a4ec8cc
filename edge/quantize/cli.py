"""INT8 static quantization of a run's ONNX model for ONNX Runtime CPU or TensorRT.

    edge quantize RUN --target cpu|trt --method minmax|entropy|percentile|auto --data DATA
                      [--max-drop 0.5] [--reduce-range] [--weight-rounding gptq|nearest]
                      [--val-limit N] [--eval-limit N]

Writes RUN/model.int8-cpu.onnx or RUN/model.int8-trt.onnx (QDQ) with a manifest and a per-layer
error report (RUN/model.int8-<target>.layers.json). Calibration uses RUN/calibration (from
`edge calibrate`), or draws a set from --data's training split; the same pass collects the layer
inputs that GPTQ rounds the int8 weights with (``--weight-rounding``, edge/quantize_weights.py).
``--method auto`` tries every method on a validation split drawn from the training data, and when
the best drop exceeds --max-drop (or agreement falls short of --min-agreement) keeps the layers
with the worst quantization error in float until the budget holds. On target cpu it then times
the tries that fit against the float model (ONNX Runtime, batch 8) and takes the fastest: a float
layer costs conversions at its borders, so full INT8 is usually the one to beat.
Acceptance then compares the result with its float parent on the test split (a subset of
--eval-limit images; 0 = the whole split). Accuracy of a target-trt model measured here is
simulated: ONNX Runtime's CPU kernels do not reproduce TensorRT's arithmetic.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.artifacts import artifact_spec, atomic_path, atomic_write_json, environment_fingerprint, write_manifest
from edge.errors import UserError
from edge.export import load_onnx_checked
from edge.quantize.evaluate import (
    EvalSet,
    compare,
    eval_set_from_data,
    eval_set_from_photos,
    layer_errors,
    predict,
    weight_sensitivity,
)
from edge.quantize.targets import (
    TARGETS,
    check_tensorrt_rules,
    default_reduce_range,
    prepare_float_model,
    quantize_onnx,
    target_config,
)
from edge.quantize.weights import ROUNDINGS, GPTQRounding, InputStatistics
from edge.run import RunDir, layer_report_name

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
CHOICES = (*METHODS, "auto")
DEFAULT_MAX_DROP = 0.5
DEFAULT_MIN_AGREEMENT = 0.99
# Agreement is what auto reads closest: on 500 images one flip is 0.2% and the noise about 0.5%,
# on 2000 about 0.2%. Full INT8 on 2 cores evaluates 2000 images of 64 px in about a second.
DEFAULT_VAL_LIMIT = 2000
DEFAULT_EVAL_LIMIT = 1000
DEFAULT_MAX_EXCLUDED = 8
PHOTO_EVAL_COUNT = 24  # unlabelled photo sets: a few dozen images at most
# Calibration batches hold every activation of the model at once: 16 images at 224 px, more at smaller sizes.
CALIBRATION_PIXELS = 16 * 224 * 224
DEBUG_PIXELS = 32 * 64 * 64  # per-layer report: 32 images at 64 px, fewer at larger sizes (it keeps every tensor)
WORST_LAYERS = 10
SPEED_BATCH = 8
SPEED_ROUNDS = 5
SPEED_WINDOW_S = 0.2
SPEED_TOLERANCE = 0.05  # tries within 5% of the fastest count as equally fast: accuracy decides
SENSITIVE_DB = 40.0  # logits SQNR below which a layer's int8 weights are worth keeping in float


@dataclass
class Try:
    """One quantization configuration and its validation result (one row of the tries table)."""

    method: str
    excluded: list[str]
    path: Path
    val: dict[str, Any] = field(default_factory=dict)
    speedup: float | None = None  # throughput against the float model (auto, target cpu)
    rounding: dict[str, Any] = field(default_factory=lambda: {"rounding": "nearest"})

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "excluded": list(self.excluded),
            **{k: self.val[k] for k in ("top1", "drop_points", "agreement", "eval_count") if k in self.val},
            **({"speedup": round(self.speedup, 3)} if self.speedup is not None else {}),
        }

    def fits(self, max_drop: float, min_agreement: float) -> bool:
        return bool(self.val) and self.val["drop_points"] <= max_drop and self.val["agreement"] >= min_agreement


def _validate(
    target: str,
    method: str,
    max_drop: float,
    min_agreement: float,
    val_limit: int,
    eval_limit: int,
    calib_size: int,
    max_excluded: int,
    weight_rounding: str = "gptq",
) -> None:
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}: use cpu (ONNX Runtime) or trt (TensorRT)")
    if method not in CHOICES:
        raise UserError(f"unknown method {method!r}: use {', '.join(CHOICES)} (ORT's Distribution calibrator is for float8)")
    if max_drop < 0:
        raise UserError(f"--max-drop must be >= 0 points, got {max_drop}")
    if not 0.0 <= min_agreement <= 1.0:
        raise UserError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    for name, value in (("--val-limit", val_limit), ("--eval-limit", eval_limit), ("--max-excluded", max_excluded)):
        if value < 0:
            raise UserError(f"{name} must be >= 0 (0 = all / none), got {value}")
    if calib_size < 1:
        raise UserError(f"--calib-size must be at least 1, got {calib_size}")
    if weight_rounding not in ROUNDINGS:
        raise UserError(f"unknown weight rounding {weight_rounding!r}: use {' or '.join(ROUNDINGS)}")


def _calibration(
    run: RunDir, calibration: str | os.PathLike[str] | None, data: str | None, calib_size: int, seed: int, spec: Any
) -> Any:
    from calibration.sets import build_calibration_set, load_calibration_set

    if calibration is not None:
        return load_calibration_set(calibration, spec)
    stored = run.calibration_file
    if stored.exists():
        calib = load_calibration_set(stored, spec)
        if data is not None and calib.provenance.get("data") != str(data):
            log.warning(
                "using the stored calibration set from %s, not --data %s (rebuild it with `edge calibrate`)",
                calib.provenance.get("data"),
                data,
            )
        return calib
    if data is None:
        raise UserError(f"{run.root} has no calibration set: run `edge calibrate {run.root} --data DATA` or pass --data")
    return build_calibration_set(run.root, data, size=calib_size, seed=seed)


def _eval_set(data: str | None, split: str, limit: int, spec: Any, seed: int, photo_seed: int) -> EvalSet:
    if data is None:
        return eval_set_from_photos(min(limit or PHOTO_EVAL_COUNT, PHOTO_EVAL_COUNT), spec, photo_seed)
    return eval_set_from_data(data, split, limit or None, spec, seed=seed)


def quantize_run(
    run: str | os.PathLike[str],
    target: str = "cpu",
    method: str = "auto",
    data: str | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    reduce_range: bool | None = None,
    val_limit: int = DEFAULT_VAL_LIMIT,
    eval_limit: int = DEFAULT_EVAL_LIMIT,
    calibration: str | os.PathLike[str] | None = None,
    calib_size: int = 512,
    seed: int = 0,
    max_excluded: int = DEFAULT_MAX_EXCLUDED,
    out: str | os.PathLike[str] | None = None,
    weight_rounding: str = "gptq",
) -> Path:
    """Quantize RUN/model.onnx for ``target``, evaluate it against the float parent and write
    RUN/model.int8-<target>.onnx with its manifest; returns the path.

    ``data`` names the training data (calibration when RUN/calibration is missing, the val split
    for auto, the test split for acceptance); None means scikit-image photos with the float
    parent's predictions as labels. ``val_limit``/``eval_limit``: 0 = the whole split.
    ``weight_rounding``: ``gptq`` (output-aware, the default) or ``nearest`` (quantize_static's own).
    """
    _validate(target, method, max_drop, min_agreement, val_limit, eval_limit, calib_size, max_excluded, weight_rounding)
    run_dir = RunDir.open(run)
    parent = run_dir.onnx
    load_onnx_checked(run_dir.require(parent, f"export the model first: `edge export {run_dir.root}`"))
    spec = artifact_spec(parent)
    config = target_config(target)
    if reduce_range is None:
        reduce_range = default_reduce_range() if target == "cpu" else False
    out_path = Path(out) if out else (run_dir.int8_cpu if target == "cpu" else run_dir.int8_trt)
    started = time.perf_counter()

    calib = _calibration(run_dir, calibration, data, calib_size, seed, spec)
    methods = METHODS if method == "auto" else (method,)
    with tempfile.TemporaryDirectory(prefix=f"edge-quantize-{target}-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = prepare_float_model(parent, tmp / "float.onnx")
        stats = InputStatistics(onnx.load(str(prepared)), seed=seed) if weight_rounding == "gptq" else None
        ranges = _collect(prepared, calib.tensor, methods, config, [stats] if stats is not None else [])
        rounding = GPTQRounding(stats) if stats is not None else None
        calibrated_s = time.perf_counter() - started

        val = _eval_set(data, "val", val_limit, spec, seed, photo_seed=1) if method == "auto" else None
        val_parent = predict(parent, val.tensor) if val is not None else None
        tries: list[Try] = []

        def attempt(name: str, excluded: list[str]) -> Try:
            path = quantize_onnx(prepared, tmp / f"try-{len(tries)}.onnx", target, ranges[name], reduce_range, excluded)
            result = Try(name, excluded, path)
            if rounding is not None:
                result.rounding = rounding.apply(path)
            if val is not None and val_parent is not None:
                result.val = compare(val_parent, predict(path, val.tensor), val.labels)
                log.info(
                    "try %d: %s, %d node(s) in float: val top-1 %.2f%%, drop %.2f points, agreement %.2f%%",
                    len(tries),
                    name,
                    len(excluded),
                    100 * result.val["top1"],
                    result.val["drop_points"],
                    100 * result.val["agreement"],
                )
            tries.append(result)
            return result

        for name in methods:
            attempt(name, [])
        best = _best(tries, max_drop)
        debug_batches = [
            np.ascontiguousarray(calib.tensor[i : i + 16], dtype=np.float32)
            for i in range(0, min(_debug_images(spec), len(calib)), 16)
        ]
        layers = layer_errors(prepared, best.path, debug_batches)
        if method == "auto" and not best.fits(max_drop, min_agreement) and max_excluded > 0:
            best, layers = _exclude_worst(
                best, layers, attempt, tries, prepared, debug_batches, max_drop, min_agreement, max_excluded
            )
        if method == "auto" and target == "cpu":
            _time_tries(parent, tries, spec, calib.tensor)
            fastest = _choose(tries, max_drop, min_agreement)
            if fastest is not best:
                best, layers = fastest, layer_errors(prepared, fastest.path, debug_batches)

        searched_s = time.perf_counter() - started  # calibration + quantization, before acceptance
        test = _eval_set(data, "test", eval_limit, spec, seed, photo_seed=2)
        acceptance = compare(predict(parent, test.tensor), predict(best.path, test.tensor), test.labels)
        if target == "trt":
            problems = check_tensorrt_rules(best.path)
            if problems:
                raise RuntimeError(f"target-trt model breaks TensorRT's Q/DQ rules: {problems[:3]}")
        accepted = acceptance["drop_points"] <= max_drop
        if not accepted:
            log.warning(
                "%s: top-1 drop %.2f points on %d test images exceeds --max-drop %.2f: written, marked not accepted",
                out_path.name,
                acceptance["drop_points"],
                acceptance["eval_count"],
                max_drop,
            )
        report_path = out_path.with_name(layer_report_name(out_path))
        atomic_write_json(
            report_path,
            {
                "model": out_path.name,
                "images": sum(len(b) for b in debug_batches),
                "metric": "SQNR dB (higher is better); loss_db = SQNR the producing node loses",
                "layers": layers,
            },
        )
        with atomic_path(out_path) as staged:
            shutil.copyfile(best.path, staged)

    env = environment_fingerprint()
    provenance = {
        **config.describe(),
        "method": method,
        "chosen_method": best.method,
        "nodes_excluded": best.excluded,
        "reduce_range": reduce_range,
        "weight_rounding": best.rounding,
        "reduce_range_default": default_reduce_range(env["cpu_flags"]) if target == "cpu" else False,
        "built_cpu_flags": env["cpu_flags"],
        "calibration": {
            "path": str(calib.path),
            "content_hash": calib.content_hash,
            "count": len(calib),
            "data": calib.provenance.get("data"),
            "seed": calib.provenance.get("seed"),
        },
        "val_set": val.name if val is not None else None,
        "speed": {"batch": SPEED_BATCH, "rounds": SPEED_ROUNDS, "window_s": SPEED_WINDOW_S}
        if any(t.speedup is not None for t in tries)
        else None,
        "tries": [t.row() for t in tries],
        "max_drop": max_drop,
        "min_agreement": min_agreement,
        "layer_report": report_path.name,
    }
    metrics = {
        **acceptance,
        "eval_source": test.name,
        "size_ratio": out_path.stat().st_size / parent.stat().st_size,
        "simulated": target == "trt",
        "accepted": accepted,
        "calibration_s": round(calibrated_s, 2),
        "quantization_s": round(searched_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    write_manifest(
        out_path,
        f"onnx-int8-{target}",
        spec,
        parent=parent,
        provenance=provenance,
        metrics=metrics,
        extra_files=[report_path],
        environment=env,
    )
    log.info(
        "wrote %s: top-1 %.2f%% vs %.2f%% float (drop %.2f points, agreement %.2f%%) on %d images of %s",
        out_path,
        100 * metrics["top1"],
        100 * metrics["parent_top1"],
        metrics["drop_points"],
        100 * metrics["agreement"],
        metrics["eval_count"],
        test.name,
    )
    return out_path


def _collect(prepared: Path, tensor: np.ndarray, methods: tuple[str, ...], config: Any, observers: list[Any]) -> dict[str, Any]:
    from rich.progress import Progress

    from calibration.reader import iter_batches
    from edge.quantize.ranges import collect_ranges

    with Progress(transient=True) as progress:
        task = progress.add_task(f"calibrating ({', '.join(methods)})", total=len(tensor))
        return collect_ranges(
            prepared,
            iter_batches(tensor, calibration_batch(tensor.shape[-1])),
            methods,
            config.op_types,
            config.activation_symmetric,
            progress=lambda n: progress.advance(task, n),
            observers=observers,
        )


def calibration_batch(input_size: int) -> int:
    """Images per calibration batch: bounded activation memory whatever the input size."""
    return int(np.clip(CALIBRATION_PIXELS // (input_size * input_size), 1, 256))


def _debug_images(spec: Any) -> int:
    return int(np.clip(DEBUG_PIXELS // (spec.input_size * spec.input_size), 4, 32))


def _best(tries: list[Try], max_drop: float) -> Try:
    """Within the drop budget the highest agreement (flips are a steadier signal than a small
    drop, which noise can even make negative), then the lowest drop, then the fewest float nodes."""
    scored = [t for t in tries if t.val] or tries
    return min(
        scored,
        key=lambda t: (
            t.val.get("drop_points", 0.0) > max_drop,
            -t.val.get("agreement", 1.0),
            t.val.get("drop_points", 0.0),
            len(t.excluded),
        ),
    )


def _choose(tries: list[Try], max_drop: float, min_agreement: float) -> Try:
    """The fastest try that fits the budget (within SPEED_TOLERANCE, the most accurate of those);
    when none fits, the most accurate (``_best``). Untimed tries count as equally fast."""
    fitting = [t for t in tries if t.fits(max_drop, min_agreement)]
    if not fitting:
        return _best(tries, max_drop)
    timed = [t.speedup for t in fitting if t.speedup is not None]
    if timed:
        floor = max(timed) * (1 - SPEED_TOLERANCE)
        fitting = [t for t in fitting if t.speedup is None or t.speedup >= floor]
    return _best(fitting, max_drop)


def _time_tries(parent: Path, tries: list[Try], spec: Any, tensor: np.ndarray) -> None:
    """Throughput of every try against the float parent at SPEED_BATCH, interleaved: tries that
    keep the same nodes in float share a graph and so a speed, and are timed once."""
    from edge.quantize.evaluate import interleaved_throughput

    groups: dict[tuple[str, ...], list[Try]] = {}
    for t in tries:
        groups.setdefault(tuple(t.excluded), []).append(t)
    batch = np.ascontiguousarray(np.resize(np.asarray(tensor[:SPEED_BATCH]), (SPEED_BATCH, *tensor.shape[1:])), np.float32)
    results = interleaved_throughput(
        [parent] + [members[0].path for members in groups.values()], spec, batch, rounds=SPEED_ROUNDS, window_s=SPEED_WINDOW_S
    )
    for members, result in zip(groups.values(), results[1:]):
        for t in members:
            t.speedup = result["ratio"]
    log.info(
        "speed at batch %d vs float: %s",
        SPEED_BATCH,
        ", ".join(f"{len(key)} float node(s) {r['ratio']:.2f}x" for key, r in zip(groups, results[1:])),
    )


def _exclude_worst(
    best: Try,
    layers: list[dict[str, Any]],
    attempt: Any,
    tries: list[Try],
    prepared: Path,
    debug_batches: list[np.ndarray],
    max_drop: float,
    min_agreement: float,
    max_excluded: int,
) -> tuple[Try, list[dict[str, Any]]]:
    """Keep the most sensitive nodes in float, doubling their number (1, 2, 4, ...) until the
    budget holds or ``max_excluded`` is reached. Ranking: weight sensitivity of the logits first
    (it finds the layers that flip predictions), then the layers losing the most activation SQNR."""
    sensitivity = weight_sensitivity(prepared, np.concatenate(debug_batches))
    ranked: list[str] = [row["node"] for row in sensitivity if row["logits_sqnr_db"] < SENSITIVE_DB]
    for layer in layers:
        for node in layer["keep_float"]:
            if node and node not in ranked:
                ranked.append(node)
    count = 1
    chosen = best
    while count <= min(max_excluded, len(ranked)):
        result = attempt(best.method, ranked[:count])
        if _best([chosen, result], max_drop) is result:
            chosen = result
        if result.fits(max_drop, min_agreement):
            break
        count *= 2
    if chosen is not best:
        layers = layer_errors(prepared, chosen.path, debug_batches)
    return chosen, layers


# ---- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory holding model.onnx (from `edge export`)")
    parser.add_argument(
        "--target", choices=TARGETS, required=True, help="cpu: ONNX Runtime (uint8 activations); trt: TensorRT (symmetric int8)"
    )
    parser.add_argument(
        "--method", choices=CHOICES, default="auto", help="calibration method; auto tries all on the val split (default)"
    )
    parser.add_argument(
        "--data",
        help="training data ('fashion-mnist' or an ImageFolder): calibration (when RUN/calibration is missing), val and test splits",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        help=f"top-1 budget in points against the float model (default {DEFAULT_MAX_DROP})",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"top-1 agreement auto aims for (default {DEFAULT_MIN_AGREEMENT})",
    )
    parser.add_argument(
        "--reduce-range", action="store_true", default=None, help="7-bit weights (default: on for x86 CPUs without VNNI)"
    )
    parser.add_argument("--no-reduce-range", dest="reduce_range", action="store_false", help="8-bit weights even without VNNI")
    parser.add_argument(
        "--val-limit",
        type=int,
        default=DEFAULT_VAL_LIMIT,
        help=f"val images auto chooses on (default {DEFAULT_VAL_LIMIT}; 0 = all)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=DEFAULT_EVAL_LIMIT,
        help=f"test images for acceptance (default {DEFAULT_EVAL_LIMIT}; 0 = the full test split)",
    )
    parser.add_argument("--calibration", help="calibration set .npy (default RUN/calibration/calibration.npy)")
    parser.add_argument(
        "--calib-size", type=int, default=512, help="images when a calibration set must be drawn here (default 512)"
    )
    parser.add_argument(
        "--max-excluded",
        type=int,
        default=DEFAULT_MAX_EXCLUDED,
        help=f"most nodes auto keeps in float (default {DEFAULT_MAX_EXCLUDED})",
    )
    parser.add_argument(
        "--weight-rounding",
        choices=ROUNDINGS,
        default="gptq",
        help="int8 weights: gptq rounds them to keep each layer's output close (default); nearest: plain rounding",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the val/test subsets and of a drawn calibration set")
    parser.add_argument("--out", help="output .onnx (default RUN/model.int8-<target>.onnx)")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from edge.artifacts import read_manifest

    path = quantize_run(
        args.run,
        target=args.target,
        method=args.method,
        data=args.data,
        max_drop=args.max_drop,
        min_agreement=args.min_agreement,
        reduce_range=args.reduce_range,
        val_limit=args.val_limit,
        eval_limit=args.eval_limit,
        calibration=args.calibration,
        calib_size=args.calib_size,
        seed=args.seed,
        max_excluded=args.max_excluded,
        out=args.out,
        weight_rounding=args.weight_rounding,
    )
    manifest = read_manifest(path)
    console = Console()
    prov, metrics = manifest.provenance, manifest.metrics
    if prov["val_set"]:
        tries = Table(title=f"auto: tries on {prov['val_set']}")
        for column in ("#", "method", "nodes in float", "val top-1", "drop (points)", "agreement", "speed vs float"):
            tries.add_column(column)
        for i, row in enumerate(prov["tries"]):
            chosen = row["method"] == prov["chosen_method"] and row["excluded"] == prov["nodes_excluded"]
            tries.add_row(
                f"{i}{' *' if chosen else ''}",
                row["method"],
                str(len(row["excluded"])),
                f"{100 * row['top1']:.2f}%",
                f"{row['drop_points']:.2f}",
                f"{100 * row['agreement']:.2f}%",
                f"{row['speedup']:.2f}x" if "speedup" in row else "-",
            )
        console.print(tries)
    layers = json.loads(path.with_name(prov["layer_report"]).read_text())["layers"][:WORST_LAYERS]
    worst = Table(title=f"{WORST_LAYERS} layers losing the most to quantization (full list in {prov['layer_report']})")
    for column in ("tensor", "producer", "SQNR lost dB", "SQNR vs float dB"):
        worst.add_column(column)
    for layer in layers:
        worst.add_row(
            layer["tensor"],
            f"{layer['producer']} ({layer['producer_op']})",
            f"{layer['loss_db']:.1f}",
            f"{layer['xmodel_err_db']:.1f}",
        )
    console.print(worst)
    result = Table(title=f"{path} ({'simulated on ONNX Runtime CPU' if metrics['simulated'] else 'ONNX Runtime CPU'})")
    for column in ("method", "top-1", "float top-1", "drop (points)", "agreement", "top-5", "images", "size", "accepted"):
        result.add_column(column)
    result.add_row(
        prov["chosen_method"] + (f" +{len(prov['nodes_excluded'])} float" if prov["nodes_excluded"] else ""),
        f"{100 * metrics['top1']:.2f}%",
        f"{100 * metrics['parent_top1']:.2f}%",
        f"{metrics['drop_points']:.2f}",
        f"{100 * metrics['agreement']:.2f}%",
        f"{100 * metrics['top5']:.2f}%",
        f"{metrics['eval_count']} {metrics['eval_source']}",
        f"{metrics['size_ratio']:.2f}x",
        "yes" if metrics["accepted"] else f"no (budget {prov['max_drop']})",
    )
    console.print(result)
    return 0
