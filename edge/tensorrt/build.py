"""Build TensorRT engines from a run's ONNX models (the builder behind `edge engine`).

FP32 and FP16 engines come from model.onnx, INT8 from the TensorRT-targeted QDQ model
(model.int8-trt.onnx, explicit quantization, no calibrator). TensorRT 10.x and 11.x differ in
precision control; build_settings() is the only place that branches on the version. Engines land in
RUN/engines/<gpu>-sm<cc>-trt<version>/ (names from :mod:`edge.run`), with an optimization profile
over the batch sizes asked for and a persistent timing cache.

An INT8 engine is refused when `edge quantize` did not accept its QDQ parent (manifest
``accepted: false``), unless --force; an engine built so carries ``accepted: false`` and the reason
in its own manifest, so that `edge pack`, `edge bench` and `edge check` see it too.

TensorRT path: not yet verified on hardware. Everything here was written from NVIDIA's API notes
and type-checked against tensorrt-stubs; `edge selftest --tensorrt` proves it on a device.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.artifact_spec import artifact_spec
from edge.errors import UserError
from edge.history import keeping_previous
from edge.lineage import is_stale
from edge.manifest import manifest_path, read_manifest, write_manifest
from edge.run import ONNX_FP16_AUTOCAST, TIMING_CACHE, RunDir, engine_precision, trt_version_tuple
from edge.runners.tensorrt_engines import engine_compatibility, import_tensorrt, runtime_environment
from edge.spec import PreprocessSpec
from edge.verify import is_rejected, unverified_reason, verify_artifact

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_GIB = 2.0
AUTOCAST_HINT = "pip install -e '.[trt11-fp16]' in the clone"

# ---- pure parts: argument parsing, the version branch, the ONNX parent --------------------------


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """``"1:8:32"`` -> (min, opt, max); one number N means N:N:N."""
    parts = str(text).split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1 or not values[0] <= values[1] <= values[2]:
        raise UserError(f"--batch {text!r} is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:8:32)")
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class BuildSettings:
    """How to build one precision on one TensorRT version (names, not TensorRT objects)."""

    trt_major: int
    precision: str
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members
    onnx_source: str  # "fp32": model.onnx, "fp16-autocast": model.onnx via ModelOpt AutoCast, "int8-qdq": model.int8-trt.onnx
    dla_core: int | None

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags


def build_settings(
    trt_version: str, precision: str, dla_core: int | None = None, version_compatible: bool = False
) -> BuildSettings:
    """The one TensorRT version branch: network and builder flags for a precision.

    10.x: weakly typed networks, precision by builder flag; INT8 from the QDQ model with INT8+FP16
    (a strongly typed 10.x build runs every unquantized layer in FP32 and can lose to FP16).
    11.x: the precision flags and EXPLICIT_BATCH are gone; networks are strongly typed, so FP16
    comes from an FP16 ONNX (ModelOpt AutoCast) and INT8 from the QDQ model's own types.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    major = trt_version_tuple(trt_version)[0]
    if major < 10:
        raise UserError(f"TensorRT {trt_version} is too old: edge supports TensorRT 10.x and 11.x")
    source = {"fp32": "fp32", "fp16": "fp16-autocast" if major >= 11 else "fp32", "int8": "int8-qdq"}[precision]
    flags: list[str] = []
    if major >= 11:
        network: tuple[str, ...] = ("STRONGLY_TYPED",)
    else:
        network = ()
        if precision == "fp16":
            flags.append("FP16")
        elif precision == "int8":
            flags += ["INT8", "FP16"]
        if dla_core is not None and "FP16" not in flags:
            flags.append("FP16")  # DLA runs FP16/INT8 only; GPU_FALLBACK keeps the rest on the GPU
    if dla_core is not None:
        flags.append("GPU_FALLBACK")
    if version_compatible:
        flags.append("VERSION_COMPATIBLE")
    return BuildSettings(major, precision, network, tuple(flags), source, dla_core)


def engine_parent(run: RunDir, precision: str) -> Path:
    """The ONNX an engine of ``precision`` is built from (and whose hash makes it stale)."""
    return run.int8_trt if precision == "int8" else run.onnx


