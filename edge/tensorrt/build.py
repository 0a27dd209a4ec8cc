"""Build TensorRT engines from a run's ONNX models (the builder behind `edge engine`).

FP32 and FP16 engines come from model.onnx, INT8 from the TensorRT-targeted QDQ model
(model.int8-trt.onnx, explicit quantization, no calibrator). TensorRT 10.x and 11.x differ in
precision control; build_settings() is the only place that branches on the version. Engines land in
RUN/engines/<gpu>-sm<cc>-trt<version>/ (names from :mod:`edge.run`), with an optimization profile
over the batch sizes asked for and a persistent timing cache.

TensorRT path: not yet verified on hardware. Everything here was written from NVIDIA's API notes
and type-checked against tensorrt-stubs; `edge selftest --tensorrt` proves it on a device.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.artifacts import artifact_spec, environment_fingerprint, is_stale, manifest_path, read_manifest, write_manifest
from edge.errors import UserError
from edge.run import ONNX_FP16_AUTOCAST, TIMING_CACHE, RunDir
from edge.runners.base import Runner
from edge.spec import PreprocessSpec

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

UNVERIFIED = "TensorRT path: not yet verified on hardware"
PRECISIONS = ("fp32", "fp16", "int8")
PICK_ORDER = ("fp16", "int8", "fp32")  # what a run directory resolves to: fast and accurate first
DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_GIB = 2.0
AUTOCAST_HINT = "pip install 'nvidia-modelopt[onnx]'"

# ---- pure parts: argument parsing, paths, version branch, compatibility ---------------------


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


def trt_version_tuple(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> (10, 3, 0); raises UserError for something that is not a version."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise UserError(f"{version!r} is not a TensorRT version")
    return tuple(int(g or 0) for g in match.groups())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_dir_name(gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """``NVIDIA H200``, ``9.0``, ``10.3.0.26`` -> ``nvidia-h200-sm90-trt10.3.0``."""
    cc = str(compute_capability).replace(".", "")
    return f"{_slug(gpu_name)}-sm{cc}-trt{'.'.join(map(str, trt_version_tuple(trt_version)))}"


def engine_file(run: RunDir, gpu_name: str, compute_capability: str, trt_version: str, precision: str) -> Path:
    """Where this machine's engine of ``precision`` lives in a run directory."""
    return run.engines / engine_dir_name(gpu_name, compute_capability, trt_version) / f"model.{precision}.engine"


def engine_precision(path: Path) -> str:
    """``model.fp16.engine`` -> ``fp16``."""
    return path.name.removeprefix("model.").removesuffix(path.suffix)


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


# ---- this machine ----------------------------------------------------------------------------


def _trt() -> Any:
    from edge.runners import require_tensorrt

    require_tensorrt()
    import tensorrt

    return tensorrt


def _torch_cuda() -> Any | None:
    """torch when it has a CUDA device, else None."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def runtime_environment() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability here; a UserError when either is absent."""
    trt_module = _trt()
    torch = _torch_cuda()
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


# ---- CUDA buffers and streams (torch, or cuda-python where torch has no CUDA) -------------------


