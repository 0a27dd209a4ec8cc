"""edge/quantize/evaluate.py: percentages, and the per-layer diagnostics run through the runners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.artifact_spec import artifact_spec
from edge.quantize.evaluate import _activations, compare, layer_errors, predict
from edge.runners.onnxruntime_runner import OnnxRuntimeRunner


def test_compare_reports_percentages_and_points() -> None:
    parent = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]  # predicts 0, 1, 2, 3
    child = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]  # one flip
    labels = np.array([0, 1, 3, 3])
    result = compare(parent, child, labels)
    assert result["parent_top1"] == 75.0 and result["top1"] == 50.0
    assert result["drop_points"] == 25.0
    assert result["agreement"] == 75.0 and result["flips"] == 1
    assert result["top5"] == result["parent_top5"] == 100.0  # 4 classes: top-5 holds every class
    unlabelled = compare(parent, child, None)  # agreement only: nothing scored against the parent's own predictions
    assert unlabelled["labelled"] is False and unlabelled["agreement"] == 75.0 and unlabelled["flips"] == 1
    assert all(unlabelled[k] is None for k in ("top1", "top5", "parent_top1", "parent_top5", "drop_points"))


@pytest.fixture(scope="module")
def float_and_qdq(fashion_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """The fashion model prepared for quantization and a minmax QDQ model of it (target cpu)."""
    from edge.quantize.ranges import collect_ranges
    from edge.quantize.targets import prepare_float_model, quantize_onnx

    tmp = tmp_path_factory.mktemp("qdq")
    spec = artifact_spec(fashion_onnx_run / "model.onnx")
    batches = [np.random.default_rng(i).uniform(-1, 1, (8, *spec.input_shape)).astype(np.float32) for i in range(2)]
    prepared = prepare_float_model(fashion_onnx_run / "model.onnx", tmp / "float.onnx")
    ranges = collect_ranges(prepared, batches, ("minmax",))
    qdq = quantize_onnx(prepared, tmp / "qdq.onnx", "cpu", ranges["minmax"])
    return prepared, qdq, np.stack(batches)


def test_activations_through_the_runner_match_onnxruntime_debug_tool(fashion_onnx_run: Path, float_and_qdq, tmp_path) -> None:
    """The runner with all_outputs runs the augmented model as ORT's collect_activations does:
    the graph as written, so the QDQ model's intermediate tensors are bit-identical."""
    from onnxruntime.quantization import CalibrationDataReader, qdq_loss_debug

    spec = artifact_spec(fashion_onnx_run / "model.onnx")
    _, qdq, batches = float_and_qdq
    augmented = tmp_path / "augmented.onnx"
    qdq_loss_debug.modify_model_output_intermediate_tensors(str(qdq), str(augmented))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    expected = qdq_loss_debug.collect_activations(str(augmented), Reader())
    ours = _activations(augmented, spec, list(batches))
    assert list(ours) == list(expected) and len(ours) > 50
    for name, values in expected.items():
        for mine, theirs in zip(ours[name], values):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)


def test_layer_errors_rank_the_qdq_model_and_predict_batches(fashion_onnx_run: Path, float_and_qdq) -> None:
    spec = artifact_spec(fashion_onnx_run / "model.onnx")
    prepared, qdq, batches = float_and_qdq
    rows = layer_errors(prepared, qdq, spec, list(batches))
    losses = [row["loss_db"] for row in rows]
    assert len(rows) > 50 and losses == sorted(losses, reverse=True)
    logits = predict(qdq, spec, np.concatenate(batches), batch=5)  # batches of 5, 5, 5, 1
    with OnnxRuntimeRunner(qdq, spec) as runner:
        np.testing.assert_allclose(logits, runner.infer(np.concatenate(batches)), rtol=1e-5, atol=1e-5)


def test_all_outputs_is_opt_in(fashion_onnx_run: Path) -> None:
    model = fashion_onnx_run / "model.onnx"
    spec = artifact_spec(model)
    batch = np.zeros((2, *spec.input_shape), np.float32)
    with OnnxRuntimeRunner(model, spec) as runner, pytest.raises(RuntimeError, match="all_outputs=True"):
        runner.infer_outputs(batch)
    with OnnxRuntimeRunner(model, spec, all_outputs=True) as runner:
        outputs = runner.infer_outputs(batch)
        assert list(outputs) == ["logits"] and outputs["logits"].shape == (2, 10)
        np.testing.assert_array_equal(runner.infer(batch), outputs["logits"])
