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
from edge.quantize.ranges import METHODS
from edge.quantize.targets import check_tensorrt_rules
from edge.quantize.tries import Budget, Try

STEPS = 2


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PTQ-hard run: timm's test_efficientnet (squeeze-excite, SiLU; seeded, not trained), 10
    Fashion-MNIST classes at 32 px gray, batch 16 in its training config, exported, with a 16-image
    calibration set."""
    import torch

    from calibration.sets import build_calibration_set
    from edge.export import export_onnx
    from edge.manifest import write_manifest
    from train.checkpoint import save_checkpoint
    from train.data import FASHION_MNIST_LABELS
    from train.models import build_model, pretrained_spec

    arch = "test_efficientnet"
    root = tmp_path_factory.mktemp("qat") / "run"
    root.mkdir()
    spec = pretrained_spec(arch).replace(
        labels=list(FASHION_MNIST_LABELS), color="gray", crop="resize", input_size=32, resize_size=32
    )
    torch.manual_seed(0)
    config = {"data": "fashion-mnist", "seed": 0, "batch_size": 16}
    path = save_checkpoint(root / "checkpoint.pt", build_model(arch, num_classes=10), arch, spec, config=config)
    write_manifest(path, "checkpoint", spec, provenance={"arch": arch, "trained": False})
    export_onnx(root, verify_limit=8)
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
    assert recipe["loss"].startswith("distill: KL") and recipe["label_smoothing"] is None  # the default fits the float model
    assert recipe["export"]["verified_images"] == 8 and recipe["export"]["max_abs_diff"] < 1e-3
    assert prov["weight_rounding"] == {"rounding": "nearest"}  # QAT's weights keep the grid they trained on
    assert all(row["qat"] is True for row in prov["tries"])
    model = onnx.load(str(path))
    activation_zp = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_zero_point")]
    assert any(zp.dtype == np.uint8 for zp in activation_zp)  # asymmetric uint8 activations
    weights = _weight_dequantizers(model)
    assert weights and all(w.dtype == np.int8 and s.shape == (w.shape[0],) and not z.any() for w, s, z in weights)
    assert _runs_in_onnxruntime(path).shape == (4, 10)
    # SiLU (Mul(y, Sigmoid(y))) stays float on target cpu: no quantize step cuts it in two
    producers = {out: n for n in model.graph.node for out in n.output}
    silu = [
        n
        for n in model.graph.node
        if n.op_type == "Mul"
        and any(
            producers.get(i) is not None and producers[i].op_type == "Sigmoid" and set(producers[i].input) & set(n.input)
            for i in n.input
        )
    ]
    gates = [producers[i] for n in silu for i in n.input if i in producers and producers[i].op_type == "Sigmoid"]
    consumers = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert silu and len(gates) == len(silu) and not any(gate.output[0] in consumers for gate in gates)
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
        qat_loss="labels",
        out=out,
    )
    manifest = read_manifest(path)
    assert manifest.kind == "onnx-int8-trt" and manifest.metrics["simulated"] is True
    assert manifest.provenance["qat"]["loss"].startswith("labels: cross-entropy")
    assert manifest.provenance["qat"]["fake_quant"]["weights"].startswith("int8 per-channel")
    assert check_tensorrt_rules(path) == []  # symmetric int8, zero points 0, no quantized bias
    assert _runs_in_onnxruntime(path).shape == (4, 10)


# ---- auto's last resort: only when PTQ missed -----------------------------------------------------


@pytest.fixture(scope="module")
def auto_search(qat_run: Path, tmp_path_factory: pytest.TempPathFactory) -> search.QuantizeSearch:
    """An auto search (target trt) that asked for --qat-if-needed, calibrated, before its tries."""
    from edge.quantize.options import QuantizeOptions
    from edge.run import RunDir

    options = QuantizeOptions(
        target="trt",
        method="auto",
        data="fashion-mnist",
        val_limit=100,
        min_val_images=100,
        max_excluded=0,
        weight_rounding="nearest",
        bias_correction=False,
        qat_if_needed=True,
    )
    options.validate()
    return search.QuantizeSearch(RunDir.open(qat_run), options, tmp_path_factory.mktemp("auto-work"))


@pytest.fixture
def fake_fine_tune(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """QuantizeSearch.fine_tune stubbed: records the call and hands back the float parent as the
    'fine-tuned' model (the decision is under test here; the fine-tune is tested above)."""
    calls: list[str] = []

    def fine_tune(self: search.QuantizeSearch) -> Path:
        calls.append(self.options.target)
        self.qat = {"library": "stub", "steps": 0}
        return self.parent

    monkeypatch.setattr(search.QuantizeSearch, "fine_tune", fine_tune)
    return calls


def _ptq_try(agreement: float, drop: float) -> Try:
    return Try("minmax", [], Path("ptq.onnx"), val={"top1": 80.0, "drop_points": drop, "agreement": agreement, "eval_count": 100})


def test_qat_if_needed_is_skipped_when_ptq_fits(auto_search: search.QuantizeSearch, fake_fine_tune: list[str]) -> None:
    ptq = _ptq_try(agreement=100.0, drop=0.0)
    assert auto_search.qat_if_needed(ptq, []) == (ptq, [])
    assert fake_fine_tune == [] and auto_search.qat is None
    assert auto_search.qat_last_resort is not None and auto_search.qat_last_resort.startswith("not needed")


@pytest.mark.parametrize("ptq_wins", [False, True])
def test_qat_if_needed_searches_again_when_ptq_misses(
    auto_search: search.QuantizeSearch, fake_fine_tune: list[str], monkeypatch: pytest.MonkeyPatch, ptq_wins: bool
) -> None:
    monkeypatch.setattr(auto_search, "budget", Budget(max_drop=0.0, min_agreement=100.0))  # what int8 misses here
    # PTQ misses either way; it ranks ahead of every QAT try (a drop of -5 points) or behind them
    ptq = _ptq_try(agreement=99.99, drop=-5.0) if ptq_wins else _ptq_try(agreement=50.0, drop=30.0)
    auto_search.tries = [ptq]
    chosen, layers = auto_search.qat_if_needed(ptq, [])
    assert fake_fine_tune == ["trt"]
    assert [t.qat for t in auto_search.tries] == [False] + [True] * len(METHODS)  # every method again, from the QAT model
    assert auto_search.qat_last_resort is not None
    if ptq_wins:
        assert chosen is ptq and layers == [] and auto_search.qat is None  # the manifest then carries no recipe
        assert auto_search.qat_last_resort.startswith("not taken")
    else:
        assert chosen.qat and chosen in auto_search.tries[1:] and layers
        assert auto_search.qat == {"library": "stub", "steps": 0}
        assert auto_search.qat_last_resort.startswith("taken")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qat": True, "qat_if_needed": True}, "pass one of them"),
        ({"method": "minmax", "qat_if_needed": True}, "use it with --method auto"),
        ({"qat_steps": 5}, "pass --qat or --qat-if-needed"),
        ({"qat": True, "qat_steps": 0}, "--qat-steps must be at least 1"),
        ({"qat": True, "qat_loss": "mse"}, "unknown QAT loss 'mse': use distill or labels"),
    ],
)
def test_bad_qat_options_fail_before_work(qat_run: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        quantize_run(qat_run, target="cpu", **kwargs)


def test_qat_refuses_a_model_exported_from_another_checkpoint(qat_run: Path, tmp_path: Path) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(qat_run, run)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["history"] = [{"epoch": 1}]  # the checkpoint changed since model.onnx was exported from it
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(UserError, match="was not exported from the current checkpoint.pt: re-export it first"):
        quantize_run(run, target="cpu", method="minmax", qat=True, qat_steps=1)