class TorchCuda:
    """Device and pinned host buffers, a non-default stream and timing events from torch."""

    name = "torch"

    def __init__(self, device: int = 0):
        torch = _torch_cuda()
        if torch is None:
            raise UserError("torch cannot see a CUDA device here: install a CUDA build of torch, or cuda-python")
        self.torch = torch
        self.device = torch.device("cuda", device)
        # The default stream makes TensorRT add device-wide synchronisation: use our own.
        self.stream = torch.cuda.Stream(device=self.device)
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def device_buffer(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.torch.empty(shape, dtype=getattr(self.torch, dtype), device=self.device)

    def host_buffer(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.torch.empty(shape, dtype=getattr(self.torch, dtype), pin_memory=True)

    @staticmethod
    def address(buffer: Any) -> int:
        return int(buffer.data_ptr())

    @staticmethod
    def host_array(buffer: Any) -> np.ndarray:
        return buffer.numpy()

    def copy(self, dst: Any, src: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)

    def record(self, event: str) -> None:
        getattr(self, event).record(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def elapsed_ms(self) -> float:
        return float(self.start.elapsed_time(self.end))

    def capture(self, enqueue: Callable[[int], None]) -> Any:
        """A CUDA graph of ``enqueue`` on our stream (warmed up by the caller)."""
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            enqueue(self.stream_handle)
        return graph

    @staticmethod
    def replay(graph: Any) -> None:
        graph.replay()


class CudaPython:
    """The same as :class:`TorchCuda` from cuda-python (NVIDIA's samples since TensorRT 10.14)."""

    name = "cuda-python"

    def __init__(self, device: int = 0):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as exc:
                raise UserError(
                    "TensorRT buffers need torch with CUDA or cuda-python, and neither is usable here: pip install cuda-python"
                ) from exc
        self.rt = cudart
        self._check(cudart.cudaSetDevice(device))
        self.stream = self._check(cudart.cudaStreamCreate())
        self.start = self._check(cudart.cudaEventCreate())
        self.end = self._check(cudart.cudaEventCreate())
        self._allocations: list[int] = []

    def _check(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return values[0] if len(values) == 1 else values

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def device_buffer(self, shape: tuple[int, ...], dtype: str) -> Any:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = int(self._check(self.rt.cudaMalloc(max(nbytes, 1))))
        self._allocations.append(pointer)
        return _DeviceArray(pointer, shape, dtype)

    def host_buffer(self, shape: tuple[int, ...], dtype: str) -> Any:
        # Pageable numpy memory: copies are synchronous with respect to the host, still correct.
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def address(buffer: Any) -> int:
        return int(buffer.pointer) if isinstance(buffer, _DeviceArray) else int(buffer.ctypes.data)

    @staticmethod
    def host_array(buffer: Any) -> np.ndarray:
        return buffer

    def copy(self, dst: Any, src: Any) -> None:
        to_device = isinstance(dst, _DeviceArray)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice if to_device else self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        nbytes = src.nbytes
        self._check(self.rt.cudaMemcpyAsync(self.address(dst), self.address(src), nbytes, kind, self.stream))

    def record(self, event: str) -> None:
        self._check(self.rt.cudaEventRecord(getattr(self, event), self.stream))

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream))

    def elapsed_ms(self) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(self.start, self.end)))

    def capture(self, enqueue: Callable[[int], None]) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._check(self.rt.cudaStreamBeginCapture(self.stream, mode))
        enqueue(self.stream_handle)
        graph = self._check(self.rt.cudaStreamEndCapture(self.stream))
        return (self, self._check(self.rt.cudaGraphInstantiate(graph, 0)))

    @staticmethod
    def replay(graph: Any) -> None:
        owner, executable = graph
        owner._check(owner.rt.cudaGraphLaunch(executable, owner.stream))

    def close(self) -> None:
        for pointer in self._allocations:
            self.rt.cudaFree(pointer)
        self._allocations.clear()


@dataclass
class _DeviceArray:
    pointer: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def cuda_backend(device: int = 0) -> TorchCuda | CudaPython:
    """torch's CUDA where it has one, else cuda-python."""
    return TorchCuda(device) if _torch_cuda() is not None else CudaPython(device)


@dataclass
class IOSlot:
    """The buffers of one batch size, allocated once and reused; plus its CUDA graph."""

    batch: int
    host_in: Any
    device_in: Any
    device_out: dict[str, Any]
    host_out: Any
    graph: Any = None


