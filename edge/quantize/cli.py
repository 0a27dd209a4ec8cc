"""INT8 static quantization of a run's ONNX model for ONNX Runtime CPU, TensorRT or OpenVINO.

    edge quantize RUN --target cpu|trt|openvino --method minmax|mean-minmax|entropy|percentile|auto --data DATA
                      [--max-drop 0.5] [--min-agreement 99] [--reduce-range]
                      [--weight-rounding gptq|nearest] [--no-bias-correction]
                      [--val-limit N] [--min-val-images N] [--eval-limit N]
                      [--sensitivity]
                      [--qat | --qat-if-needed] [--qat-steps N]

Writes RUN/model.int8-cpu.onnx, RUN/model.int8-trt.onnx or RUN/model.int8-openvino.onnx (QDQ; the
last one scored, timed and accepted on OpenVINO, which it is made for) with a manifest and a per-layer
error report (RUN/model.int8-<target>.layers.json). Calibration uses RUN/calibration (from
`edge calibrate`), or draws a set from --data's training split; the same pass collects the layer
inputs that GPTQ rounds the int8 weights with (``--weight-rounding``, edge/quantize/weights.py).
``--method auto`` tries every method on a validation split drawn from the training data, and when
the best drop exceeds --max-drop (or agreement falls short of --min-agreement) keeps layers in
float one more at a time, in the order of their measured effect on the val split (each layer
alone in float, paired flips against the float model with the gate's exact bounds:
edge/quantize/sensitivity.py; layers whose effect cannot be told from zero follow in the order of
their per-layer error), until the budget holds or --max-excluded layers are float; the manifest and
the printed table give each float layer's effect and, on target cpu, its cost in speed.
--sensitivity measures every quantized layer both ways (alone in float, alone quantized) and
writes model.int8-<target>.sensitivity.json and .png beside the model. On target cpu it then times
the tries that fit against the float model (ONNX Runtime, batch 8) and takes the fastest: a float
layer costs conversions at its borders, so full INT8 is usually the one to beat. The choice then
gets its biases corrected (each layer's per-channel mean output put back where the float model has
it, measured on calibration images: edge/quantize/bias.py; the graph and its speed do not change);
auto keeps the correction only when the val split ranks it ahead (within --max-drop first, then higher
agreement, then lower drop; a tie keeps the uncorrected model), a named --method takes it
(--no-bias-correction: never). auto refuses to
choose on fewer labelled val images than --min-val-images (default 200): on 5 images one flip is
20 points. Without labelled data it chooses on 24 unlabelled photos (agreement only).

Acceptance then compares the result with its float parent on the test split, which no choice has
seen: by default as many test images as resolve --max-drop (1100 for 0.5 points: the count `edge check`
asks for), or the whole split when it is smaller (a warning says what that set can resolve);
--eval-limit N takes N (0 = the whole split). The rule is `edge check`'s, on the same counts
(edge.measure.acceptance): the result is NOT accepted when the exact one-sided 95% lower bound of its
top-1 drop (paired flips: lost and gained images) exceeds --max-drop points, or when its top-1 flips
against the float parent show, at 95% confidence (exact one-sided binomial test), an agreement below
--min-agreement percent: 99% tolerates 15 flips on 1000 test images (98.5%), 5 on 200, 1 on 24 photos. Without
labelled data (scikit-image photos, for a pretrained ImageNet model) only the agreement is
measured and decides; top-1 and the drop are n/a. A result that is not accepted is still written,
marked `accepted: false` with the reason in its manifest, and the command exits 1 with that reason
on one line; `edge pack` and `edge engine` then refuse it unless --force, and `edge bench` marks
its row rejected. It never replaces an accepted model: where one is, the result goes beside it as
model.int8-<target>.rejected.onnx (with its manifest and layer report), which no other stage reads.
Any previous file a result replaces is kept under RUN/history/<UTC time>/ first. Accuracy of a target-trt model measured here is simulated: ONNX Runtime's CPU
kernels do not reproduce TensorRT's arithmetic.

--qat fine-tunes the run's checkpoint with fake quantization (NVIDIA Model Optimizer) on its pinned
train split first and quantizes that model (edge/quantize/qat.py, train/qat.py); --qat-if-needed does
it only when auto's PTQ choice misses the budget on val. By default it fits the float model's own
outputs (distillation, --qat-loss distill), since acceptance measures agreement with that model;
--qat-loss labels fits the labels. The manifest records the recipe (provenance.qat).

Exit status: 0 accepted, 1 written but not accepted, 2 a user error (nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edge.measure.acceptance import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT
from edge.quantize.options import (
    CHOICES,
    DEFAULT_CALIB_SIZE,
    DEFAULT_EVAL_LIMIT,
    DEFAULT_MAX_EXCLUDED,
    DEFAULT_MIN_VAL_IMAGES,
    DEFAULT_VAL_LIMIT,
    QAT_LOSSES,
    QuantizeOptions,
)
from edge.quantize.search import QuantizeSearch, na
from edge.quantize.targets import RUNTIME_NAMES, TARGETS
from edge.quantize.weights import ROUNDINGS
from edge.run import REJECTED_SUFFIX, RunDir
from edge.tracking import add_tracking_arguments, track_stage

WORST_LAYERS = 10


def quantize_run(
    run: str | os.PathLike[str],
    target: str = "cpu",
    method: str = "auto",
    data: str | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    reduce_range: bool | None = None,
    val_limit: int = DEFAULT_VAL_LIMIT,
    eval_limit: int | None = DEFAULT_EVAL_LIMIT,
    calibration: str | os.PathLike[str] | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    seed: int = 0,
    max_excluded: int = DEFAULT_MAX_EXCLUDED,
    out: str | os.PathLike[str] | None = None,
    weight_rounding: str = "gptq",
    min_val_images: int = DEFAULT_MIN_VAL_IMAGES,
    bias_correction: bool = True,
    sensitivity: bool = False,
    qat: bool = False,
    qat_if_needed: bool = False,
    qat_steps: int | None = None,
    qat_loss: str = "distill",
) -> Path:
    """Quantize RUN/model.onnx for ``target``, evaluate it against the float parent and write
    RUN/model.int8-<target>.onnx with its manifest; returns the path.

    ``data`` names the training data (calibration when RUN/calibration is missing, the val split
    for auto, the test split for acceptance); None means the run's pinned data, else unlabelled
    scikit-image photos (agreement only). ``max_drop`` is in points of top-1, ``min_agreement`` in
    percent: auto's budget on the val split and the acceptance rule on the test split
    (``edge.quantize.tries.judge``); a result that misses is written with ``accepted: false``
    (read its manifest). ``val_limit``/``eval_limit``: 0 = the whole split (``eval_limit`` None: as many as resolve ``max_drop``). ``weight_rounding``: ``gptq``
    (output-aware, the default) or ``nearest`` (quantize_static's own). ``bias_correction``: correct
    the chosen model's biases (``edge.quantize.bias``; auto keeps it when val scores it at least as
    well). ``sensitivity``: measure every layer's effect on the val split and write
    ``model.int8-<target>.sensitivity.json``/``.png`` beside the model. ``min_val_images``: auto
    refuses (UserError) to choose on fewer labelled val images (0: no floor). ``qat``: fine-tune the
    checkpoint with fake quantization first; ``qat_if_needed`` (auto): only when PTQ misses the budget
    on val; ``qat_steps``: optimizer steps instead of the recipe's epochs (``edge.quantize.qat``).
    The search itself is :class:`edge.quantize.search.QuantizeSearch`.
    """
    options = QuantizeOptions(
        target=target,
        method=method,
        data=data,
        max_drop=max_drop,
        min_agreement=min_agreement,
        reduce_range=reduce_range,
        val_limit=val_limit,
        eval_limit=eval_limit,
        calib_size=calib_size,
        seed=seed,
        max_excluded=max_excluded,
        weight_rounding=weight_rounding,
        min_val_images=min_val_images,
        bias_correction=bias_correction,
        sensitivity=sensitivity,
        qat=qat,
        qat_if_needed=qat_if_needed,
        qat_steps=qat_steps,
        qat_loss=qat_loss,
    )
    options.validate()
    run_dir = RunDir.open(run)
    with tempfile.TemporaryDirectory(prefix=f"edge-quantize-{target}-") as work:
        return QuantizeSearch(run_dir, options, Path(work), calibration=calibration, out=out).run()


# ---- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory holding model.onnx (from `edge export`)")
    parser.add_argument(
        "--target",
        choices=TARGETS,
        required=True,
        help="cpu: ONNX Runtime (uint8 activations); trt: TensorRT (symmetric int8); openvino: OpenVINO (symmetric, NNCF's placement)",
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
        help=f"top-1 budget in points against the float model: auto's target on val; not accepted when the "
        f"drop's 95%% lower bound on the test split exceeds it, as in edge check (default {DEFAULT_MAX_DROP:g})",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"top-1 agreement with the float model in percent: auto's target on val; not accepted when the "
        f"flips on the test split show a lower agreement at 95%% confidence (default {DEFAULT_MIN_AGREEMENT:g})",
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
        "--min-val-images",
        type=int,
        default=DEFAULT_MIN_VAL_IMAGES,
        help=f"auto refuses to choose on fewer labelled val images (default {DEFAULT_MIN_VAL_IMAGES}; 0 = no floor)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=DEFAULT_EVAL_LIMIT,
        help="test images for acceptance (default: as many as resolve --max-drop, 1100 for 0.5 points, or the whole "
        "split when smaller; 0 = the full test split)",
    )
    parser.add_argument("--calibration", help="calibration set .npy (default RUN/calibration/calibration.npy)")
    parser.add_argument(
        "--calib-size",
        type=int,
        default=DEFAULT_CALIB_SIZE,
        help=f"images when a calibration set must be drawn here (default {DEFAULT_CALIB_SIZE})",
    )
    parser.add_argument(
        "--max-excluded",
        type=int,
        default=DEFAULT_MAX_EXCLUDED,
        help=f"most layers auto keeps in float, one more at a time in the order of their measured effect "
        f"(a weighted op with its fused activation counts once; default {DEFAULT_MAX_EXCLUDED}; 0 = none)",
    )
    parser.add_argument(
        "--weight-rounding",
        choices=ROUNDINGS,
        default="gptq",
        help="int8 weights: gptq rounds them to keep each layer's output close (default); nearest: plain rounding",
    )
    parser.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put each layer's mean output back where the float model has it, on calibration images "
        "(default: on; auto keeps it only when the val split ranks it ahead: a tie keeps the uncorrected model)",
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="measure each quantized layer alone in float and alone quantized on the val split (paired flips, "
        "exact 95%% bounds) and write model.int8-<target>.sensitivity.json and .png beside the model",
    )
    qat = parser.add_argument_group("QAT: quantization-aware fine-tuning when PTQ is not enough (docs/quantize.md#qat)")
    qat.add_argument(
        "--qat",
        action="store_true",
        help="fine-tune the checkpoint with fake quantization (NVIDIA Model Optimizer) on the pinned train split first: "
        "about 10%% of the original epochs (at least one), 1%% of its learning rate, cosine",
    )
    qat.add_argument(
        "--qat-if-needed",
        action="store_true",
        help="with --method auto: QAT as the last resort, only when PTQ (float layers included) misses the budget on val",
    )
    qat.add_argument("--qat-steps", type=int, metavar="N", help="QAT optimizer steps instead of the recipe's epochs")
    qat.add_argument(
        "--qat-loss",
        choices=QAT_LOSSES,
        default="distill",
        help="what QAT fits: distill (default) the float model's own outputs (KL divergence, Model Optimizer's "
        "LogitsDistillationLoss), which is what acceptance measures (agreement); labels: cross-entropy on the labels",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the val/test subsets and of a drawn calibration set")
    parser.add_argument("--out", help="output .onnx (default RUN/model.int8-<target>.onnx)")
    add_tracking_arguments(parser, models=True)


def run(args: argparse.Namespace) -> int:
    """Quantize, print the tables; exit 1 (one line on stderr) when the result is not accepted."""
    import sys

    from edge.console import make_console
    from edge.manifest import read_manifest

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
        min_val_images=args.min_val_images,
        bias_correction=args.bias_correction,
        sensitivity=args.sensitivity,
        qat=args.qat,
        qat_if_needed=args.qat_if_needed,
        qat_steps=args.qat_steps,
        qat_loss=args.qat_loss,
    )
    manifest = read_manifest(path)
    console = make_console()
    if manifest.provenance["val_set"]:
        console.print(tries_table(manifest.provenance))
    console.print(worst_layers_table(path, manifest.provenance))
    if manifest.provenance.get("sensitivity"):
        console.print(sensitivity_table(path.with_name(manifest.provenance["sensitivity"])))
    if manifest.provenance.get("fallback"):
        console.print(fallback_table(manifest.provenance["fallback"]))
    console.print(result_table(path, manifest.provenance, manifest.metrics))
    track_stage(args, "quantize", args.run, artifact=path)
    if not manifest.metrics["accepted"]:
        where = f"{path.name} written"
        if path.name.endswith(REJECTED_SUFFIX):  # an accepted model was there: it stays
            accepted = path.with_name(path.name.removesuffix(REJECTED_SUFFIX) + ".onnx")
            where = f"written beside the accepted {accepted.name}, which is unchanged, as {path}"
        print(f"edge quantize: not accepted: {manifest.metrics['reason']}; {where}, marked accepted: false", file=sys.stderr)
        return 1
    return 0


def tries_table(prov: dict[str, Any]) -> Any:
    """auto's tries on the val split, the chosen one starred."""
    from edge.console import make_table

    count = prov.get("val_count")
    tries = make_table(
        "#",
        "method",
        "nodes in float",
        "biases",
        "val top-1",
        "drop (points)",
        "agreement",
        "speed vs float",
        title=f"auto: tries on {prov['val_set']}" + (f" ({count} images)" if count is not None else ""),
    )
    corrected = prov.get("bias_correction") is not None
    for i, row in enumerate(prov["tries"]):
        chosen = (row["method"], row["excluded"], row.get("bias_corrected", False), row.get("qat", False)) == (
            prov["chosen_method"],
            prov["nodes_excluded"],
            corrected,
            prov.get("qat") is not None,
        )
        tries.add_row(
            f"{i}{'*' if chosen else ''}",
            row["method"] + (" (QAT)" if row.get("qat") else ""),
            str(len(row["excluded"])),
            "corrected" if row.get("bias_corrected") else "quantized",
            na(row.get("top1"), "{:.2f}%"),
            na(row.get("drop_points"), "{:.2f}"),
            f"{row['agreement']:.2f}%",
            f"{row['speedup']:.2f}x" if "speedup" in row else "-",
        )
    return tries


