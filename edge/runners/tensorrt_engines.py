"""Which TensorRT engine runs here: TensorRT's presence, this machine, and engine compatibility.

Engines are tied to the TensorRT version and the GPU architecture that built them. This module
compares an engine's manifest with this machine (without TensorRT where it can), picks the engine
of a run directory that runs here, and detects this machine's TensorRT version and GPU. It belongs
to the core: the runner and the builder (:mod:`edge.tensorrt.build`) both use it. tensorrt and
torch are imported only inside the functions that need them.

TensorRT path: not yet verified on hardware.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.environment import environment_fingerprint
from edge.errors import UserError
from edge.manifest import manifest_path, read_manifest
from edge.run import engine_dir_name, engine_precision, trt_version_tuple
from edge.runners.cuda_io import torch_cuda

UNVERIFIED = "TensorRT path: not yet verified on hardware"
PICK_ORDER = ("fp16", "int8", "fp32")  # what a run directory resolves to: fast and accurate first

# ---- TensorRT itself ---------------------------------------------------------------------------


def tensorrt_available() -> bool:
    """True when a working TensorRT module imports (a stub-only folder named tensorrt does not count)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # type: ignore[import-not-found,unused-ignore]
    except Exception:  # a broken install (missing libnvinfer) is "not installed" for our purposes
        return False
    return hasattr(tensorrt, "Builder")


def require_tensorrt(purpose: str = "Running TensorRT engines") -> None:
    if not tensorrt_available():
        raise UserError(
            f"{purpose} needs TensorRT, and TensorRT is not installed: on a Jetson it comes with JetPack "
            "(python3-libnvinfer); on a GPU server pip install -e '.[tensorrt]' in the clone"
        )


def import_tensorrt() -> Any:
    """The tensorrt module, or the UserError of :func:`require_tensorrt`."""
    require_tensorrt()
    import tensorrt

    return tensorrt


# ---- this machine ------------------------------------------------------------------------------