class DeviceIO:
    """Copy in, enqueue, copy out on one stream, with device time from CUDA events.

    ``bind(slot)`` points the engine at a slot's buffers; ``enqueue(stream_handle)`` launches the
    work. Buffers are reused for every call of the same batch size, which also keeps their
    addresses stable, as a CUDA graph needs.
    """

    def __init__(
        self,
        cuda: TorchCuda | CudaPython,
        input_dtype: str,
        output_shapes: Callable[[int], dict[str, tuple[int, ...]]],
        output_dtypes: dict[str, str],
        use_graphs: bool = False,
    ):
        self.cuda = cuda
        self.input_dtype = input_dtype
        self.output_shapes = output_shapes
        self.output_dtypes = output_dtypes
        self.use_graphs = use_graphs
        self.slots: dict[int, IOSlot] = {}
        self.graph_failures: dict[int, str] = {}

    def slot(self, batch_shape: tuple[int, ...]) -> IOSlot:
        batch = batch_shape[0]
        if batch not in self.slots:
            outs = self.output_shapes(batch)
            first = next(iter(outs))
            self.slots[batch] = IOSlot(
                batch=batch,
                host_in=self.cuda.host_buffer(batch_shape, "float32"),
                device_in=self.cuda.device_buffer(batch_shape, self.input_dtype),
                device_out={n: self.cuda.device_buffer(s, self.output_dtypes[n]) for n, s in outs.items()},
                host_out=self.cuda.host_buffer(outs[first], self.output_dtypes[first]),
            )
        return self.slots[batch]

    def run(self, batch: np.ndarray, bind: Callable[[IOSlot], None], enqueue: Callable[[int], None]) -> tuple[np.ndarray, float]:
        """(first output as float32 host array, device milliseconds of the enqueued work)."""
        slot = self.slot(tuple(batch.shape))
        bind(slot)
        self.cuda.host_array(slot.host_in)[...] = batch
        self.cuda.copy(slot.device_in, slot.host_in)
        if self.use_graphs and slot.graph is None and slot.batch not in self.graph_failures:
            slot.graph = self._capture(slot, enqueue)
        self.cuda.record("start")
        if slot.graph is not None:
            self.cuda.replay(slot.graph)
        else:
            enqueue(self.cuda.stream_handle)
        self.cuda.record("end")
        first = next(iter(slot.device_out.values()))
        self.cuda.copy(slot.host_out, first)
        self.cuda.synchronize()
        return np.array(self.cuda.host_array(slot.host_out), dtype=np.float32), self.cuda.elapsed_ms()

    def _capture(self, slot: IOSlot, enqueue: Callable[[int], None]) -> Any:
        # Enqueue once and synchronise before capturing, so initialisation is not captured
        # (trtexec does the same). Capture can fail for engines with non-capturable layers:
        # then this batch size runs without a graph.
        enqueue(self.cuda.stream_handle)
        self.cuda.synchronize()
        try:
            return self.cuda.capture(enqueue)
        except Exception as exc:  # the CUDA error type differs between torch and cuda-python
            self.graph_failures[slot.batch] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "CUDA graph capture failed for batch %d (%s): running without a graph",
                slot.batch,
                self.graph_failures[slot.batch],
            )
            self.cuda.synchronize()
            return None


# ---- the runner -------------------------------------------------------------------------------

_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", str(dtype)).split(".")[-1]
    if name not in _DTYPES:
        raise UserError(f"engine tensor type {name} is not supported by edge (expected float32/float16 input and output)")
    return _DTYPES[name]