def parent_rejection(parent: Path) -> str | None:
    """Why `edge quantize` did not accept ``parent`` (its manifest says ``accepted: false``), else
    None (accepted, or no verdict recorded)."""
    if not manifest_path(parent).exists():
        return None
    manifest = read_manifest(parent)
    if not is_rejected(manifest, fix="requantize it"):
        return None
    return str(manifest.metrics.get("reason") or "manifest accepted: false")


def refuse_unaccepted(run: RunDir, precision: str) -> None:
    """The one-line refusal to build from a parent that `edge quantize` did not accept."""
    parent = engine_parent(run, precision)
    reason = parent_rejection(parent)
    if reason is not None:
        raise UserError(
            f"{parent.name} was not accepted by edge quantize ({reason}): requantize it "
            f"(`edge quantize {run.root} --target trt`), or pass --force to build the {precision} engine anyway"
        )


# ---- building ---------------------------------------------------------------------------------


@dataclass
class BuildRequest:
    """A validated `edge engine` request (validation needs no TensorRT)."""

    run: RunDir
    precisions: tuple[str, ...]
    batch: tuple[int, int, int]
    workspace_gib: float
    dla_core: int | None
    timing_cache: Path | None
    version_compatible: bool
    rebuild_stale: bool
    force: bool = False  # build from a parent that edge quantize did not accept


def validate_request(
    run: str | os.PathLike[str],
    precision: str | None,
    batch: str = "1:8:32",
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    dla_core: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    version_compatible: bool = False,
    rebuild_stale: bool = False,
    force: bool = False,
) -> BuildRequest:
    """Check every argument and input file before any TensorRT work starts (an int8 parent that
    edge quantize did not accept is refused unless ``force``)."""
    if precision is None and not rebuild_stale:
        raise UserError("give --precision fp32|fp16|int8 (or --rebuild-stale to rebuild this run's stale engines)")
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    batch_range = parse_batch_range(batch)
    if not workspace_gib > 0:
        raise UserError(f"--workspace must be a positive number of GiB, got {workspace_gib}")
    if dla_core is not None and dla_core < 0:
        raise UserError(f"--dla takes a DLA core number (0 or 1 on AGX Orin), got {dla_core}")
    cache = Path(timing_cache) if timing_cache is not None else None
    if cache is not None and not cache.parent.is_dir():
        raise UserError(f"--timing-cache {cache}: folder {cache.parent} does not exist")
    if cache is not None and cache.is_dir():
        raise UserError(f"--timing-cache {cache} is a folder: give a file path")
    run_dir = RunDir.open(run)
    precisions = (precision,) if precision is not None else ()
    for p in precisions:
        how = (
            f"make it with `edge quantize {run_dir.root} --target trt`"
            if p == "int8"
            else f"make it with `edge export {run_dir.root}`"
        )
        parent = run_dir.require(engine_parent(run_dir, p), how)
        if verify_artifact(parent) is None and not force:  # the ONNX parent still matches its manifest, or has none
            raise UserError(f"{parent}: unverified: {unverified_reason(parent)}; {how}, or pass --force to build from it anyway")
        if not force:
            refuse_unaccepted(run_dir, p)
    return BuildRequest(
        run_dir, precisions, batch_range, float(workspace_gib), dla_core, cache, version_compatible, rebuild_stale, force
    )


def stale_precisions(run: RunDir, env: dict[str, str]) -> list[str]:
    """Precisions whose engine for this machine is missing-but-existing elsewhere, stale (parent
    changed) or incompatible here, and whose ONNX parent is present to rebuild from."""
    found: set[str] = set()
    for path in run.engine_files():
        precision = engine_precision(path)
        if precision not in PRECISIONS or not engine_parent(run, precision).exists():
            continue
        own = run.engine_file(env["gpu_name"], env["compute_capability"], env["tensorrt_version"], precision)
        if not own.exists() or is_stale(own, engine_parent(run, precision)):
            found.add(precision)
            continue
        verdict = engine_compatibility(
            read_manifest(own).to_dict(), env["tensorrt_version"], env["gpu_name"], env["compute_capability"]
        )
        if not verdict.ok:
            found.add(precision)
    return sorted(found, key=PRECISIONS.index)


