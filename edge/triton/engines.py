"""TensorRT engines of a run as Triton ``tensorrt_plan`` models.

Engines live in ``RUN/engines/<gpu>-sm<cc>-trt<version>/model.<precision>.engine``, one folder per
machine. Triton runs the plan that matches its GPU through ``cc_model_filenames`` (compute
capability -> file), so the engines of one precision and one TensorRT version become ONE model
whose version directory holds a plan per architecture. Engines of several TensorRT versions become
one model per version (a Triton server links one TensorRT and cannot load the others). Two
machines with the same compute capability and TensorRT version: the newer engine is used.

The engine's input name and batch range come from its manifest (``provenance.profile``), its
output from the ONNX model it was built from when that is present (``provenance.onnx``),
else from the export's names and the spec's class count.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import UserError
from edge.manifest import Manifest, read_manifest
from edge.measure import rows
from edge.run import RunDir, engine_precision, trt_version_tuple
from edge.triton.models import ModelPlan, Options, TensorIO, _checked, onnx_io

EXPORT_OUTPUT_NAME = "logits"  # edge.export's output name (a stage below may not be imported here)


def plan_file_name(engine: Path) -> str:
    """``engines/nvidia-h200-sm90-trt10.3.0/model.fp16.engine`` -> ``model.nvidia-h200-sm90-trt10.3.0.plan``."""
    return f"model.{engine.parent.name}.plan"


def _onnx_parent(run: RunDir, engine: Path, manifest: Manifest) -> Path | None:
    names = [manifest.provenance.get("onnx"), manifest.parent_file]
    for name in filter(None, names):
        for folder in (engine.parent, run.root):
            if (folder / str(name)).is_file():
                return folder / str(name)
    return None


def engine_io(run: RunDir, engine: Path, manifest: Manifest) -> tuple[list[TensorIO], list[TensorIO], tuple[int, int]]:
    """Inputs, outputs and the (min, max) batch of an engine, from its manifest (and ONNX parent)."""
    profile = manifest.provenance.get("profile")
    if not isinstance(profile, dict) or not all(isinstance(profile.get(k), int) for k in ("min", "max")):
        raise UserError(f"{engine}'s manifest records no optimization profile: rebuild it with `edge engine {run.root}`")
    spec = manifest.preprocess_spec
    parent = _onnx_parent(run, engine, manifest)
    if parent is not None:
        inputs, outputs, _ = onnx_io(parent)
    else:
        inputs = [TensorIO(str(profile.get("input") or "input"), "TYPE_FP32", spec.input_shape)]
        outputs = [TensorIO(EXPORT_OUTPUT_NAME, "TYPE_FP32", (spec.num_classes,))]
    inputs = [TensorIO(str(profile.get("input") or inputs[0].name), inputs[0].data_type, spec.input_shape)]
    return inputs, outputs, (int(profile["min"]), int(profile["max"]))


def engine_groups(run: RunDir) -> dict[tuple[str, tuple[int, ...]], list[tuple[Path, Manifest]]]:
    """The run's engines by (precision, TensorRT major.minor)."""
    groups: dict[tuple[str, tuple[int, ...]], list[tuple[Path, Manifest]]] = {}
    for engine in run.engine_files():
        manifest = read_manifest(engine)
        version = trt_version_tuple(str(manifest.provenance.get("tensorrt_version", "0.0")))[:2]
        groups.setdefault((engine_precision(engine), version), []).append((engine, manifest))
    return groups


def _by_compute_capability(members: list[tuple[Path, Manifest]], notes: list[str]) -> dict[str, tuple[Path, Manifest]]:
    chosen: dict[str, tuple[Path, Manifest]] = {}
    for engine, manifest in sorted(members, key=lambda m: (m[1].created_at, str(m[0]))):
        cc = str(manifest.provenance.get("compute_capability") or "")
        if not cc:
            notes.append(f"{engine} left out: its manifest records no compute capability (rebuild it with `edge engine`)")
            continue
        if cc in chosen:
            notes.append(f"{chosen[cc][0]} left out: {engine} has the same compute capability {cc} and is newer")
        chosen[cc] = (engine, manifest)
    return chosen


def engine_plans(run: RunDir, options: Options, prefix: str) -> tuple[list[ModelPlan], list[str]]:
    """One tensorrt_plan model per precision (and TensorRT version) found under RUN/engines/."""
    plans: list[ModelPlan] = []
    notes: list[str] = []
    groups = engine_groups(run)
    versions: dict[str, int] = {}
    for precision, _ in groups:
        versions[precision] = versions.get(precision, 0) + 1
    for (precision, version), members in sorted(groups.items()):
        if options.artifacts is not None and not any(f"{rows.ENGINE_PREFIX}{precision}" in a for a in options.artifacts):
            continue
        suffix = f"-trt{'.'.join(map(str, version))}" if versions[precision] > 1 else ""
        plan = _engine_plan(run, f"{prefix}-{rows.ENGINE_PREFIX}{precision}{suffix}", members, options, notes)
        if plan is not None:
            plans.append(plan)
    return plans, notes


def _engine_plan(
    run: RunDir, name: str, members: list[tuple[Path, Manifest]], options: Options, notes: list[str]
) -> ModelPlan | None:
    accepted = []
    for engine, manifest in members:
        sha, why = _checked(engine, options.force)
        if why:
            notes.append(why)
        else:
            accepted.append((engine, manifest))
    chosen = _by_compute_capability(accepted, notes)
    if not chosen:
        return None
    ios = {cc: engine_io(run, engine, manifest) for cc, (engine, manifest) in chosen.items()}
    first_engine, first_manifest = next(iter(chosen.values()))
    inputs, outputs, _ = ios[next(iter(ios))]
    batch_min = max(io[2][0] for io in ios.values())
    batch_max = min(io[2][1] for io in ios.values())  # every architecture's plan must take the batch
    plan = ModelPlan(
        name=name,
        artifact=f"{rows.ENGINE_PREFIX}{engine_precision(first_engine)}",
        platform="tensorrt_plan",
        inputs=inputs,
        outputs=outputs,
        max_batch_size=batch_max,
        spec=first_manifest.preprocess_spec,
        files={plan_file_name(engine): engine for engine, _ in chosen.values()},
        device="cuda",
        cc_model_filenames={cc: plan_file_name(engine) for cc, (engine, _) in sorted(chosen.items())},
        min_batch=batch_min,
        sha256={plan_file_name(engine): manifest.sha256 for engine, manifest in chosen.values()},
    )
    return plan


def bench_names(plan: ModelPlan) -> list[str]:
    """The bench report's names for the engines of a plan (``trt-fp16@<engine folder>``)."""
    return [f"{plan.artifact}@{Path(source).parent.name}" for source in plan.files.values()]
