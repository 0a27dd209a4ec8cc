import numpy as np
import pytest

from edge.errors import UserError
from edge.photos import PHOTO_CLASSES
from edge.runners import Runner, RunnerInputError, select_runner, tensorrt_available
from edge.spec import PreprocessSpec

SPEC = PreprocessSpec(input_size=8, resize_size=8, crop="resize", labels=["a", "b", "c"])


class SumRunner(Runner):
    """A runner built in code: logits are per-channel sums, so outputs are checkable."""

    backend = "sum"

    def _activate(self):
        self.activated = True

    def _infer(self, batch):
        return batch.sum(axis=(2, 3))


def test_contract_returns_host_float32_logits(tmp_path):
    batch = np.ones((2, 3, 8, 8), np.float32)
    with SumRunner(tmp_path / "m", SPEC) as runner:
        out = runner.infer(batch)
        assert runner.is_active
    assert not runner.is_active
    assert out.dtype == np.float32 and out.shape == (2, 3) and np.allclose(out, 64)


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.ones((2, 3, 8, 8), np.float64), r"float32 input, got float64; use batch.astype\(np.float32\)"),
        (np.ones((3, 8, 8), np.float32), r"add a batch axis"),
        (np.ones((1, 3, 16, 16), np.float32), r"incompatible input shape \(1, 3, 16, 16\).*PreprocessSpec"),
        ([[1.0]], "numpy float32 NCHW array"),
        (np.ones((0, 3, 8, 8), np.float32), "empty batch"),
        (np.ones((5, 3, 8, 8), np.float32), "exceeds this artifact's maximum batch 4"),
    ],
)
def test_infer_validates_with_actionable_messages(tmp_path, batch, message):
    with SumRunner(tmp_path / "m", SPEC, max_batch=4) as runner, pytest.raises(RunnerInputError, match=message):
        runner.infer(batch)


def test_infer_outside_with_is_a_bug_not_a_user_error(tmp_path):
    with pytest.raises(RuntimeError, match="outside `with runner:`"):
        SumRunner(tmp_path / "m", SPEC).infer(np.ones((1, 3, 8, 8), np.float32))


def test_selector_picks_backend_from_suffix(pretrained_run):
    runner = select_runner(pretrained_run / "checkpoint.pt")
    assert runner.backend == "torch" and runner.spec.num_classes == 1000
    assert select_runner(pretrained_run).backend in ("torch", "onnxruntime")


def test_selector_rejects_mismatched_backend_and_unknown_names(pretrained_run, tmp_path):
    only_checkpoint = tmp_path / "run"
    only_checkpoint.mkdir()
    (only_checkpoint / "checkpoint.pt").symlink_to(pretrained_run / "checkpoint.pt")
    with pytest.raises(UserError, match="no artifact for backend 'onnxruntime'.*edge export"):
        select_runner(only_checkpoint, backend="onnxruntime")
    with pytest.raises(UserError, match="backend 'torch' cannot run model.fp16.engine"):
        (tmp_path / "model.fp16.engine").write_bytes(b"")
        select_runner(tmp_path / "model.fp16.engine", backend="torch")
    with pytest.raises(UserError, match="unknown backend 'tflite'"):
        select_runner(pretrained_run, backend="tflite")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        select_runner(pretrained_run, device="tpu")
    odd = tmp_path / "model.tflite"
    odd.write_bytes(b"")
    with pytest.raises(UserError, match="unknown artifact type '.tflite'"):
        select_runner(odd)
    with pytest.raises(UserError, match="does not exist"):
        select_runner(tmp_path / "missing.onnx")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_tensorrt_absent_gives_a_clear_error(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(UserError, match="TensorRT is not installed"):
        select_runner(engine, device="cuda")


def test_torch_cuda_absent_is_a_user_error(pretrained_run):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with (
        pytest.raises(UserError, match="cannot see a CUDA device"),
        select_runner(pretrained_run / "checkpoint.pt", device="cuda"),
    ):
        pass


def test_torch_and_onnxruntime_agree_on_real_images(pretrained_onnx_run, photos):
    spec = select_runner(pretrained_onnx_run / "model.onnx").spec
    frames = list(photos.values())
    # Real photos plus flipped and cropped views of them: 9 images, 3 per class.
    frames += [f[:, ::-1].copy() for f in photos.values()]
    frames += [f[20:-20, 30:-30].copy() for f in photos.values()]
    batch = spec.apply_batch(frames)
    with select_runner(pretrained_onnx_run, backend="torch") as torch_runner:
        expected = torch_runner.infer(batch)
    with select_runner(pretrained_onnx_run, backend="onnxruntime", threads=2) as ort_runner:
        actual = ort_runner.infer(batch)
        assert ort_runner.describe()["providers"] == ["CPUExecutionProvider"]
    np.testing.assert_allclose(actual, expected, atol=1e-3, rtol=1e-3)
    agreement = np.mean(actual.argmax(1) == expected.argmax(1))
    assert agreement == 1.0
    for name, row in zip(list(photos) * 3, actual):
        assert int(row.argmax()) in PHOTO_CLASSES[name]


def test_onnxruntime_cuda_provider_absent_names_the_package(pretrained_onnx_run):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(UserError, match="onnxruntime-gpu"), select_runner(pretrained_onnx_run / "model.onnx", device="cuda"):
        pass


def test_corrupt_onnx_is_a_user_error(tmp_path, pretrained_onnx_run):
    import shutil

    bad = tmp_path / "model.onnx"
    shutil.copy(pretrained_onnx_run / "model.onnx.json", tmp_path / "model.onnx.json")
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(UserError, match="does not match its manifest model.onnx.json .* `edge export"):
        select_runner(bad)  # the selector checks the pair before any backend loads the file
    from edge.artifact_spec import artifact_spec
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    spec = artifact_spec(pretrained_onnx_run / "model.onnx")
    with pytest.raises(UserError, match="ONNX Runtime cannot load"), OnnxRuntimeRunner(bad, spec):
        pass


def test_spin_wait_off_reaches_the_onnxruntime_session(pretrained_onnx_run):
    runner = select_runner(pretrained_onnx_run / "model.onnx", threads=1)
    runner.spin_wait = False
    with runner:
        entry = runner.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == "0"
