"""OpenVINO backend: any ONNX artifact (model.onnx, the QDQ model.int8-cpu.onnx as it is) on OpenVINO's
CPU plugin, or its GPU / NPU plugins where this machine has them.

OpenVINO reads the ONNX file itself (no conversion step, no IR file on disk). A compiled model has
a static input shape: the model is reshaped to ``[B, C, H, W]`` and compiled once per batch size
``B`` the first time a batch of that size arrives, then reused (:attr:`OpenVinoRunner.compiled`).
The thread count and the performance hint (LATENCY: one stream, every thread on one request, as
ONNX Runtime's sequential session) are pinned like the other CPU runners and recorded in
:meth:`OpenVinoRunner.describe`. The inference precision is pinned to f32: OpenVINO's CPU plugin
otherwise runs an FP32 model in bf16 on CPUs with bf16 support, which is not the artifact measured;
a QDQ model's quantized layers still run in INT8.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from edge.errors import MissingDependencyError, UserError
from edge.runners.base import Runner
from edge.runners.onnxruntime_runner import physical_cores
from edge.spec import PreprocessSpec

# our --device name -> OpenVINO's device name ("cuda" is NVIDIA's and none of OpenVINO's)
OPENVINO_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
PERFORMANCE_HINT = "LATENCY"
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86 VNNI/AMX, Arm's dot product


def require_openvino(purpose: str = "The openvino backend") -> Any:
    """The ``openvino`` module, or MissingDependencyError naming the ``openvino`` extra."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError("openvino", "openvino", purpose) from exc
    return openvino


def openvino_available() -> bool:
    """Whether OpenVINO can be imported here (it runs on any x86-64 or Arm64 CPU it installs on)."""
    try:
        require_openvino()
    except MissingDependencyError:
        return False
    return True


def openvino_name(device: str) -> str:
    """Our device name -> OpenVINO's (``cpu`` -> ``CPU``), or a UserError naming the devices it has."""
    if device == "cuda":
        raise UserError(
            "the openvino backend has no CUDA device (OpenVINO runs on Intel CPUs, GPUs and NPUs): use --device cpu, "
            "or --backend onnxruntime / tensorrt for an NVIDIA GPU"
        )
    name = OPENVINO_DEVICES.get(device)
    if name is None:
        raise UserError(f"unknown openvino device {device!r}: use one of {', '.join(OPENVINO_DEVICES)}")
    return name


def openvino_device(device: str, available: list[str]) -> str:
    """Our device name -> the OpenVINO device to compile for, or a UserError listing those here."""
    name = openvino_name(device)
    if not any(d == name or d.startswith(name + ".") for d in available):
        raise UserError(f"OpenVINO has no {name} device here (it has {', '.join(available) or 'none'}): use --device cpu")
    return name