def worst_layers_table(path: Path, prov: dict[str, Any]) -> Any:
    """The WORST_LAYERS layers of the per-layer report that lose the most SQNR."""
    from edge.console import make_table

    layers = json.loads(path.with_name(prov["layer_report"]).read_text())["layers"][:WORST_LAYERS]
    worst = make_table(
        "tensor",
        "producer",
        "SQNR lost dB",
        "SQNR vs float dB",
        title=f"{WORST_LAYERS} layers losing the most to quantization (full list in {prov['layer_report']})",
    )
    for layer in layers:
        worst.add_row(
            layer["tensor"],
            f"{layer['producer']} ({layer['producer_op']})",
            f"{layer['loss_db']:.1f}",
            f"{layer['xmodel_err_db']:.1f}",
        )
    return worst


def _interval(cost: dict[str, Any] | None) -> str:
    return "n/a" if cost is None else f"{cost['points']:+.2f} [{cost['lower']:+.2f}, {cost['upper']:+.2f}]"


def sensitivity_table(report_path: Path) -> Any:
    """The WORST_LAYERS layers of a sensitivity report, ranked, and how many cannot be told from zero."""
    from edge.console import make_table
    from edge.quantize.sensitivity import HURTS

    report = json.loads(report_path.read_text())
    rows = report["layers"]
    columns = ["layer", "op", "float-only effect"] + [f"{v.replace('_', '-')} agreement cost (pts)" for v in report["variants"]]
    if report["labelled"]:
        columns.append("float-only top-1 cost (pts)")
    hurt = len(report["groups"][HURTS])
    table = make_table(
        *columns,
        title=f"per-layer sensitivity on {report['n']} val images ({report['val_set']}), {report['confidence']:.0%} "
        f"bounds: {hurt} hurt, {len(rows) - hurt} cannot be told from zero or help (smallest detectable "
        f"{report['smallest_detectable_points']:.2f} pts; full list in {report_path.name})",
    )
    for row in rows[: max(WORST_LAYERS, hurt)]:
        if row["group"] != HURTS and hurt and row is rows[hurt]:
            table.add_row(
                f"... {len(rows) - hurt} layers {row['group']} (one group, graph order)", "", "", *[""] * (len(columns) - 3)
            )
        cells = [row["layer"], row["op"], row["group"]] + [_interval(row[v]["agreement"]) for v in report["variants"]]
        if report["labelled"]:
            cells.append(_interval(row["float_only"]["top1"]))
        table.add_row(*cells)
    return table