class TensorRTRunner(Runner):
    """Runs a serialized engine through the tensor-name API on a non-default CUDA stream.

    Options: ``cuda_graphs=True`` captures one CUDA graph per batch size; ``check_compatibility``
    (default True) refuses engines built for another TensorRT or GPU. TensorRT path: not yet
    verified on hardware.
    """

    backend = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cuda",
        threads: int | None = None,
        cuda_graphs: bool = False,
        check_compatibility: bool = True,
        max_batch: int | None = None,
    ):
        path = Path(path)
        if device != "cuda":
            raise UserError(f"TensorRT engines run on a CUDA device, not {device!r}: use --device cuda")
        if not path.is_file():
            raise UserError(f"TensorRT engine {path} does not exist: build it with `make engine`")
        manifest = read_manifest(path)
        super().__init__(path, manifest.preprocess_spec, device=device, threads=threads, max_batch=max_batch)
        self.manifest = manifest
        self.cuda_graphs = cuda_graphs
        self.check_compatibility = check_compatibility
        self.notes: tuple[str, ...] = ()
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._io: DeviceIO | None = None
        self._input = ""
        self._outputs: list[str] = []
        self._bound_batch = 0
        self._trt: Any = None
        self._keep_alive: tuple[Any, ...] = ()

    def _activate(self) -> None:
        trt_module = self._trt = _trt()
        env = runtime_environment()
        verdict = Compatibility(True, host_code=bool(self.manifest.provenance.get("version_compatible")))
        if self.check_compatibility:
            verdict = check_engine_compatible(
                self.manifest.to_dict(), env["tensorrt_version"], env["gpu_name"], env["compute_capability"], str(self.path)
            )
        self.notes = verdict.notes
        for note in verdict.notes:
            log.warning("%s: %s", self.path.name, note)
        logger = trt_module.Logger(trt_module.Logger.WARNING)
        runtime: trt.Runtime = trt_module.Runtime(logger)
        if verdict.host_code:
            runtime.engine_host_code_allowed = True  # a version-compatible engine carries its lean runtime
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT could not deserialize {self.path}: rebuild it with `make engine` on this machine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt_module.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not self._outputs:
            raise UserError(f"{self.path} has inputs {inputs} and outputs {self._outputs}: edge engines take one image input")
        self._input = inputs[0]
        _, _, max_shape = engine.get_tensor_profile_shape(self._input, 0)
        engine_max = _dims(max_shape)[0]
        self.max_batch = min(self.max_batch or engine_max, engine_max)
        context: trt.IExecutionContext = engine.create_execution_context()
        # TensorRT wants the logger and runtime to outlive the engine and its context.
        self._keep_alive = (logger, runtime)
        self._engine, self._context = engine, context
        out_dtypes = {n: _dtype_name(engine.get_tensor_dtype(n)) for n in self._outputs}
        self._io = DeviceIO(
            cuda_backend(),
            _dtype_name(engine.get_tensor_dtype(self._input)),
            self._output_shapes,
            out_dtypes,
            use_graphs=self.cuda_graphs,
        )

    def _output_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        context: trt.IExecutionContext = self._require_context()
        context.set_input_shape(self._input, self._trt.Dims([batch, *self.input_shape]))
        self._bound_batch = 0  # the context's shape changed: the next call binds again
        return {n: _dims(context.get_tensor_shape(n)) for n in self._outputs}

    def _require_context(self) -> trt.IExecutionContext:
        if self._context is None:
            raise RuntimeError("TensorRTRunner used before activate()")
        return self._context

    def _bind(self, slot: IOSlot) -> None:
        # Shapes and addresses are context state: set them again whenever the batch size changes.
        if slot.batch == self._bound_batch:
            return
        context: trt.IExecutionContext = self._require_context()
        assert self._io is not None
        context.set_input_shape(self._input, self._trt.Dims([slot.batch, *self.input_shape]))
        context.set_tensor_address(self._input, self._io.cuda.address(slot.device_in))
        for name, buffer in slot.device_out.items():
            context.set_tensor_address(name, self._io.cuda.address(buffer))
        self._bound_batch = slot.batch

    def _enqueue(self, stream_handle: int) -> None:
        context: trt.IExecutionContext = self._require_context()
        if not context.execute_async_v3(stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path.name} (see the TensorRT log above)")

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        assert self._io is not None
        logits, device_ms = self._io.run(batch, self._bind, self._enqueue)
        self.last_device_ms = device_ms
        return logits.reshape(batch.shape[0], -1)

    def _deactivate(self) -> None:
        if self._io is not None and isinstance(self._io.cuda, CudaPython):
            self._io.cuda.close()
        self._io, self._context, self._engine, self._bound_batch = None, None, None, 0
        self._keep_alive = ()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            precision=self.manifest.provenance.get("precision"),
            tensorrt_version=self.manifest.provenance.get("tensorrt_version"),
            cuda_graphs=self.cuda_graphs,
            unverified=UNVERIFIED,
        )
        return info


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


