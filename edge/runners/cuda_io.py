"""CUDA buffers and streams for native engines: torch's CUDA, or cuda-python where torch has none.

:class:`DeviceIO` copies a batch in, enqueues the work and copies the logits out on one
non-default stream, timing the device work with CUDA events and optionally replaying a CUDA graph
per batch size. It knows nothing about TensorRT: the runner hands it ``bind`` and ``enqueue``.
torch and cuda-python are imported only inside the functions that need them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)


def torch_cuda() -> Any | None:
    """torch when it has a CUDA device, else None."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


class TorchCuda:
    """Device and pinned host buffers, a non-default stream and timing events from torch."""

    name = "torch"

    def __init__(self, device: int = 0):
        torch = torch_cuda()
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
                    "TensorRT buffers need torch with CUDA or cuda-python, and neither is usable here: "
                    "pip install -e '.[tensorrt]' in the clone (brings cuda-python)"
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
    return TorchCuda(device) if torch_cuda() is not None else CudaPython(device)


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
