"""ONNX Runtime backend: CPU provider, and the CUDA / TensorRT providers where onnxruntime-gpu is installed."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.runners.base import Runner
from edge.spec import PreprocessSpec

PROVIDER_HINT = (
    "install onnxruntime-gpu instead of onnxruntime (pip install 'edge-harness[gpu]'; on a Jetson use "
    "the JetPack wheel from the Jetson Zoo)"
)


def physical_cores() -> int:
    """Physical cores (ONNX Runtime's own default for intra-op threads)."""
    try:
        pairs = set()
        core = phys = None
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    pairs.add((phys, core))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return os.cpu_count() or 1


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file in an InferenceSession with pinned, recorded thread settings."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cpu",
        threads: int | None = None,
        providers: list[Any] | None = None,
        max_batch: int | None = None,
    ):
        super().__init__(path, spec, device=device, threads=threads, max_batch=max_batch)
        self._providers = providers
        self.session: Any = None
        self.input_name = ""

    def provider_list(self) -> list[Any]:
        ort = require("onnxruntime", "cpu", "Running ONNX models")
        available = ort.get_available_providers()
        if self._providers is not None:
            wanted = [p[0] if isinstance(p, tuple) else p for p in self._providers]
            missing = [p for p in wanted if p not in available]
            if missing:
                raise UserError(f"ONNX Runtime provider(s) {missing} not available here (have {available}): {PROVIDER_HINT}")
            return list(self._providers)
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise UserError(f"ONNX Runtime has no CUDAExecutionProvider here (have {available}): {PROVIDER_HINT}")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _activate(self) -> None:
        ort = require("onnxruntime", "cpu", "Running ONNX models")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads or physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not self.path.exists():
            raise UserError(f"ONNX model {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.provider_list())
        except UserError:
            raise
        except Exception as exc:  # ORT raises its own exception types for corrupt/invalid models
            raise UserError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0][:300]}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{self.path} has {len(inputs)} inputs; edge models take exactly one image input")
        self.input_name = inputs[0].name
        self.threads = options.intra_op_num_threads

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch})[:1]
        return np.asarray(logits, dtype=np.float32)

    def _deactivate(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.session is not None:
            info["providers"] = self.session.get_providers()
        return info