def _order_name(fallback: dict[str, Any]) -> str:
    if fallback["ranking"].startswith("measured"):
        first = fallback.get("first_pass")
        return "measured effect" + (f" (after {len(first)} in per-layer-error order missed)" if first else "")
    return "per-layer error"


def fallback_table(fallback: dict[str, Any]) -> Any:
    """auto's layers in float, in the order tried: measured effect, val figures, speed cost."""
    from edge.console import make_table

    table = make_table(
        "#",
        "layer in float",
        "effect on val (agreement pts)",
        "val agreement",
        "val drop (points)",
        "speed vs float",
        "speed cost",
        title=f"auto: layers kept in float in order of {_order_name(fallback)} on {fallback['val_count']} val images "
        f"(stopped: {fallback['stopped']}; at most {fallback['max_excluded']})",
    )
    for i, step in enumerate(fallback["layers"], 1):
        measured = step["effect_points"] is not None
        effect = {"points": step["effect_points"], "lower": step["effect_lower"], "upper": step["effect_upper"]}
        table.add_row(
            f"{i}{'*' if step['chosen'] else ''}",
            step["layer"],
            f"{_interval(effect)} {step['group']}" if measured else "n/a (not measured)",
            na(step["val_agreement"], "{:.2f}%"),
            na(step["val_drop_points"], "{:.2f}"),
            na(step["speedup"], "{:.2f}x"),
            na(step["speed_cost_pct"], "{:+.1f}%"),
        )
    return table