def with_stale(request: BuildRequest, stale: list[str]) -> list[str]:
    """The requested precisions plus the ``stale`` ones to rebuild; a stale engine whose parent edge
    quantize did not accept is left alone (with a warning) unless --force."""
    precisions = list(request.precisions)
    for precision in stale:
        reason = None if request.force else parent_rejection(engine_parent(request.run, precision))
        if reason is not None:
            log.warning("not rebuilding the stale %s engine: its parent was not accepted (%s); --force does", precision, reason)
        elif precision not in precisions:
            precisions.append(precision)
    return precisions


def build_engines(request: BuildRequest) -> list[dict[str, Any]]:
    """Build the requested (and, with rebuild_stale, the stale) engines; one result row each."""
    trt_module = import_tensorrt()
    env = runtime_environment()
    precisions = list(request.precisions)
    if request.rebuild_stale:
        precisions = with_stale(request, stale_precisions(request.run, env))
        if not precisions:
            log.info("no stale engines in %s for this machine", request.run.root)
    for precision in precisions:  # fail before the first build, not between builds
        if build_settings(env["tensorrt_version"], precision).onnx_source == "fp16-autocast":
            _require_autocast()
    rows = []
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from edge.console import make_progress

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with make_progress(*columns, transient=True, unit="engines") as progress:
        for precision in precisions:
            task = progress.add_task(f"building the {precision} engine (TensorRT {env['tensorrt_version']})", total=1)
            rows.append(_build_one(trt_module, request, precision, env))
            progress.advance(task)  # off a terminal: one line per engine, with its build time
            progress.remove_task(task)
    return rows


def _build_one(trt_module: Any, request: BuildRequest, precision: str, env: dict[str, str]) -> dict[str, Any]:
    """Build one engine; the engine already at its path (and its FP16 source) is kept under
    RUN/history/<time>/engines/... first."""
    settings = build_settings(env["tensorrt_version"], precision, request.dla_core, request.version_compatible)
    target = request.run.engine_file(env["gpu_name"], env["compute_capability"], env["tensorrt_version"], precision)
    autocast = target.parent / ONNX_FP16_AUTOCAST if settings.onnx_source == "fp16-autocast" else None
    replaced = [path for path in (autocast, target) if path is not None]
    with keeping_previous(request.run.root, replaced, "edge engine replaces it"):
        return _build_engine(trt_module, request, precision, env, settings, target, autocast)


def _build_engine(
    trt_module: Any,
    request: BuildRequest,
    precision: str,
    env: dict[str, str],
    settings: BuildSettings,
    target: Path,
    autocast: Path | None,
) -> dict[str, Any]:
    parent = engine_parent(request.run, precision)
    spec = artifact_spec(parent)  # the manifest's spec, else the ONNX metadata
    cache = request.timing_cache or target.parent / TIMING_CACHE
    onnx = parent if autocast is None else autocast_fp16(parent, autocast, spec)
    started = time.perf_counter()
    plan, details = build_serialized(trt_module, onnx, settings, request.batch, spec, request.workspace_gib, cache)
    from edge.atomic import atomic_write_bytes

    atomic_write_bytes(target, plan)
    provenance = {
        "precision": precision,
        "tensorrt_version": env["tensorrt_version"],
        "gpu_name": env["gpu_name"],
        "compute_capability": env["compute_capability"],
        "build_flags": list(settings.builder_flags),
        "network_flags": list(settings.network_flags),
        "strongly_typed": settings.strongly_typed,
        "onnx_source": settings.onnx_source,
        "onnx": onnx.name,
        "profile": {"input": details["input"], "min": request.batch[0], "opt": request.batch[1], "max": request.batch[2]},
        "workspace_gib": request.workspace_gib,
        "version_compatible": request.version_compatible,
        "dla_core": request.dla_core,
        "timing_cache": str(cache),
        "build_seconds": round(time.perf_counter() - started, 1),
        "verified_on_hardware": False,
    }
    reason = parent_rejection(parent)  # built with --force: the engine is no more accepted than its parent
    metrics = {"accepted": False, "reason": f"built with --force from {parent.name}, not accepted: {reason}"} if reason else None
    write_manifest(target, "engine", spec, parent=parent, provenance=provenance, metrics=metrics)
    return {"precision": precision, "engine": str(target), "size_mb": target.stat().st_size / 1e6, **provenance}