def runtime_environment() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability here; a UserError when either is absent."""
    trt_module = import_tensorrt()
    torch = torch_cuda()
    if torch is not None:
        major, minor = torch.cuda.get_device_capability(0)
        return {
            "tensorrt_version": str(trt_module.__version__),
            "gpu_name": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}",
        }
    env = environment_fingerprint()  # nvidia-smi, for machines whose torch has no CUDA
    if not env.get("gpu_name") or not env.get("gpu_compute_capability"):
        raise UserError("TensorRT needs a CUDA device and none is visible here (torch.cuda and nvidia-smi see no GPU)")
    return {
        "tensorrt_version": str(trt_module.__version__),
        "gpu_name": env["gpu_name"],
        "compute_capability": env["gpu_compute_capability"],
    }


# ---- compatibility of an engine with this machine ----------------------------------------------


@dataclass(frozen=True)
class Compatibility:
    """Whether an engine manifest can run here; ``reason`` says why not, ``notes`` what to watch."""

    ok: bool
    reason: str = ""
    host_code: bool = False  # the runtime must allow the engine's lean runtime (version-compatible)
    notes: tuple[str, ...] = ()


def engine_compatibility(
    manifest: dict[str, Any], runtime_trt_version: str, gpu_name: str, compute_capability: str
) -> Compatibility:
    """Compare an engine manifest (a dict) with this machine, without TensorRT.

    Engines are tied to the TensorRT version and the GPU architecture that built them. A
    version-compatible engine also runs on later TensorRT versions (10 -> 11 included), never on
    earlier ones. The same compute capability on a different GPU model runs, with a note.
    """
    if manifest.get("kind") != "engine":
        return Compatibility(False, f"its manifest says kind {manifest.get('kind')!r}, not 'engine'")
    prov = manifest.get("provenance") or {}
    missing = [k for k in ("tensorrt_version", "gpu_name", "compute_capability") if not prov.get(k)]
    if missing:
        return Compatibility(False, f"its manifest lacks {', '.join(missing)}")
    built, here = trt_version_tuple(prov["tensorrt_version"]), trt_version_tuple(runtime_trt_version)
    built_text, here_text = ".".join(map(str, built)), ".".join(map(str, here))
    version_compatible = bool(prov.get("version_compatible"))
    host_code = False
    if built != here:
        if not version_compatible:
            return Compatibility(False, f"it was built by TensorRT {built_text} and this is TensorRT {here_text}")
        if here < built:
            return Compatibility(
                False, f"it was built version-compatible by TensorRT {built_text}, which is newer than this TensorRT {here_text}"
            )
        host_code = True
    elif version_compatible:
        host_code = True
    built_cc, here_cc = str(prov["compute_capability"]).replace(".", ""), str(compute_capability).replace(".", "")
    if built_cc != here_cc:
        return Compatibility(
            False, f"it was built for {prov['gpu_name']} (sm{built_cc}) and this GPU is {gpu_name} (sm{here_cc})"
        )
    notes: tuple[str, ...] = ()
    if str(prov["gpu_name"]) != str(gpu_name):
        notes = (f"built on {prov['gpu_name']}, running on {gpu_name} (same sm{here_cc}): rebuild for best speed",)
    return Compatibility(True, host_code=host_code, notes=notes)


def check_engine_compatible(
    manifest: dict[str, Any], runtime_trt_version: str, gpu_name: str, compute_capability: str, engine: str = "engine"
) -> Compatibility:
    """:func:`engine_compatibility`, raising a UserError that says how to rebuild when it is not."""
    result = engine_compatibility(manifest, runtime_trt_version, gpu_name, compute_capability)
    if not result.ok:
        run = _run_of(Path(engine))
        raise UserError(
            f"{engine} cannot run here: {result.reason}; run `make engine RUN={run}` again "
            f"(or `edge engine {run} --rebuild-stale`) on this machine"
        )
    return result


def _run_of(engine: Path) -> str:
    # RUN/engines/<machine>/model.x.engine -> RUN
    return str(engine.parent.parent.parent) if engine.parent.parent.name == "engines" else "RUN"


# ---- choosing a run's engine -------------------------------------------------------------------


def pick_engine(engine_paths: list[Path], environment: dict[str, str] | None = None) -> Path:
    """The engine of a run that this machine can run: this machine's own folder first, then
    version-compatible engines from elsewhere; fp16, then int8, then fp32.

    ``environment`` has tensorrt_version, gpu_name and compute_capability (detected when None).
    """
    if not engine_paths:
        raise UserError("no TensorRT engines given: build them with `make engine RUN=...`")
    env = environment or runtime_environment()
    rank = {p: i for i, p in enumerate(PICK_ORDER)}
    own_dir = engine_dir_name(env["gpu_name"], env["compute_capability"], env["tensorrt_version"])
    candidates: list[tuple[int, int, Path]] = []
    reasons: list[str] = []
    for path in engine_paths:
        path = Path(path)
        if not manifest_path(path).exists():
            reasons.append(f"{path.parent.name}/{path.name}: no manifest")
            continue
        result = engine_compatibility(
            read_manifest(path).to_dict(), env["tensorrt_version"], env["gpu_name"], env["compute_capability"]
        )
        if result.ok:
            candidates.append((0 if path.parent.name == own_dir else 1, rank.get(engine_precision(path), 9), path))
        else:
            reasons.append(f"{path.parent.name}/{path.name}: {result.reason}")
    if not candidates:
        run = _run_of(Path(engine_paths[0]))
        raise UserError(
            f"no engine in {run}/engines runs on this machine ({env['gpu_name']} sm{str(env['compute_capability']).replace('.', '')}, "
            f"TensorRT {env['tensorrt_version']}): {'; '.join(reasons)}; run `make engine RUN={run}` here"
        )
    return min(candidates)[2]