def cpu_int8_dot_product() -> bool | None:
    """Whether this CPU has INT8 dot-product instructions (VNNI, AMX or Arm's asimddp); None if unknown.
    Without them OpenVINO still runs a QDQ model, with slower INT8 kernels."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = {word for line in handle if line.startswith(("flags", "Features")) for word in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return any(flag in flags for flag in INT8_DOT_FLAGS) if flags else None


class OpenVinoRunner(Runner):
    """Runs an ONNX file on OpenVINO, compiled per batch size with a static shape."""

    backend = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
        precision: str | None = None,
        perf_count: bool = False,
    ):
        # The base contract knows cpu and cuda; OpenVINO has cpu, gpu and npu (present ones checked in _activate).
        self.ov_device = openvino_name(device)
        super().__init__(path, spec, device="cpu", threads=threads, max_batch=max_batch)
        self.device = device
        # f32 on the CPU (see the module docstring); the GPU and NPU plugins keep their own default (f16)
        self.precision = precision or ("f32" if self.ov_device == "CPU" else None)
        self.perf_count = perf_count  # per-layer times of the last call (op_profile), at a small cost per call
        self.core: Any = None
        self.model: Any = None
        self.compiled: dict[int, Any] = {}  # batch size -> (compiled model, infer request)
        self.compile_s: dict[int, float] = {}
        self.version = ""

    def config(self) -> dict[str, Any]:
        """The properties every batch size is compiled with."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": PERFORMANCE_HINT}
        if self.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if self.ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.perf_count:
            config["PERF_COUNT"] = True
        return config

    def _activate(self) -> None:
        ov = require_openvino()
        if not self.path.is_file():
            raise UserError(f"ONNX model {self.path} does not exist")
        self.core = ov.Core()
        self.ov_device = openvino_device(self.device, list(self.core.available_devices))
        self.threads = self.threads or physical_cores()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line trace for bad models
            raise UserError(f"OpenVINO cannot read {self.path}: {_first_line(exc)}") from exc
        if len(self.model.inputs) != 1:
            raise UserError(f"{self.path} has {len(self.model.inputs)} inputs; edge models take exactly one image input")
        self.version = ov.get_version()

    def compiled_for(self, batch_size: int) -> Any:
        """The infer request of the model compiled for ``batch_size`` (compiled on first use)."""
        if batch_size not in self.compiled:
            model = self.model.clone()
            try:
                model.reshape({model.inputs[0]: [batch_size, *self.input_shape]})
                start = time.perf_counter()
                compiled = self.core.compile_model(model, self.ov_device, self.config())
            except Exception as exc:
                raise UserError(
                    f"OpenVINO cannot compile {self.path.name} for batch {batch_size} on {self.ov_device}: {_first_line(exc)}"
                ) from exc
            self.compile_s[batch_size] = time.perf_counter() - start
            self.compiled[batch_size] = (compiled, compiled.create_infer_request())
        return self.compiled[batch_size][1]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = self.compiled_for(batch.shape[0])
        request.infer({0: batch}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request reuses its buffer

    def op_profile(self, batch_size: int) -> list[dict[str, Any]]:
        """Where the last call at ``batch_size`` spent its time, by layer type and kernel (OpenVINO's
        executed graph, fused layers included), slowest first; needs ``perf_count=True``."""
        if not self.perf_count or batch_size not in self.compiled:
            raise RuntimeError("op_profile needs a runner made with perf_count=True that has run this batch size")
        totals: dict[tuple[str, str], list[float]] = {}
        for item in self.compiled[batch_size][1].profiling_info:
            if str(item.status).endswith("EXECUTED"):
                entry = totals.setdefault((item.node_type, item.exec_type), [0.0, 0])
                entry[0] += item.real_time.total_seconds() * 1000
                entry[1] += 1
        rows = [{"op": op, "kernel": kernel, "ms": ms, "layers": int(n)} for (op, kernel), (ms, n) in totals.items()]
        return sorted(rows, key=lambda row: -row["ms"])

    def _deactivate(self) -> None:
        self.compiled.clear()
        self.model = None
        self.core = None

    def compiled_properties(self) -> dict[str, str]:
        """What OpenVINO actually compiled with (of the first compiled batch size), as strings."""
        if not self.compiled:
            return {}
        compiled = next(iter(self.compiled.values()))[0]
        keys = ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "EXECUTION_DEVICES")
        return {key: _plain(compiled.get_property(key)) for key in keys if key in _supported(compiled)}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            openvino_device=self.ov_device,
            openvino_version=self.version or None,
            performance_hint=PERFORMANCE_HINT,
            inference_precision=self.precision,
            static_batches=sorted(self.compiled),
            compile_s={batch: round(seconds, 3) for batch, seconds in sorted(self.compile_s.items())},
            cpu_int8_dot_product=cpu_int8_dot_product(),
        )
        if self.compiled:
            info["compiled_properties"] = self.compiled_properties()
        return info


def _supported(compiled: Any) -> set[str]:
    try:
        return set(compiled.get_property("SUPPORTED_PROPERTIES"))
    except Exception:  # an older plugin without the query: ask for nothing it may not know
        return set()


def _plain(value: Any) -> str:
    """A property as text: ``f32`` for an element type, ``CPU`` for a list of one device."""
    if hasattr(value, "to_string"):
        return str(value.to_string())
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(getattr(value, "name", value))


def _first_line(exc: BaseException) -> str:
    """OpenVINO's exceptions carry a C++ trace; the last non-empty line is the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
