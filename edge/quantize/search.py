"""The accuracy-aware search behind `edge quantize`, from one calibration pass to the written model.

A :class:`QuantizeSearch` quantizes one run's float model for one target:

1. one pass over the calibration set collects every method's activation ranges
   (``edge.quantize.ranges``) and the layer inputs GPTQ rounds the weights with
   (``edge.quantize.weights``);
2. each method gives a :class:`Try`: a QDQ model (``edge.quantize.targets``) scored against the
   float parent on the val split (``edge.quantize.evaluate``);
3. while no try fits the :class:`Budget` (a drop in points, an agreement in percent), layers stay
   in float one more at a time, in the order of their measured effect on the val split
   (``edge.quantize.sensitivity``: each layer alone in float, paired flips with the gate's bounds;
   the layers whose effect cannot be told from zero follow in the order of their per-layer error),
   until the budget holds or ``max_excluded`` layers are in float; ``--sensitivity`` measures every
   layer both ways and writes the report beside the model even when nothing needs to stay float;
4. on target cpu the tries are timed against the float model and the fastest that fits is taken;
5. the choice gets its biases corrected (``edge.quantize.bias``: each layer's mean output put back
   where the float model has it) and, under auto, keeps the correction when the val split scores it
   better (:meth:`Budget.best`; a tie keeps the uncorrected model);
6. the choice is judged on the test split (:func:`judge`: :mod:`edge.measure.acceptance`, the rule
   `edge check` applies, on as many test images as resolve the budget), and the model, its per-layer error
   report and its manifest (``accepted``, and the ``reason`` when not) are written either way: the
   previous ones go to RUN/history/<time>/ first, and a result not accepted never replaces an
   accepted model (it is written beside it, ``model.int8-<target>.rejected.onnx``).

With ``--qat`` the float model the steps above quantize is first fine-tuned with fake quantization
(``edge.quantize.qat``); with ``--qat-if-needed`` (auto) that happens only when the PTQ choice misses
the budget on val, and the search runs again from the fine-tuned model (:meth:`QuantizeSearch.qat_if_needed`).

What the user asked for and its checks are ``edge.quantize.options``; the tries, the budget and the
verdict ``edge.quantize.tries``. ``quantize_run`` and `edge quantize` (``edge.quantize.cli``) are the
entry points.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edge.artifact_spec import artifact_spec
from edge.atomic import atomic_path, atomic_write_json
from edge.environment import environment_fingerprint
from edge.errors import UserError
from edge.export import load_onnx_checked
from edge.history import history_root, keeping_previous
from edge.manifest import manifest_path, read_manifest, write_manifest
from edge.measure.acceptance import (
    acceptance_count,
    resolution_line,
)
from edge.measure.paired import CONFIDENCE, flips_from_counts, resolves
from edge.quantize.bias import bias_images, correct_biases
from edge.quantize.evaluate import (
    EvalSet,
    compare,
    eval_set_from_data,
    eval_set_from_photos,
    interleaved_throughput,
    layer_errors,
    predict,
    weight_sensitivity,
)
from edge.quantize.options import PHOTO_EVAL_COUNT, QuantizeOptions, check_val_size
from edge.quantize.sensitivity import (
    VARIANTS,
    Layer,
    fallback_order,
    measure_sensitivity,
    quantized_layers,
    sensitivity_paths,
    variant,
    write_sensitivity,
)
from edge.quantize.targets import (
    RUNTIME_NAMES,
    check_tensorrt_rules,
    default_reduce_range,
    prepare_float_model,
    quantize_onnx,
    target_backend,
    target_config,
)
from edge.quantize.tries import Acceptance, Try, judge
from edge.quantize.weights import GPTQRounding, InputStatistics
from edge.run import RunDir, layer_report_name, rejected_name
from edge.spec import PreprocessSpec
from edge.verify import verify_artifact

if TYPE_CHECKING:
    from calibration.sets import CalibrationSet

log = logging.getLogger(__name__)

DEBUG_PIXELS = 32 * 64 * 64  # per-layer report: 32 images at 64 px, fewer at larger sizes (it keeps every tensor)
DEBUG_BATCH = 16
SPEED_BATCH = 8
SPEED_ROUNDS = 5
SPEED_WINDOW_S = 0.2
SENSITIVE_DB = 40.0  # logits SQNR below which a layer's int8 weights are worth keeping in float


class QuantizeSearch:
    """One quantization of a run's float model for one target; the tries live in ``work``.

    Construction resolves the inputs (the float model, its spec, the calibration set) and makes the
    one calibration pass; :meth:`run` searches, accepts and writes."""

    def __init__(
        self,
        run: RunDir,
        options: QuantizeOptions,
        work: Path,
        calibration: str | os.PathLike[str] | None = None,
        out: str | os.PathLike[str] | None = None,
    ):
        self.options = options = _with_run_data(run, options)
        self.run_dir = run
        self.budget = options.budget
        self.work = work
        self.parent = run.onnx
        verify_artifact(run.require(self.parent, f"export the model first: `edge export {run.root}`"))  # still its manifest's
        load_onnx_checked(self.parent)
        self.spec = artifact_spec(self.parent)
        self.config = target_config(options.target, self.parent)
        self.backend = target_backend(options.target)  # where the INT8 tries run: the target's runtime
        self.reduce_range = options.weights_reduce_range()
        self.out_path = Path(out) if out else run.int8(options.target)
        self.started = time.perf_counter()
        self.val = self.eval_set("val", options.val_limit) if options.auto or options.sensitivity else None
        if self.val is not None and options.auto:
            check_val_size(self.val, options)  # before the calibration pass: refuse early
        self.calib = calibration_set(run, calibration, options, self.spec)
        self.files = 0  # models written into ``work`` (try-N.onnx)
        self.qat: dict[str, Any] | None = None  # the QAT recipe while the tries quantize a fine-tuned model
        self.qat_last_resort: str | None = None  # --qat-if-needed: what became of it
        float_model = self.fine_tune() if options.qat else self.parent
        self.prepared = prepare_float_model(float_model, work / "float.onnx")
        self.ranges, self.rounding = self._calibrate()
        self.calibrated_s = self.elapsed()
        self.val_parent = predict(self.parent, self.spec, self.val.tensor) if self.val is not None else None
        self.debug_batches = [
            np.ascontiguousarray(self.calib.tensor[i : i + DEBUG_BATCH], dtype=np.float32)
            for i in range(0, min(debug_images(self.spec), len(self.calib)), DEBUG_BATCH)
        ]
        self.tries: list[Try] = []
        self.sensitivity: dict[str, Any] | None = None  # measure_sensitivity()'s report, when measured
        self.fallback: list[tuple[Layer, Try]] = []  # the layers put in float one at a time, with each try
        self.first_pass: list[tuple[Layer, Try]] = []  # the per-layer-error pass, when the measured one followed it
        self.fallback_base: Try | None = None  # the full-INT8 try the fallback started from

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run(self) -> Path:
        """Search, accept the choice on the test split, write the model, its layer report and its
        manifest (the previous ones kept in RUN/history/<time>/; a result not accepted goes beside an
        accepted model instead: :func:`result_path`); returns the model's path."""
        best, layers = self.search()
        if self.options.qat_if_needed:
            best, layers = self.qat_if_needed(best, layers)
        searched_s = self.elapsed()  # calibration + quantization, before acceptance
        acceptance = self.accept(best)
        self.out_path = result_path(self.out_path, acceptance.accepted)
        # in the order written; a sensitivity report of an earlier model goes to history even when
        # none is measured now, so none is left beside a model it does not describe
        replaced = [*sensitivity_paths(self.out_path), self.out_path.with_name(layer_report_name(self.out_path)), self.out_path]
        with keeping_previous(history_root(self.out_path, self.run_dir.root), replaced, "edge quantize replaces them"):
            if self.sensitivity is not None:
                extra = write_sensitivity(self.sensitivity, self.out_path)
            else:
                extra = []
                for stale in sensitivity_paths(self.out_path):
                    stale.unlink(missing_ok=True)
            report_path = self.write_model(best, layers)
            self.write_manifest(best, acceptance, report_path, searched_s, extra)
        return self.out_path

    # ---- calibration and tries -----------------------------------------------------------

    def _calibrate(self) -> tuple[dict[str, Any], GPTQRounding | None]:
        """Every method's ranges and, for GPTQ, the layers' inputs: one pass over the calibration set."""
        stats = None
        if self.options.weight_rounding == "gptq" and self.qat is None:  # QAT's weights keep their trained grid
            stats = InputStatistics(onnx.load(str(self.prepared)), seed=self.options.seed)
        ranges = self._collect_ranges([stats] if stats is not None else [])
        return ranges, GPTQRounding(stats) if stats is not None else None

    def _collect_ranges(self, observers: list[Any]) -> dict[str, Any]:
        from calibration.reader import iter_batches
        from edge.console import make_progress
        from edge.quantize.ranges import calibration_batch, collect_ranges

        tensor = self.calib.tensor
        with make_progress(transient=True, unit="images") as progress:
            task = progress.add_task(f"calibrating ({', '.join(self.options.methods)})", total=len(tensor))
            return collect_ranges(
                self.prepared,
                iter_batches(tensor, calibration_batch(tensor.shape[-1])),
                self.options.methods,
                self.config.op_types,
                self.config.activation_symmetric,
                progress=lambda n: progress.advance(task, n),
                observers=observers,
                unsigned_where_nonnegative=self.config.unsigned_where_nonnegative,
            )

    def eval_set(self, split: str, limit: int) -> EvalSet:
        """``limit`` images of a split of --data (0 = all), or without data the scikit-image photo
        set of the same role (disjoint from the calibration photos and from each other)."""
        if self.options.data is None:
            count = min(limit or PHOTO_EVAL_COUNT, PHOTO_EVAL_COUNT)
            return eval_set_from_photos(count, self.spec, role=split, seed=self.options.seed)
        return eval_set_from_data(self.run_dir.root, self.options.data, split, limit or None, self.spec, seed=self.options.seed)

    def attempt(self, method: str, excluded: list[str]) -> Try:
        """Quantize with ``method``'s ranges and the ``excluded`` nodes in float, round the weights,
        and (auto) score the result on the val split."""
        path = quantize_onnx(
            self.prepared, self.work_file(), self.options.target, self.ranges[method], self.reduce_range, excluded
        )
        result = Try(method, excluded, path, qat=self.qat is not None)
        if self.rounding is not None:
            result.rounding = self.rounding.apply(path)
        return self._scored(result)

    def attempt_float(self, base: Try, layers: list[Layer]) -> Try:
        """``base`` with ``layers`` in float, scored on the val split: derived from ``base``'s QDQ model
        as the sensitivity variants are (``edge.quantize.sensitivity.variant``: each layer reads float
        inputs and float weights, every other layer keeps its ranges and rounded weights), so the
        fallback keeps in float exactly what was measured. ``nodes_to_exclude`` would not: a layer it
        excludes still reads its input through the Q/DQ pair its quantized producer writes."""
        import onnx

        path = self.work / f"try-{len(self.tries)}.onnx"
        floated = {layer.node for layer in layers}
        model = variant(onnx.load(str(base.path)), self.float_model, lambda reader, source: reader not in floated)
        onnx.save(model, str(path))
        excluded = [node for layer in layers for node in layer.exclude]
        return self._scored(Try(base.method, excluded, path, rounding=dict(base.rounding)))

    @functools.cached_property
    def float_model(self) -> Any:
        """The prepared float model, loaded once for the fallback's variants."""
        return onnx.load(str(self.prepared))

    def corrected(self, chosen: Try) -> Try:
        """A copy of ``chosen`` with its biases corrected on the first calibration images
        (``edge.quantize.bias``), scored on the val split like every try."""
        path = self.work_file()
        count = bias_images(self.spec.input_size)
        from edge.console import make_progress

        with make_progress(transient=True, unit="layers") as progress:
            task = progress.add_task("correcting biases", total=None)
            bias = correct_biases(
                self.prepared,
                chosen.path,
                np.asarray(self.calib.tensor[:count]),
                out=path,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        log.info(
            "bias correction: %d layers on %d calibration images, largest mean shift %s",
            bias["layers"],
            bias["images"],
            bias["largest_shift"],
        )
        return self._scored(dataclasses.replace(chosen, excluded=list(chosen.excluded), path=path, val={}, bias=bias))

    def work_file(self) -> Path:
        self.files += 1
        return self.work / f"try-{self.files - 1}.onnx"

    def _scored(self, result: Try) -> Try:
        """``result`` scored on the val split (auto) and added to the tries."""
        if self.val is not None and self.val_parent is not None:
            logits = predict(result.path, self.spec, self.val.tensor, backend=self.backend)
            result.val, result.val_top1 = compare(self.val_parent, logits, self.val.labels), logits.argmax(1)
            log.info(
                "try %d: %s, %d node(s) in float%s: val top-1 %s, drop %s points, agreement %.2f%%",
                len(self.tries),
                result.method,
                len(result.excluded),
                ", biases corrected" if result.bias is not None else "",
                na(result.val["top1"], "{:.2f}%"),
                na(result.val["drop_points"], "{:.2f}"),
                result.val["agreement"],
            )
        self.tries.append(result)
        return result

    # ---- the search ----------------------------------------------------------------------

    def search(self) -> tuple[Try, list[dict[str, Any]]]:
        """The chosen try and its per-layer errors: every method, then (auto) layers in float while
        the budget does not hold, then (auto, target cpu) the fastest try that fits."""
        for method in self.options.methods:
            self.attempt(method, [])
        best = self.budget.best(self.tries)
        layers = self.layer_errors(best)
        missed = self.options.auto and not self.budget.fits(best) and self.options.max_excluded > 0
        if self.options.sensitivity:
            self.sensitivity = self.measure_sensitivity(best)
        if missed:
            best, layers = self.exclude_ranked(best, layers)
        if self.options.auto and self.options.target != "trt":  # TensorRT's speed is not measurable here
            self.time_tries()
            fastest = self.budget.fastest(self.tries)
            if fastest is not best:
                best, layers = fastest, self.layer_errors(fastest)
        if self.options.bias_correction:
            corrected = self.corrected(best)
            # auto: kept when val scores it better (a tie keeps the uncorrected); a named
            # method has no val split to ask, and takes it.
            if not self.options.auto or self.budget.best([best, corrected]) is corrected:
                best, layers = corrected, self.layer_errors(corrected)
        return best, layers

    def layer_errors(self, chosen: Try) -> list[dict[str, Any]]:
        return layer_errors(self.prepared, chosen.path, self.spec, self.debug_batches)

    def measure_sensitivity(self, base: Try) -> dict[str, Any]:
        """Each quantized layer of ``base`` alone in float (and, with --sensitivity, alone quantized),
        scored on the val split against the float model (``edge.quantize.sensitivity``)."""
        assert self.val is not None and self.val_parent is not None
        variants = VARIANTS if self.options.sensitivity else VARIANTS[:1]
        report = measure_sensitivity(
            self.prepared,
            base.path,
            self.spec,
            self.val,
            self.val_parent,
            self.work,
            variants,
            base_top1=base.val_top1,
            backend=self.backend,
        )
        report.update(target=self.options.target, method=base.method)
        log.info(
            "sensitivity of %d layers on %d val images in %.1f s: %d hurt, %d indistinguishable from zero, %d help",
            len(report["layers"]),
            report["n"],
            report["wall_s"],
            *(len(names) for names in report["groups"].values()),
        )
        return report

    def fallback_layers(self, best: Try, layers: list[dict[str, Any]]) -> list[Layer]:
        """The order layers go to float: measured effect first, per-layer error among the rest; before
        any measurement (no --sensitivity), per-layer error alone."""
        prior = self.float_ranking(layers)
        if self.sensitivity is not None:
            return fallback_order(self.sensitivity, prior)
        import onnx

        quantized = quantized_layers(onnx.load(str(best.path)), self.float_model)
        rank: dict[str, int] = {}
        for i, node in enumerate(prior):
            rank.setdefault(node, i)
        ranked = [layer for layer in quantized if any(node in rank for node in layer.exclude)]
        return sorted(ranked, key=lambda layer: min(rank[node] for node in layer.exclude if node in rank))

    def exclude_ranked(self, best: Try, layers: list[dict[str, Any]]) -> tuple[Try, list[dict[str, Any]]]:
        """Keep layers in float one more at a time until the budget holds on val or ``max_excluded``
        layers are float; returns the best of those tries (:meth:`Budget.best`) and its per-layer errors.

        Without --sensitivity the first pass goes in per-layer-error order, which costs nothing to
        rank (a model that quantizes well, like the demo's, stops there after a try or two); when it
        misses the budget, each layer's effect alone in float is measured on val
        (:meth:`measure_sensitivity`: one val pass per layer) and a second pass goes in that order."""
        self.fallback_base = best
        chosen = self._exclude_in_order(best, self.fallback_layers(best, layers))
        if self.sensitivity is None and not self.budget.fits(chosen):
            log.info(
                "per-layer-error order missed the budget with %d layer(s) in float: measuring each layer's effect",
                len(self.fallback),
            )
            self.first_pass, self.fallback = self.fallback, []
            self.sensitivity = self.measure_sensitivity(best)
            second = self._exclude_in_order(best, self.fallback_layers(best, layers))
            chosen = self.budget.best([chosen, second])
        if chosen is not best:
            layers = self.layer_errors(chosen)
        return chosen, layers

    def _exclude_in_order(self, best: Try, order: list[Layer]) -> Try:
        chosen = best
        for count in range(1, min(self.options.max_excluded, len(order)) + 1):
            result = self._tried(best, order[:count]) or self.attempt_float(best, order[:count])
            self.fallback.append((order[count - 1], result))
            if self.budget.best([chosen, result]) is result:
                chosen = result
            if self.budget.fits(result):
                break
        return chosen

    def _tried(self, base: Try, layers: list[Layer]) -> Try | None:
        """The try of an earlier pass that kept the same layers of ``base`` in float, if any (the two
        passes often start alike: it is not built and scored twice)."""
        floated = sorted(node for layer in layers for node in layer.exclude)
        return next(
            (
                t
                for t in self.tries
                if (t.method, t.qat) == (base.method, base.qat) and t.bias is None and sorted(t.excluded) == floated
            ),
            None,
        )

    def float_ranking(self, layers: list[dict[str, Any]]) -> list[str]:
        """Nodes worth keeping in float, most first: weight sensitivity of the logits first (it
        finds the layers that flip predictions), then the layers losing the most activation SQNR."""
        sensitivity = weight_sensitivity(self.prepared, self.spec, np.concatenate(self.debug_batches))
        ranked: list[str] = [row["node"] for row in sensitivity if row["logits_sqnr_db"] < SENSITIVE_DB]
        for layer in layers:
            for node in layer["keep_float"]:
                if node and node not in ranked:
                    ranked.append(node)
        return ranked

    def time_tries(self) -> None:
        """Throughput of every try against the float parent at SPEED_BATCH, interleaved: tries that
        keep the same nodes in float share a graph and so a speed, and are timed once."""
        groups: dict[tuple[str, ...], list[Try]] = {}
        for t in self.tries:
            groups.setdefault(tuple(t.excluded), []).append(t)
        tensor = self.calib.tensor
        batch = np.ascontiguousarray(np.resize(np.asarray(tensor[:SPEED_BATCH]), (SPEED_BATCH, *tensor.shape[1:])), np.float32)
        results = interleaved_throughput(
            [self.parent] + [members[0].path for members in groups.values()],
            self.spec,
            batch,
            rounds=SPEED_ROUNDS,
            window_s=SPEED_WINDOW_S,
            backend=self.backend,
        )
        for members, result in zip(groups.values(), results[1:]):
            for t in members:
                t.speedup = result["ratio"]
        log.info(
            "speed at batch %d vs float: %s",
            SPEED_BATCH,
            ", ".join(f"{len(key)} float node(s) {r['ratio']:.2f}x" for key, r in zip(groups, results[1:])),
        )

    # ---- QAT (edge.quantize.qat) ---------------------------------------------------------

    def fine_tune(self) -> Path:
        """The run's checkpoint fine-tuned with fake quantization, exported into ``work``; sets ``self.qat``."""
        from edge.quantize.qat import qat_float_model

        bits = 7 if self.reduce_range else 8  # ORT's reduced-range weights: QAT trains on their grid
        path, self.qat = qat_float_model(
            self.run_dir, self.calib, self.work, bits, self.options.qat_steps, self.options.data, self.options.qat_loss
        )
        return path

    def qat_if_needed(self, ptq: Try, layers: list[dict[str, Any]]) -> tuple[Try, list[dict[str, Any]]]:
        """auto's last resort (--qat-if-needed): when the PTQ choice misses the budget on val, fine-tune
        with fake quantization and search again from that model; the QAT choice is taken when val
        ranks it ahead of PTQ's."""
        if self.budget.fits(ptq):
            self.qat_last_resort = "not needed: PTQ fits the budget on val"
            return ptq, layers
        log.info("PTQ misses the budget on val (%s): fine-tuning with fake quantization (--qat-if-needed)", ptq.row())
        self.prepared = prepare_float_model(self.fine_tune(), self.work / "qat-float.prepared.onnx")
        self.ranges, self.rounding = self._calibrate()
        ptq_tries, self.tries = self.tries, []
        best, qat_layers = self.search()
        self.tries = ptq_tries + self.tries
        if self.budget.best([ptq, best]) is best:
            self.qat_last_resort = "taken: PTQ missed the budget on val and QAT scored better"
            return best, qat_layers
        self.qat_last_resort = "not taken: QAT scored no better than PTQ on val"
        self.qat = None
        return ptq, layers

    # ---- acceptance and the written result -----------------------------------------------

    def accept(self, best: Try) -> Acceptance:
        """The chosen model against its float parent on the test split (and, target trt, TensorRT's
        Q/DQ rules), judged by :func:`judge`; a result that misses is still written, marked
        ``accepted: false`` with the reason."""
        test = self.acceptance_set()
        figures = compare(
            predict(self.parent, self.spec, test.tensor),
            predict(best.path, self.spec, test.tensor, backend=self.backend),
            test.labels,
        )
        if self.options.target == "trt":
            problems = check_tensorrt_rules(best.path)
            if problems:
                raise RuntimeError(f"target-trt model breaks TensorRT's Q/DQ rules: {problems[:3]}")
        if figures["lost"] is not None:
            paired = flips_from_counts(len(test), figures["lost"], figures["gained"], len(test) - figures["flips"], CONFIDENCE)
            figures.update(
                drop_lower_points=paired.drop_lower_points,
                drop_upper_points=paired.drop_upper_points,
                confidence=CONFIDENCE,
                resolves_budget=resolves(len(test), self.options.max_drop),
            )
        what = "test images" if test.labels is not None else "unlabelled test photos"
        reason, limit = judge(figures, self.options.max_drop, self.options.min_agreement, what)
        return Acceptance(test.name, figures, reason is None, reason, limit)

    def acceptance_set(self) -> EvalSet:
        """The test images acceptance is judged on: --eval-limit, else as many as resolve --max-drop
        (the gate's own count, :func:`edge.measure.acceptance.acceptance_count`), or the whole split
        when it is smaller; one line says when the set cannot resolve the budget."""
        limit = self.options.eval_limit
        needed = acceptance_count(self.options.max_drop) if limit is None else limit
        test = self.eval_set("test", needed or 0)
        if test.labels is not None and not resolves(len(test), self.options.max_drop):
            short = "the whole test split" if limit is None else f"--eval-limit {limit}"
            log.warning(
                "acceptance on %d test images (%s): %s", len(test), short, resolution_line(len(test), self.options.max_drop)
            )
        return test

    def write_model(self, best: Try, layers: list[dict[str, Any]]) -> Path:
        """The per-layer error report beside the output, then the chosen model; returns the report's path."""
        report_path = self.out_path.with_name(layer_report_name(self.out_path))
        atomic_write_json(
            report_path,
            {
                "model": self.out_path.name,
                "images": sum(len(b) for b in self.debug_batches),
                "metric": "SQNR dB (higher is better); loss_db = SQNR the producing node loses",
                "layers": layers,
            },
        )
        with atomic_path(self.out_path) as staged:
            shutil.copyfile(best.path, staged)
        return report_path

    def write_manifest(
        self, best: Try, acceptance: Acceptance, report_path: Path, searched_s: float, extra: list[Path] | None = None
    ) -> None:
        env = environment_fingerprint()
        metrics = {
            **acceptance.figures,
            "eval_source": acceptance.source,
            "size_ratio": self.out_path.stat().st_size / self.parent.stat().st_size,
            "simulated": self.options.target == "trt",
            "runtime": self.backend,  # the INT8 model's: tries, speed and acceptance ran there
            "accepted": acceptance.accepted,
            "reason": acceptance.reason,
            "max_flips": acceptance.max_flips,
            "val_count": len(self.val) if self.val is not None else None,  # the n auto chose on
            "calibration_s": round(self.calibrated_s, 2),
            "quantization_s": round(searched_s, 2),
            "total_s": round(self.elapsed(), 2),
        }
        write_manifest(
            self.out_path,
            f"onnx-int8-{self.options.target}",
            self.spec,
            parent=self.parent,
            provenance=self.provenance(best, env, report_path),
            metrics=metrics,
            extra_files=[report_path, *(extra or [])],
            environment=env,
        )
        log.info(
            "wrote %s: top-1 %s vs %s float (drop %s points, agreement %.2f%%) on %d images of %s: %s",
            self.out_path,
            na(metrics["top1"], "{:.2f}%"),
            na(metrics["parent_top1"], "{:.2f}%"),
            na(metrics["drop_points"], "{:.2f}"),
            metrics["agreement"],
            metrics["eval_count"],
            acceptance.source,
            "accepted" if acceptance.accepted else f"NOT accepted ({acceptance.reason})",
        )

    def provenance(self, best: Try, env: dict[str, Any], report_path: Path) -> dict[str, Any]:
        """How the model was made: target settings, the choice and every try, calibration, budget."""
        target = self.options.target
        return {
            **self.config.describe(),
            "method": self.options.method,
            "chosen_method": best.method,
            "nodes_excluded": best.excluded,
            "bias_correction": best.bias,
            "reduce_range": self.reduce_range,
            "weight_rounding": best.rounding,
            "reduce_range_default": default_reduce_range(env["cpu_flags"]) if target == "cpu" else False,
            "built_cpu_flags": env["cpu_flags"],
            "calibration": {
                "path": str(self.calib.path),
                "content_hash": self.calib.content_hash,
                "count": len(self.calib),
                "data": self.calib.provenance.get("data"),
                "seed": self.calib.provenance.get("seed"),
            },
            "val_set": self.val.name if self.val is not None else None,
            "val_count": len(self.val) if self.val is not None else None,
            "min_val_images": self.options.min_val_images,
            "speed": {"batch": SPEED_BATCH, "rounds": SPEED_ROUNDS, "window_s": SPEED_WINDOW_S}
            if any(t.speedup is not None for t in self.tries)
            else None,
            "tries": [t.row() for t in self.tries],
            "max_drop": self.options.max_drop,
            "min_agreement": self.options.min_agreement,
            "layer_report": report_path.name,
            "sensitivity": sensitivity_paths(self.out_path)[0].name if self.sensitivity is not None else None,
            "fallback": self.fallback_record(best),
            "qat": self.qat,
            "qat_last_resort": self.qat_last_resort,
        }

    def fallback_record(self, best: Try) -> dict[str, Any] | None:
        """The layers auto put in float, in the order tried: each one's measured effect (float-only
        agreement cost on val, with its bounds), the val figures with it and the layers before it
        in float, and what it cost in speed (target cpu: the throughput lost against the try
        before it, both timed in the same interleaved rounds; None where not timed)."""
        if self.fallback_base is None:
            return None
        measured = self.sensitivity is not None
        rows = {row["layer"]: row for row in self.sensitivity["layers"]} if self.sensitivity is not None else {}
        steps = self._steps(self.fallback, rows, best)
        fitted = bool(self.fallback) and self.budget.fits(self.fallback[-1][1])
        previous = self.fallback[-1][1].speedup if self.fallback else self.fallback_base.speedup
        return {
            "ranking": "measured float-only effect on val (paired flips, exact bounds), then per-layer error"
            if measured
            else "per-layer error (the budget held before any layer was measured)",
            "first_pass": self._steps(self.first_pass, {}, best) if self.first_pass else None,
            "val_count": self.sensitivity["n"]
            if self.sensitivity is not None
            else (len(self.val) if self.val is not None else None),
            "max_excluded": self.options.max_excluded,
            "stopped": "budget holds on val"
            if fitted
            else ("max_excluded reached" if len(self.fallback) >= self.options.max_excluded else "every layer tried"),
            "speedup_before": round(self.fallback_base.speedup, 3) if self.fallback_base.speedup is not None else None,
            "speed": None
            if previous is None
            else f"{RUNTIME_NAMES[self.backend]} CPU, batch {SPEED_BATCH}, {SPEED_ROUNDS} interleaved rounds with the float model",
            "layers": steps,
        }

    def _steps(self, tried: list[tuple[Layer, Try]], rows: dict[str, Any], best: Try) -> list[dict[str, Any]]:
        assert self.fallback_base is not None
        unmeasured = {"points": None, "lower": None, "upper": None}
        previous = self.fallback_base.speedup
        steps = []
        for layer, result in tried:
            row = rows.get(layer.node)
            effect = row["float_only"]["agreement"] if row is not None else unmeasured
            speed_cost = None
            if previous is not None and result.speedup is not None:
                speed_cost = round(100.0 * (1.0 - result.speedup / previous), 2)
            steps.append(
                {
                    "layer": layer.node,
                    "nodes": list(layer.exclude),
                    "group": row["group"] if row is not None else None,
                    "effect_points": effect["points"],
                    "effect_lower": effect["lower"],
                    "effect_upper": effect["upper"],
                    "val_agreement": result.val.get("agreement"),
                    "val_drop_points": result.val.get("drop_points"),
                    "fits": self.budget.fits(result),
                    "speedup": round(result.speedup, 3) if result.speedup is not None else None,
                    "speed_cost_pct": speed_cost,
                    "chosen": all(node in best.excluded for node in layer.exclude),
                }
            )
            previous = result.speedup
        return steps


def result_path(out: Path, accepted: bool) -> Path:
    """Where a result is written: ``out``, except that a result not accepted never replaces an
    accepted model there; it goes beside it (``model.int8-cpu.rejected.onnx``)."""
    if accepted or not _holds_accepted_model(out):
        return out
    return out.with_name(rejected_name(out))


def _holds_accepted_model(path: Path) -> bool:
    """Whether ``path`` is a model whose manifest says ``accepted: true``."""
    if not path.is_file() or not manifest_path(path).is_file():
        return False
    try:
        return read_manifest(path).metrics.get("accepted") is True
    except UserError:  # a damaged manifest accepts nothing
        return False


def _with_run_data(run: RunDir, options: QuantizeOptions) -> QuantizeOptions:
    """Without --data, a run that pinned its data split (RUN/splits.json) is quantized on that data."""
    if options.data is not None:
        return options
    from train.splits import read_splits

    pinned = read_splits(run)
    return options if pinned is None else dataclasses.replace(options, data=pinned.source)


def calibration_set(
    run: RunDir, calibration: str | os.PathLike[str] | None, options: QuantizeOptions, spec: PreprocessSpec
) -> CalibrationSet:
    """--calibration, else RUN/calibration, else a set drawn here from --data's training split; a set
    whose items are not all in the run's current train split is refused (`edge calibrate RUN`)."""
    from calibration.sets import build_calibration_set, load_calibration_set

    if calibration is not None:
        return load_calibration_set(calibration, spec, run=run)
    stored = run.calibration_file
    if stored.exists():
        calib = load_calibration_set(stored, spec, run=run)
        if options.data is not None and calib.provenance.get("data") != str(options.data):
            log.warning(
                "using the stored calibration set from %s, not --data %s (rebuild it with `edge calibrate`)",
                calib.provenance.get("data"),
                options.data,
            )
        return calib
    if options.data is None:
        raise UserError(f"{run.root} has no calibration set: run `edge calibrate {run.root} --data DATA` or pass --data")
    return build_calibration_set(run.root, options.data, size=options.calib_size, seed=options.seed)


def na(value: float | None, form: str) -> str:
    """A figure for a table or a log line; ``n/a`` where it was not measured (unlabelled data)."""
    return "n/a" if value is None else form.format(value)


def debug_images(spec: PreprocessSpec) -> int:
    """Calibration images the per-layer diagnostics run on: bounded memory whatever the input size."""
    return int(np.clip(DEBUG_PIXELS // (spec.input_size * spec.input_size), 4, 32))