def validate_request(
    run: str | os.PathLike[str],
    precision: str | None,
    batch: str = "1:8:32",
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    dla_core: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    version_compatible: bool = False,
    rebuild_stale: bool = False,
) -> BuildRequest:
    """Check every argument and input file before any TensorRT work starts."""
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
        run_dir.require(engine_parent(run_dir, p), how)
    return BuildRequest(
        run_dir, precisions, batch_range, float(workspace_gib), dla_core, cache, version_compatible, rebuild_stale
    )


def stale_precisions(run: RunDir, env: dict[str, str]) -> list[str]:
    """Precisions whose engine for this machine is missing-but-existing elsewhere, stale (parent
    changed) or incompatible here, and whose ONNX parent is present to rebuild from."""
    found: set[str] = set()
    for path in run.engine_files():
        precision = engine_precision(path)
        if precision not in PRECISIONS or not engine_parent(run, precision).exists():
            continue
        own = engine_file(run, env["gpu_name"], env["compute_capability"], env["tensorrt_version"], precision)
        if not own.exists() or is_stale(own, engine_parent(run, precision)):
            found.add(precision)
            continue
        verdict = engine_compatibility(
            read_manifest(own).to_dict(), env["tensorrt_version"], env["gpu_name"], env["compute_capability"]
        )
        if not verdict.ok:
            found.add(precision)
    return sorted(found, key=PRECISIONS.index)


def build_engines(request: BuildRequest) -> list[dict[str, Any]]:
    """Build the requested (and, with rebuild_stale, the stale) engines; one result row each."""
    trt_module = _trt()
    env = runtime_environment()
    precisions = list(request.precisions)
    if request.rebuild_stale:
        precisions += [p for p in stale_precisions(request.run, env) if p not in precisions]
        if not precisions:
            log.info("no stale engines in %s for this machine", request.run.root)
    for precision in precisions:  # fail before the first build, not between builds
        if build_settings(env["tensorrt_version"], precision).onnx_source == "fp16-autocast":
            _require_autocast()
    rows = []
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as progress:
        for precision in precisions:
            task = progress.add_task(f"building the {precision} engine (TensorRT {env['tensorrt_version']})", total=None)
            rows.append(_build_one(trt_module, request, precision, env))
            progress.remove_task(task)
    return rows


def _build_one(trt_module: Any, request: BuildRequest, precision: str, env: dict[str, str]) -> dict[str, Any]:
    run = request.run
    parent = engine_parent(run, precision)
    spec = artifact_spec(parent)  # the manifest's spec, else the ONNX metadata
    settings = build_settings(env["tensorrt_version"], precision, request.dla_core, request.version_compatible)
    target = engine_file(run, env["gpu_name"], env["compute_capability"], env["tensorrt_version"], precision)
    cache = request.timing_cache or target.parent / TIMING_CACHE
    onnx = parent
    if settings.onnx_source == "fp16-autocast":
        onnx = autocast_fp16(parent, target.parent / ONNX_FP16_AUTOCAST, spec)
    started = time.perf_counter()
    plan, details = build_serialized(trt_module, onnx, settings, request.batch, spec, request.workspace_gib, cache)
    from edge.artifacts import atomic_write_bytes

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
    write_manifest(target, "engine", spec, parent=parent, provenance=provenance)
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

    from edge.artifacts import atomic_path

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
    profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    shapes = [trt_module.Dims([n, *spec.input_shape]) for n in batch]
    profile.set_shape(input_name, shapes[0], shapes[1], shapes[2])
    config.add_optimization_profile(profile)
    timing: trt.ITimingCache = _load_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx}: see the TensorRT errors above (rerun with -v for more)")
    from edge.artifacts import atomic_write_bytes

    atomic_write_bytes(timing_cache, bytes(memoryview(timing.serialize())))  # persistent: the next build reuses it
    return bytes(memoryview(plan)), {"input": input_name}


def _load_timing_cache(config: trt.IBuilderConfig, path: Path) -> trt.ITimingCache:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another device or TensorRT version: start a fresh one (it is overwritten).
        log.warning("timing cache %s does not match this device or TensorRT version: starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache
