"""ONNX Runtime's GPU execution providers (edge/runners/onnxruntime_runner.py) and the self-test's
comparison and report (edge/selftest.py): options, messages where onnxruntime-gpu is absent, and,
marked gpu, a CUDA/TensorRT provider run where onnxruntime-gpu is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.runners import select_runner
from edge.runners.onnxruntime_runner import (
    CUDA_EP,
    TRT_EP,
    OnnxRuntimeRunner,
    OrtTensorRTRunner,
    ort_tensorrt_runner,
    tensorrt_provider_options,
)
from tests.edge.tensorrt.test_build import SPEC, tiny_onnx


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def test_tensorrt_provider_options_describe_profile_precision_and_cache(tmp_path):
    cache = tmp_path / "cache"
    options = tensorrt_provider_options("input", (3, 224, 224), (1, 8, 32), fp16=True, engine_cache_dir=cache, workspace_gib=1)
    assert options["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert options["trt_profile_opt_shapes"] == "input:8x3x224x224"
    assert options["trt_profile_max_shapes"] == "input:32x3x224x224"
    assert options["trt_fp16_enable"] is True and options["trt_int8_enable"] is False
    assert options["trt_max_workspace_size"] == 1 << 30
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(cache) and cache.is_dir()
    assert "trt_int8_calibration_table_name" not in options  # QDQ models carry their own scales
    assert "trt_engine_cache_enable" not in tensorrt_provider_options("x", (3, 8, 8))
    with pytest.raises(UserError, match="batch range"):
        tensorrt_provider_options("x", (3, 8, 8), (8, 1, 32))
    with pytest.raises(UserError, match="workspace must be a positive"):
        tensorrt_provider_options("x", (3, 8, 8), workspace_gib=0)


@pytest.mark.skipif(TRT_EP in _providers(), reason="checks the message shown without onnxruntime-gpu")
def test_ort_tensorrt_without_onnxruntime_gpu_names_the_package(tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx")
    for call in (
        lambda: ort_tensorrt_runner(model, SPEC),
        lambda: select_runner(model, device="cuda", backend="ort-tensorrt"),
        lambda: select_runner(tmp_path, device="cuda", backend="ort-tensorrt"),
    ):
        with pytest.raises(UserError, match=r"no TensorrtExecutionProvider here .*install onnxruntime-gpu"):
            call()
    with pytest.raises(UserError, match="runs on a CUDA device, not 'cpu'"):
        ort_tensorrt_runner(model, SPEC, device="cpu")


@pytest.mark.skipif(CUDA_EP in _providers(), reason="checks the message shown without onnxruntime-gpu")
def test_cuda_provider_absent_is_a_user_error_and_cpu_behaviour_is_kept(tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx")
    with pytest.raises(UserError, match=r"no CUDAExecutionProvider .*onnxruntime-gpu"), select_runner(model, device="cuda"):
        pass
    x = np.ones((2, 3, 16, 16), np.float32)
    with select_runner(model, device="cpu") as runner:
        assert isinstance(runner, OnnxRuntimeRunner) and runner.describe()["providers"] == ["CPUExecutionProvider"]
        assert runner.infer(x).shape == (2, 3)


def test_ort_tensorrt_runner_refuses_a_silent_fallback_to_cpu(tmp_path):
    # ONNX Runtime quietly drops a provider whose libraries fail to load; we refuse instead.
    model = tiny_onnx(tmp_path / "model.onnx")
    runner = OrtTensorRTRunner(model, SPEC, device="cuda", providers=["CPUExecutionProvider"])
    with (
        pytest.raises(UserError, match=r"could not start its TensorRT provider \(session uses \['CPUExecutionProvider'\]\)"),
        runner,
    ):
        pass
    assert runner.session is None and not runner.is_active


def test_ort_tensorrt_runner_rejects_unreadable_models(tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TRT_EP, CUDA_EP, "CPUExecutionProvider"])
    with pytest.raises(UserError, match="does not exist"):
        ort_tensorrt_runner(tmp_path / "none.onnx", SPEC)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="is not a readable ONNX model"):
        ort_tensorrt_runner(bad, SPEC)
    model = tiny_onnx(tmp_path / "model.int8-trt.onnx")
    runner = ort_tensorrt_runner(model, SPEC, engine_cache_dir=tmp_path / "c")
    trt_options = dict(p for p in runner._providers if isinstance(p, tuple))[TRT_EP]
    assert trt_options["trt_int8_enable"] is True and runner.max_batch == 32  # QDQ model: int8 by default


@pytest.mark.gpu
def test_cuda_and_tensorrt_providers_agree_with_cpu(tmp_path):
    providers = _providers()
    if CUDA_EP not in providers:
        pytest.skip(f"onnxruntime-gpu is not installed here (providers {providers})")
    model = tiny_onnx(tmp_path / "model.onnx")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with select_runner(model, device="cpu") as cpu:
        expected = cpu.infer(x)
    with select_runner(model, device="cuda") as cuda:
        np.testing.assert_allclose(cuda.infer(x), expected, rtol=1e-3, atol=1e-3)
    if TRT_EP in providers:
        with ort_tensorrt_runner(model, SPEC, engine_cache_dir=tmp_path / "cache", batch=(1, 4, 8)) as trt:
            np.testing.assert_allclose(trt.infer(x), expected, rtol=1e-2, atol=1e-2)
        assert any((tmp_path / "cache").iterdir())


# ---- edge selftest: the comparison and the report (engines replaced by fakes) ------------------


class _Fake:
    """Stands in for a runner: fixed logits, the spec of the tiny model."""

    def __init__(self, logits: np.ndarray, device_ms: float | None = None):
        self.logits, self.spec, self.last_device_ms = logits, SPEC, device_ms

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def infer(self, batch):
        return self.logits[: batch.shape[0]]


def test_selftest_compares_with_onnxruntime_and_writes_the_report(tmp_path, monkeypatch):
    import edge.quantize.cli
    import edge.runners
    import edge.tensorrt.build
    from edge import selftest
    from tests.edge.test_selftest import fake_int8_trt

    run = tmp_path / "run"
    tiny_onnx(run / "model.onnx")
    reference = np.full((3, 1000), -5.0, np.float32)
    for row, cls in enumerate((281, 967, 812)):  # cat, coffee, rocket
        reference[row, cls] = 5.0
    # fp16 is off by more than its 0.25 budget; int8 is judged by top-1 only
    engines = {"fp32": reference + 1e-4, "fp16": reference + 0.5, "int8": reference + 0.5}

    def fake_select(artifact, device="cpu", backend="auto", **options):
        path = Path(artifact)
        if path.suffix == ".onnx":
            return _Fake(reference)
        return _Fake(engines[path.name.split(".")[1]], device_ms=0.5)

    def fake_build(request):
        (precision,) = request.precisions
        return [{"engine": str(run / "engines" / "m" / f"model.{precision}.engine")}]

    monkeypatch.setattr(edge.runners, "select_runner", fake_select)
    monkeypatch.setattr(edge.tensorrt.build, "build_engines", fake_build)
    monkeypatch.setattr(edge.quantize.cli, "quantize_run", lambda root, **kw: fake_int8_trt(Path(root)))
    monkeypatch.setattr(
        selftest, "evaluation_photos", lambda: {n: np.zeros((20, 20, 3), np.uint8) for n in ("cat", "coffee", "rocket")}
    )
    env = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    report = selftest.selftest(run, None, 3, env)
    rows = {r["precision"]: r for r in report["rows"]}
    assert rows["fp32"]["status"] == "pass" and rows["fp32"]["photos_named"] and rows["fp32"]["device_p50_ms"] == 0.5
    assert rows["fp16"]["status"] == "fail" and rows["fp16"]["max_abs_diff_vs_ort"] == pytest.approx(0.5, abs=1e-3)
    # Agreement is a percentage (0-100), like every accuracy figure: fp16 fails on its logits, not its top-1.
    assert rows["fp32"]["top1_agreement_vs_ort"] == 100.0 and rows["fp16"]["top1_agreement_vs_ort"] == 100.0
    assert rows["int8"]["status"] == "pass"  # quantized by the selftest, built and compared
    assert report["passed"] is False
    written = json.loads((run / "selftest" / "report.json").read_text())
    assert written["rows"][0]["top1"] == {"cat": 281, "coffee": 967, "rocket": 812}
    assert "not yet verified on hardware" in written["note"]
    assert written["rows"][0]["top1_agreement_vs_ort"] == 100.0
    markdown = (run / "selftest" / "report.md").read_text()
    assert "| fp16 | fail |" in markdown and "| 100% |" in markdown
    assert selftest.failure_reason(report) == "fp16: fail"


def test_selftest_top1_agreement_is_a_percentage(monkeypatch):
    import edge.runners
    from edge import selftest

    expected = np.full((3, 1000), -5.0, np.float32)
    for row, cls in enumerate((281, 967, 812)):  # cat, coffee, rocket
        expected[row, cls] = 5.0
    got = expected.copy()
    got[2, 0] = 9.0  # the rocket becomes class 0: 2 of 3 agree
    monkeypatch.setattr(edge.runners, "select_runner", lambda *args, **kwargs: _Fake(got, device_ms=0.5))
    batch = np.zeros((3, 3, 16, 16), np.float32)
    row = selftest._check_engine(Path("run/engines/m/model.int8.engine"), batch, expected, ["cat", "coffee", "rocket"], 2)
    assert row["top1_agreement_vs_ort"] == pytest.approx(200 / 3) and row["status"] == "fail" and not row["photos_named"]
    env = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    markdown = selftest._markdown({"passed": False, "environment": env, "run": "run", "rows": [row]})
    assert "| int8 | fail | 14 | 67% | False |" in markdown
