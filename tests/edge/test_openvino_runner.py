"""edge/runners/openvino_runner.py: the OpenVINO backend behind the Runner contract.

Parity with ONNX Runtime on the bundled photos through the ImageNet Lite0 (FP32: the same top-1 on
every image and logits within 1e-3; the QDQ INT8 file as it is: close agreement with ONNX Runtime's
INT8 kernels), one compiled model per batch size, the thread count and hint recorded, and the
errors a user meets (package missing, a device OpenVINO does not have, a file it cannot read).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import MissingDependencyError, UserError
from edge.photos import PHOTO_CLASSES, photo_set
from edge.runners import available_backends, compatible_backends, select_runner
from edge.runners.openvino_runner import OpenVinoRunner, openvino_available, openvino_device
from edge.spec import PreprocessSpec

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed: pip install -e '.[openvino]'")
PARITY_IMAGES = 12  # the 4 whole photos, then crops and flips of them


def logits_of(path: Path, backend: str, batch: np.ndarray, threads: int = 1) -> np.ndarray:
    with select_runner(path, "cpu", backend=backend, threads=threads) as runner:
        return runner.infer(batch)


@pytest.fixture(scope="module")
def photo_batch(pretrained_onnx_run: Path) -> np.ndarray:
    from edge.artifact_spec import artifact_spec

    return artifact_spec(pretrained_onnx_run / "model.onnx").apply_batch(photo_set(PARITY_IMAGES, role="test"))


@needs_openvino
def test_fp32_matches_onnxruntime_on_the_bundled_photos(pretrained_onnx_run: Path, photo_batch: np.ndarray) -> None:
    model = pretrained_onnx_run / "model.onnx"
    ort, ov = logits_of(model, "onnxruntime", photo_batch), logits_of(model, "openvino", photo_batch)
    assert ov.shape == ort.shape == (PARITY_IMAGES, 1000) and ov.dtype == np.float32
    assert np.array_equal(ov.argmax(1), ort.argmax(1))  # top-1 agreement 100%
    assert float(np.abs(ov - ort).max()) < 1e-3
    named = dict(zip(("astronaut", "cat", "coffee", "rocket"), ov.argmax(1)))
    for photo, classes in PHOTO_CLASSES.items():
        assert named[photo] in classes, (photo, named[photo])


@needs_openvino
def test_int8_qdq_file_runs_as_it_is_and_agrees_with_onnxruntime_int8(pretrained_int8_run: Path) -> None:
    """Different INT8 kernels on the same QDQ file: the top-1 of both agree on the photos, and each
    still names the cat, the coffee and the rocket."""
    from edge.artifact_spec import artifact_spec

    model = pretrained_int8_run / "model.int8-cpu.onnx"
    batch = artifact_spec(model).apply_batch(photo_set(PARITY_IMAGES, role="test"))
    ort, ov = logits_of(model, "onnxruntime", batch), logits_of(model, "openvino", batch)
    agreement = float(np.mean(ov.argmax(1) == ort.argmax(1)) * 100)
    assert agreement >= 100 * (PARITY_IMAGES - 1) / PARITY_IMAGES, f"top-1 agreement {agreement:.1f}%"
    assert float(np.corrcoef(ov.ravel(), ort.ravel())[0, 1]) > 0.99
    named = dict(zip(("astronaut", "cat", "coffee", "rocket"), ov.argmax(1)))
    for photo, classes in PHOTO_CLASSES.items():
        assert named[photo] in classes, (photo, named[photo])


@needs_openvino
def test_one_static_compiled_model_per_batch_size(pretrained_onnx_run: Path, photo_batch: np.ndarray) -> None:
    with select_runner(pretrained_onnx_run, "cpu", backend="openvino", threads=1) as runner:
        assert isinstance(runner, OpenVinoRunner) and runner.path.name == "model.onnx"
        first = runner.infer(photo_batch[:2])
        request = runner.compiled[2][1]
        again = runner.infer(photo_batch[:2])
        single = runner.infer(photo_batch[:1])
        assert sorted(runner.compiled) == [1, 2] and runner.compiled[2][1] is request  # reused, not recompiled
        assert [list(runner.compiled[b][0].input(0).get_shape()) for b in (1, 2)] == [[1, 3, 224, 224], [2, 3, 224, 224]]
        np.testing.assert_array_equal(first, again)
        np.testing.assert_allclose(single[0], first[0], atol=1e-4)
        assert runner.describe()["static_batches"] == [1, 2]
    assert runner.compiled == {}  # deactivate releases the compiled models


@needs_openvino
@pytest.mark.parametrize("threads", [1, None])
def test_threads_hint_and_precision_are_set_and_recorded(
    pretrained_onnx_run: Path, photo_batch: np.ndarray, threads: int | None
) -> None:
    from edge.runners.onnxruntime_runner import physical_cores

    with select_runner(pretrained_onnx_run / "model.onnx", "cpu", backend="openvino", threads=threads) as runner:
        runner.infer(photo_batch[:1])
        info = runner.describe()
    expected = threads or physical_cores()  # the same default as ONNX Runtime's intra-op threads
    assert info["threads"] == expected and info["backend"] == "openvino" and info["openvino_device"] == "CPU"
    assert info["performance_hint"] == "LATENCY" and info["inference_precision"] == "f32"
    compiled = info["compiled_properties"]
    assert compiled["INFERENCE_NUM_THREADS"] == str(expected)
    assert compiled["PERFORMANCE_HINT"] == "LATENCY" and compiled["NUM_STREAMS"] == "1"
    assert compiled["INFERENCE_PRECISION_HINT"] == "f32"  # not the CPU plugin's bf16 default
    assert info["compile_s"][1] > 0 and isinstance(info["cpu_int8_dot_product"], (bool, type(None)))


def test_missing_openvino_names_the_extra(pretrained_onnx_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    runner = select_runner(pretrained_onnx_run / "model.onnx", "cpu", backend="openvino")
    with pytest.raises(MissingDependencyError, match=r"needs the Python package 'openvino'.*\[openvino\]") as info:
        runner.activate()
    assert info.value.extra == "openvino" and not runner.is_active


@needs_openvino
def test_devices_map_onto_openvino_names_with_clear_errors(pretrained_onnx_run: Path) -> None:
    model = pretrained_onnx_run / "model.onnx"
    assert openvino_device("cpu", ["CPU"]) == "CPU"
    assert openvino_device("gpu", ["CPU", "GPU.0", "GPU.1"]) == "GPU"
    with pytest.raises(UserError, match=r"no CUDA device .* use --device cpu"):
        select_runner(model, "cuda", backend="openvino")
    runner = select_runner(model, "npu", backend="openvino")
    assert runner.device == "npu" and runner.ov_device == "NPU"
    import openvino

    if not any(d.startswith("NPU") for d in openvino.Core().available_devices):
        with pytest.raises(UserError, match=r"OpenVINO has no NPU device here \(it has CPU\b.*\): use --device cpu"):
            runner.activate()
    with pytest.raises(UserError, match=r"unknown device 'npu': use one of cpu, cuda \(and gpu, npu with --backend openvino\)"):
        select_runner(model, "npu", backend="onnxruntime")


def test_selector_refuses_what_openvino_cannot_run(pretrained_run: Path) -> None:
    with pytest.raises(UserError, match=r"has no artifact for backend 'openvino': expected model.onnx .*edge export"):
        select_runner(pretrained_run, "cpu", backend="openvino")
    with pytest.raises(UserError, match=r"backend 'openvino' cannot run checkpoint.pt"):
        select_runner(pretrained_run / "checkpoint.pt", "cpu", backend="openvino")


@needs_openvino
def test_unreadable_onnx_is_one_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    spec = PreprocessSpec(input_size=16, resize_size=16, crop="resize", labels=("a", "b"))
    with pytest.raises(UserError, match=r"^OpenVINO cannot read .*model.onnx: ") as info:
        OpenVinoRunner(bad, spec).activate()
    assert "\n" not in str(info.value)


def test_backends_per_artifact() -> None:
    assert compatible_backends("m.onnx") == ("onnxruntime", "ort-tensorrt", "openvino")
    assert compatible_backends("m.int8-cpu.onnx", kind="onnx-int8-cpu") == ("onnxruntime", "openvino")  # not symmetric
    assert compatible_backends("e/int8.engine") == ("tensorrt",) and compatible_backends("x.txt") == ()
    here = available_backends("m.onnx")
    assert ("openvino" in here) == openvino_available() and set(here) <= {"onnxruntime", "ort-tensorrt", "openvino"}