def _require_autocast() -> Any:
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise UserError(
            "FP16 engines on TensorRT 11 are built from an FP16 ONNX made by NVIDIA ModelOpt AutoCast, "
            f"and modelopt is not installed: {AUTOCAST_HINT}"
        ) from exc
    return convert_to_mixed_precision


def autocast_fp16(onnx: Path, out: Path, spec: PreprocessSpec) -> Path:
    """An FP16 copy of ``onnx`` from ModelOpt AutoCast (TensorRT 11 has no FP16 builder flag)."""
    convert_to_mixed_precision = _require_autocast()
    import onnx as onnx_lib

    from edge.atomic import atomic_path

    model = convert_to_mixed_precision(onnx_path=str(onnx), low_precision_type="fp16", keep_io_types=True)
    with atomic_path(out) as tmp:
        onnx_lib.save(model, str(tmp))
    write_manifest(
        out, "onnx", spec, parent=onnx, provenance={"converter": "modelopt.onnx.autocast", "low_precision_type": "fp16"}
    )
    return out


def build_serialized(
    trt_module: Any,
    onnx: Path,
    settings: BuildSettings,
    batch: tuple[int, int, int],
    spec: PreprocessSpec,
    workspace_gib: float,
    timing_cache: Path,
) -> tuple[bytes, dict[str, Any]]:
    """Parse ``onnx`` and build a serialized engine with one optimization profile over ``batch``."""
    trt_logger = trt_module.Logger(trt_module.Logger.WARNING)
    builder: trt.Builder = trt_module.Builder(trt_logger)
    network_flags = 0
    for name in settings.network_flags:
        network_flags |= 1 << int(getattr(trt_module.NetworkDefinitionCreationFlag, name))
    network: trt.INetworkDefinition = builder.create_network(network_flags)
    parser: trt.OnnxParser = trt_module.OnnxParser(network, trt_logger)
    if "VERSION_COMPATIBLE" in settings.builder_flags:
        parser.set_flag(trt_module.OnnxParserFlag.NATIVE_INSTANCENORM)  # needed by compatible engines
    if not parser.parse_from_file(str(onnx)):  # from a file, so external weights are found
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"TensorRT cannot parse {onnx} ({len(errors)} errors): " + " | ".join(errors))
    if network.num_inputs != 1:
        raise UserError(f"{onnx} has {network.num_inputs} inputs: edge engines take one image input")
    first_input: trt.ITensor = network.get_input(0)
    input_name = first_input.name
    config: trt.IBuilderConfig = _builder_config(trt_module, builder, settings, workspace_gib)
    profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    shapes = [trt_module.Dims([n, *spec.input_shape]) for n in batch]
    profile.set_shape(input_name, shapes[0], shapes[1], shapes[2])
    config.add_optimization_profile(profile)
    timing: trt.ITimingCache = _load_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx}: see the TensorRT errors above (rerun with -v for more)")
    from edge.atomic import atomic_write_bytes

    atomic_write_bytes(timing_cache, bytes(memoryview(timing.serialize())))  # persistent: the next build reuses it
    return bytes(memoryview(plan)), {"input": input_name}


def _builder_config(trt_module: Any, builder: trt.Builder, settings: BuildSettings, workspace_gib: float) -> trt.IBuilderConfig:
    """The builder config: workspace, the version branch's builder flags, and the DLA core if any."""
    config: trt.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt_module.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for name in settings.builder_flags:
        config.set_flag(getattr(trt_module.BuilderFlag, name))
    if settings.dla_core is not None:
        cores = builder.num_DLA_cores
        if settings.dla_core >= cores:
            raise UserError(
                f"--dla {settings.dla_core}: this device has {cores} DLA cores" + ("" if cores else " (no DLA): drop --dla")
            )
        config.default_device_type = trt_module.DeviceType.DLA
        config.DLA_core = settings.dla_core
    return config


def _load_timing_cache(config: trt.IBuilderConfig, path: Path) -> trt.ITimingCache:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another device or TensorRT version: start a fresh one (it is overwritten).
        log.warning("timing cache %s does not match this device or TensorRT version: starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache
