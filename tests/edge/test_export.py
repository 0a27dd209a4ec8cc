"""edge/export.py: ONNX export, metadata, verification, fallback and interface checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.atomic import sha256_file
from edge.errors import UserError
from edge.export import MAX_OPSET, export_onnx, load_onnx_checked
from edge.manifest import read_manifest
from edge.photos import PHOTO_CLASSES
from edge.spec import spec_from_onnx


def test_export_writes_verified_onnx_with_manifest(pretrained_onnx_run: Path) -> None:
    path = pretrained_onnx_run / "model.onnx"
    manifest = read_manifest(path)
    assert manifest.kind == "onnx"
    assert manifest.parent_file == "checkpoint.pt"
    assert manifest.parent_sha256 == read_manifest(pretrained_onnx_run / "checkpoint.pt").sha256
    assert manifest.sha256 == sha256_file(path)
    assert manifest.provenance["exporter"] in ("dynamo", "torchscript")
    assert manifest.metrics["verify_top1_agreement"] == 100.0  # percent
    assert manifest.metrics["verify_max_abs_diff"] <= 1e-3
    assert manifest.metrics["verify_source"] == "scikit-image photos"


def test_export_interface_metadata_and_checker(pretrained_onnx_run: Path) -> None:
    model = onnx.load(str(pretrained_onnx_run / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= MAX_OPSET
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    props = {p.key: p.value for p in model.metadata_props}
    spec = spec_from_onnx(model)
    assert spec == read_manifest(pretrained_onnx_run / "checkpoint.pt").preprocess_spec
    assert json.loads(props["labels"]) == list(spec.labels)
    assert len(spec.labels) == 1000


def test_exported_model_names_the_photos_at_any_batch_size(pretrained_onnx_run: Path, photos: dict) -> None:
    from edge.runners import select_runner

    names = list(PHOTO_CLASSES)
    with select_runner(pretrained_onnx_run / "model.onnx") as runner:
        batch = runner.spec.apply_batch([photos[n] for n in names])
        logits = runner.infer(batch)
        single = runner.infer(batch[:1])
    assert logits.shape == (3, 1000)
    for name, row in zip(names, logits):
        assert int(row.argmax()) in PHOTO_CLASSES[name], name
    np.testing.assert_allclose(single[0], logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_failed_verification_reports_the_measured_difference(
    fashion_onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.export

    monkeypatch.setattr(edge.export, "ATOL", -1.0)  # nothing can be within a negative tolerance
    out = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match=r"verification failed on 4 fashion-mnist:test images: max \|ORT - torch\| = "):
        export_onnx(fashion_onnx_run, out=out, verify_limit=4, exporter="torchscript")
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 21}, "opset 21 is out of range"),
        ({"opset": 11}, "opset 11 is out of range"),
        ({"verify_limit": 0}, "verify-limit"),
    ],
)
def test_bad_arguments_fail_before_work(fashion_onnx_run: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        export_onnx(fashion_onnx_run, **kwargs)


def test_missing_run_or_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        export_onnx(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="checkpoint.pt does not exist"):
        export_onnx(tmp_path / "empty")


def _tiny_model(path: Path, batch: int | str = "batch", inputs: int = 1) -> Path:
    names = [f"x{i}" for i in range(inputs)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [names[0]], ["y"])],
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 3, 8, 8]) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_load_onnx_checked_rejects_bad_models(tmp_path: Path) -> None:
    assert load_onnx_checked(_tiny_model(tmp_path / "ok.onnx")).graph.node
    with pytest.raises(UserError, match="fixed batch dimension"):
        load_onnx_checked(_tiny_model(tmp_path / "fixed.onnx", batch=1))
    with pytest.raises(UserError, match="has 2 inputs"):
        load_onnx_checked(_tiny_model(tmp_path / "two.onnx", inputs=2))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load_onnx_checked(corrupt)
    with pytest.raises(UserError, match="does not exist"):
        load_onnx_checked(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_cli_export_falls_back_to_torchscript_and_records_it(
    fashion_onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from edge.cli import main

    real_export = torch.onnx.export

    def dynamo_breaks(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_breaks)
    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    (run / "model.onnx").unlink()
    assert main(["export", str(run), "--verify-limit", "8"]) == 0
    manifest = read_manifest(run / "model.onnx")
    assert manifest.provenance["exporter"] == "torchscript"
    assert "simulated dynamo failure" in manifest.provenance["fallback_reason"]
    assert manifest.metrics["verify_source"] == "fashion-mnist:test"
    assert manifest.metrics["verify_count"] == 8
    assert main(["export", str(run), "--opset", "99"]) == 2


def test_export_over_a_model_keeps_the_previous_one_in_history(
    fashion_onnx_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    before = {name: (run / name).read_bytes() for name in ("model.onnx", "model.onnx.json")}
    with caplog.at_level(logging.INFO):
        export_onnx(run, verify_limit=4, exporter="torchscript")
    (kept,) = list((run / "history").iterdir())
    for name, data in before.items():
        assert (kept / name).read_bytes() == data, name
    assert read_manifest(run / "model.onnx").provenance["exporter"] == "torchscript"  # the new one is in place
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kept the previous")]
    assert lines == [f"kept the previous model.onnx (with its manifest) in {kept}/ (edge export replaces it)"]
