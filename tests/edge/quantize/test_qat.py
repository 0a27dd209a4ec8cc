"""edge/quantize/qat.py (with train/qat.py): `edge quantize --qat` and auto's last resort --qat-if-needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.errors import UserError
from edge.manifest import read_manifest
from edge.quantize import search
from edge.quantize.cli import quantize_run
from edge.quantize.targets import check_tensorrt_rules

STEPS = 2


@pytest.fixture(scope="module")
def qat_run(fashion_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fashion run with a 16-image calibration set."""
    from calibration.sets import build_calibration_set

    root = tmp_path_factory.mktemp("qat") / "run"
    shutil.copytree(fashion_onnx_run, root)
    build_calibration_set(root, "fashion-mnist", size=16, seed=0, progress=False)
    return root


def _runs_in_onnxruntime(path: Path, count: int = 4) -> np.ndarray:
    from edge.runners import select_runner

    with select_runner(path) as runner:
        batch = np.random.default_rng(0).standard_normal((count, *runner.spec.input_shape)).astype(np.float32)
        return runner.infer(batch)


def _weight_dequantizers(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    return [
        tuple(inits[name] for name in n.input)  # type: ignore[misc]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights
    ]


def test_qat_cpu_target_through_the_cli(qat_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt (the qat extra)")
    import modelopt

    from edge.cli import main
    from edge.inspect import print_artifact

    code = main(
        ["quantize", str(qat_run), "--target", "cpu", "--method", "minmax", "--data", "fashion-mnist", "--eval-limit", "100"]
        + ["--no-bias-correction", "--qat", "--qat-steps", str(STEPS)]
    )
    path = qat_run / "model.int8-cpu.onnx"
    manifest = read_manifest(path)
    prov, metrics = manifest.provenance, manifest.metrics
    assert code == (0 if metrics["accepted"] else 1)
    # acceptance on the test split, against the run's own float model.onnx
    assert metrics["eval_source"] == "fashion-mnist:test" and metrics["eval_count"] == 100
    assert manifest.parent_file == "model.onnx"
    recipe = prov["qat"]
    assert recipe["library"] == "nvidia-modelopt" and recipe["version"] == modelopt.__version__
    assert recipe["steps"] == STEPS and recipe["steps_given"] is True
    assert recipe["images"] == STEPS * recipe["batch_size"] and recipe["train_split"] == "train"
    assert recipe["lr"] == pytest.approx(0.01 * recipe["original_lr"]) and recipe["schedule"].startswith("cosine")
    assert recipe["start_ranges"]["content_hash"] == prov["calibration"]["content_hash"]
    assert recipe["start_ranges"]["images"] == 16
    assert recipe["export"]["verified_images"] == 8 and recipe["export"]["max_abs_diff"] < 1e-3
    assert prov["weight_rounding"] == {"rounding": "nearest"}  # QAT's weights keep the grid they trained on
    assert all(row["qat"] is True for row in prov["tries"])
    model = onnx.load(str(path))
    activation_zp = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_zero_point")]
    assert any(zp.dtype == np.uint8 for zp in activation_zp)  # asymmetric uint8 activations
    weights = _weight_dequantizers(model)
    assert weights and all(w.dtype == np.int8 and s.shape == (w.shape[0],) and not z.any() for w, s, z in weights)
    assert _runs_in_onnxruntime(path).shape == (4, 10)
    capsys.readouterr()
    print_artifact(path)
    shown = capsys.readouterr().out
    assert "provenance.qat.library" in shown and "nvidia-modelopt" in shown and "provenance.qat.steps" in shown


def test_qat_trt_target_is_symmetric(qat_run: Path) -> None:
    pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt (the qat extra)")
    out = qat_run / "qat.int8-trt.onnx"
    path = quantize_run(
        qat_run,
        target="trt",
        method="minmax",
        data="fashion-mnist",
        eval_limit=100,
        bias_correction=False,
        qat=True,
        qat_steps=STEPS,
        out=out,
    )
    manifest = read_manifest(path)
    assert manifest.kind == "onnx-int8-trt" and manifest.metrics["simulated"] is True
    assert manifest.provenance["qat"]["fake_quant"]["weights"].startswith("int8 per-channel")
    assert check_tensorrt_rules(path) == []  # symmetric int8, zero points 0, no quantized bias
    assert _runs_in_onnxruntime(path).shape == (4, 10)


# ---- auto's last resort: only when asked, only when PTQ missed ------------------------------------


@pytest.fixture
def fake_fine_tune(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """QuantizeSearch.fine_tune stubbed: records the call and hands back the float parent as the
    'fine-tuned' model (the decision logic is under test, not the fine-tune)."""
    calls: list[str] = []

    def fine_tune(self: search.QuantizeSearch) -> Path:
        calls.append(self.options.target)
        self.qat = {"library": "stub", "steps": 0}
        return self.parent

    monkeypatch.setattr(search.QuantizeSearch, "fine_tune", fine_tune)
    return calls


def _auto(run: Path, tmp_path: Path, **budget: float) -> dict:
    path = quantize_run(
        run,
        target="trt",
        method="auto",
        data="fashion-mnist",
        val_limit=100,
        min_val_images=100,
        eval_limit=100,
        max_excluded=0,
        weight_rounding="nearest",
        bias_correction=False,
        qat_if_needed=True,
        out=tmp_path / "auto.int8-trt.onnx",
        **budget,
    )
    return read_manifest(path).provenance


def test_qat_if_needed_is_skipped_when_ptq_fits(qat_run: Path, tmp_path: Path, fake_fine_tune: list[str]) -> None:
    prov = _auto(qat_run, tmp_path, max_drop=100.0, min_agreement=2.0)
    assert fake_fine_tune == []
    assert prov["qat"] is None and prov["qat_last_resort"].startswith("not needed")
    assert not any(row.get("qat") for row in prov["tries"])


def test_qat_if_needed_runs_when_ptq_misses(qat_run: Path, tmp_path: Path, fake_fine_tune: list[str]) -> None:
    prov = _auto(qat_run, tmp_path, max_drop=0.0, min_agreement=100.0)  # int8 never agrees on every val image here
    assert fake_fine_tune == ["trt"]
    qat_rows = [row for row in prov["tries"] if row.get("qat")]
    assert len(qat_rows) == 3 and len(prov["tries"]) == 6  # every method again, from the fine-tuned model
    # the stub's "fine-tuned" model is the float parent: QAT scores the same, so PTQ (first) is kept
    assert prov["qat_last_resort"].startswith("not taken") and prov["qat"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qat": True, "qat_if_needed": True}, "pass one of them"),
        ({"method": "minmax", "qat_if_needed": True}, "use it with --method auto"),
        ({"qat_steps": 5}, "pass --qat or --qat-if-needed"),
        ({"qat": True, "qat_steps": 0}, "--qat-steps must be at least 1"),
    ],
)
def test_bad_qat_options_fail_before_work(fashion_onnx_run: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        quantize_run(fashion_onnx_run, target="cpu", **kwargs)


def test_qat_refuses_a_model_exported_from_another_checkpoint(qat_run: Path, tmp_path: Path) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(qat_run, run)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["history"] = [{"epoch": 1}]  # the checkpoint changed since model.onnx was exported from it
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(UserError, match="was not exported from the current checkpoint.pt: re-export it first"):
        quantize_run(run, target="cpu", method="minmax", qat=True, qat_steps=1)