def result_table(path: Path, prov: dict[str, Any], metrics: dict[str, Any]) -> Any:
    """The written model against its float parent on the test split (percentages, drop in points)."""
    from edge.console import make_table

    result = make_table(
        "method",
        "top-1",
        "float top-1",
        "drop (points)",
        "agreement",
        "top-5",
        "images",
        "size",
        "accepted",
        title=f"{path} ({'simulated on ' if metrics['simulated'] else ''}{RUNTIME_NAMES[metrics.get('runtime') or 'onnxruntime']} CPU)",
    )
    result.add_row(
        prov["chosen_method"]
        + (f" +{len(prov['nodes_excluded'])} float" if prov["nodes_excluded"] else "")
        + (" +bias" if prov.get("bias_correction") else "")
        + (f" +QAT ({prov['qat']['steps']} steps)" if prov.get("qat") else ""),
        na(metrics["top1"], "{:.2f}%"),
        na(metrics["parent_top1"], "{:.2f}%"),
        na(metrics["drop_points"], "{:.2f}"),
        f"{metrics['agreement']:.2f}% ({metrics['flips']} flips)",
        na(metrics["top5"], "{:.2f}%"),
        f"{metrics['eval_count']} {metrics['eval_source']}",
        f"{metrics['size_ratio']:.2f}x",
        "yes" if metrics["accepted"] else "NO",
    )
    return result
