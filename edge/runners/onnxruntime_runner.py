"""ONNX Runtime backend: CPU provider, and the CUDA / TensorRT providers where onnxruntime-gpu is installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.runners.base import Runner
from edge.spec import PreprocessSpec

PROVIDER_HINT = (
    "install onnxruntime-gpu instead of onnxruntime (pip uninstall onnxruntime, then pip install -e '.[gpu]' in the clone; on a Jetson use "
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
    """Runs an ONNX file in an InferenceSession with pinned, recorded thread settings.

    ``all_outputs=True`` is for debugging models whose intermediate tensors are graph outputs (the
    per-layer quantization error): :meth:`infer_outputs` then returns every output by name, and the
    graph runs as written, without ONNX Runtime's graph optimizations, so that no fused kernel
    changes the tensors it is asked for (as ``onnxruntime.quantization.qdq_loss_debug`` runs it).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cpu",
        threads: int | None = None,
        providers: list[Any] | None = None,
        max_batch: int | None = None,
        all_outputs: bool = False,
    ):
        super().__init__(path, spec, device=device, threads=threads, max_batch=max_batch)
        self._providers = providers
        self.all_outputs = all_outputs
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
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.all_outputs else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads or physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not self.spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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

    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output of one batch by name (a runner made with ``all_outputs=True``)."""
        if not self.all_outputs:
            raise RuntimeError("infer_outputs needs a runner made with all_outputs=True (infer returns the logits)")
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__}.infer_outputs called outside `with runner:` (activate it first)")
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, {self.input_name: self.check_batch(batch)})))

    def _deactivate(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.session is not None:
            info["providers"] = self.session.get_providers()
        return info


# ---- ONNX Runtime's TensorRT execution provider (onnxruntime-gpu) ---------------------------------

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"


def tensorrt_provider_options(
    input_name: str,
    input_shape: tuple[int, int, int],
    batch: tuple[int, int, int] = (1, 8, 32),
    fp16: bool = False,
    int8: bool = False,
    engine_cache_dir: str | os.PathLike[str] | None = None,
    workspace_gib: float = 2.0,
    device_id: int = 0,
) -> dict[str, Any]:
    """Options of ONNX Runtime's TensorRT execution provider for one image input.

    ``int8`` is for QDQ models only: their scales are in the graph, so no calibration table is
    given. The engine cache must be cleared when the model, ONNX Runtime or TensorRT changes;
    ``engine_cache_dir`` should therefore be specific to one model and machine.
    """
    low, opt, high = batch
    if not 1 <= low <= opt <= high:
        raise UserError(f"batch range {batch} is not 1 <= MIN <= OPT <= MAX")
    if workspace_gib <= 0:
        raise UserError(f"workspace must be a positive number of GiB, got {workspace_gib}")

    def shape(n: int) -> str:
        return f"{input_name}:{n}x" + "x".join(map(str, input_shape))

    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": bool(fp16),
        "trt_int8_enable": bool(int8),
        "trt_max_workspace_size": int(workspace_gib * (1 << 30)),
        "trt_profile_min_shapes": shape(low),
        "trt_profile_opt_shapes": shape(opt),
        "trt_profile_max_shapes": shape(high),
    }
    if engine_cache_dir is not None:
        cache = Path(engine_cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        options.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=str(cache),
            trt_timing_cache_enable=True,
            trt_timing_cache_path=str(cache),
        )
    return options


def _onnx_input_name(path: Path) -> str:
    import onnx

    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise UserError(f"{path} is not a readable ONNX model: {str(exc)[:200]}") from exc
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"{path} has {len(inputs)} inputs; edge models take exactly one image input")
    return inputs[0]


class OrtTensorRTRunner(OnnxRuntimeRunner):
    """ONNX Runtime with the TensorRT execution provider first, CUDA and CPU as fallbacks for
    nodes TensorRT does not take. Refuses to run when the TensorRT provider failed to load."""

    backend = "ort-tensorrt"

    def _activate(self) -> None:
        super()._activate()
        used = self.session.get_providers()
        if TRT_EP not in used:
            self.session = None
            raise UserError(
                f"ONNX Runtime could not start its TensorRT provider (session uses {used}): check that TensorRT's "
                "libraries (libnvinfer) match this onnxruntime-gpu build"
            )


def ort_tensorrt_runner(
    path: str | os.PathLike[str],
    spec: PreprocessSpec,
    device: str = "cuda",
    threads: int | None = None,
    fp16: bool = False,
    int8: bool | None = None,
    engine_cache_dir: str | os.PathLike[str] | None = None,
    batch: tuple[int, int, int] = (1, 8, 32),
    workspace_gib: float = 2.0,
    max_batch: int | None = None,
) -> OnnxRuntimeRunner:
    """An ONNX Runtime runner on the TensorRT execution provider (backend "ort-tensorrt").

    ``int8`` defaults to True for QDQ models (``*.int8-trt.onnx``). ``engine_cache_dir`` defaults
    to ``<model>.ort-trt-cache/`` beside the model. Needs onnxruntime-gpu built with TensorRT.
    """
    path = Path(path)
    if device != "cuda":
        raise UserError(f"the ort-tensorrt backend runs on a CUDA device, not {device!r}: use --device cuda")
    ort = require("onnxruntime", "gpu", "ONNX Runtime's TensorRT provider")
    available = ort.get_available_providers()
    if TRT_EP not in available:
        raise UserError(f"ONNX Runtime has no {TRT_EP} here (have {available}): {PROVIDER_HINT}")
    input_name = _onnx_input_name(path)
    if int8 is None:
        int8 = ".int8-" in path.name
    cache = Path(engine_cache_dir) if engine_cache_dir is not None else path.with_name(path.name + ".ort-trt-cache")
    options = tensorrt_provider_options(input_name, spec.input_shape, batch, fp16, int8, cache, workspace_gib)
    providers: list[Any] = [(TRT_EP, options), (CUDA_EP, {"device_id": 0}), "CPUExecutionProvider"]
    providers = [p for p in providers if (p[0] if isinstance(p, tuple) else p) in available]
    return OrtTensorRTRunner(path, spec, device="cuda", threads=threads, providers=providers, max_batch=max_batch or batch[2])
