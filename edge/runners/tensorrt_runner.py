"""TensorRT backend: a serialized engine run natively through the tensor-name API.

The engine must have been built for this TensorRT and GPU (or built version-compatible); its
manifest says which, and :mod:`edge.runners.tensorrt_engines` checks it. Buffers and the stream
come from :mod:`edge.runners.cuda_io`. tensorrt is imported only when the runner is activated.

TensorRT path: not yet verified on hardware.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import UserError
from edge.manifest import read_manifest
from edge.runners.base import Runner
from edge.runners.cuda_io import CudaPython, DeviceIO, IOSlot, cuda_backend
from edge.runners.tensorrt_engines import (
    UNVERIFIED,
    Compatibility,
    check_engine_compatible,
    import_tensorrt,
    runtime_environment,
)
from edge.spec import PreprocessSpec

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

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

    ``spec`` comes from the selector (:func:`edge.artifact_spec.artifact_spec`); the engine's manifest
    is still read for its provenance (TensorRT version, GPU, version-compatible). Options:
    ``cuda_graphs=True`` captures one CUDA graph per batch size; ``check_compatibility`` (default
    True) refuses engines built for another TensorRT or GPU. TensorRT path: not yet verified on
    hardware.
    """

    backend = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cuda",
        threads: int | None = None,
        max_batch: int | None = None,
        *,
        cuda_graphs: bool = False,
        check_compatibility: bool = True,
    ):
        path = Path(path)
        if device != "cuda":
            raise UserError(f"TensorRT engines run on a CUDA device, not {device!r}: use --device cuda")
        if not path.is_file():
            raise UserError(f"TensorRT engine {path} does not exist: build it with `make engine`")
        manifest = read_manifest(path)
        super().__init__(path, spec, device=device, threads=threads, max_batch=max_batch)
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
        trt_module = self._trt = import_tensorrt()
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
