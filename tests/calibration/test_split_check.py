"""A calibration set belongs to the split it was drawn from: every reader refuses one whose items
are not all in the run's current train split, with one line naming `edge calibrate RUN`.

The repro of issue 25 on a tiny folder: pin the split with seed 0 (what `edge train --seed 0`
writes), `edge calibrate`, pin it again with seed 1 (what training again into the same run writes):
most new test images were calibration images, and quantize used the set without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.sets import build_calibration_set, load_calibration_set, photo_calibration_set, store_calibration_set
from edge.errors import UserError
from edge.manifest import write_manifest
from edge.run import RunDir
from edge.spec import PreprocessSpec
from tests.train.test_splits import CLASSES, _flat_folder
from train.data import open_data
from train.splits import pin_splits

SPEC = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=CLASSES)
STALE = r"are not in the current train split of .*splits.json .*: run `edge calibrate .*`$"


def tiny_onnx_run(root: Path) -> RunDir:
    """A run holding a 3-class model.onnx small enough to quantize in a moment (conv, pool, gemm)."""
    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv_b": np.zeros(4, np.float32),
        "fc_w": rng.standard_normal((len(CLASSES), 4)).astype(np.float32),
        "fc_b": np.zeros(len(CLASSES), np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
            helper.make_node("Flatten", ["pool"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    root.mkdir(parents=True)
    import onnx

    onnx.save(model, str(root / "model.onnx"))
    write_manifest(root / "model.onnx", "onnx", SPEC)
    return RunDir(root)


def pin(run: RunDir, data: Path, seed: int) -> dict:
    """What `edge train --data DATA --seed SEED --out RUN` writes about the split."""
    pin_splits(run, data, open_data(data, seed=seed), seed=seed)
    return json.loads(run.splits.read_text())


@pytest.fixture()
def retrained(tmp_path: Path) -> tuple[RunDir, Path, int]:
    """Trained with seed 0 and calibrated, then trained again with seed 1: (run, data, how many of
    the new test images the calibration set holds)."""
    data = _flat_folder(tmp_path / "shapes")
    run = tiny_onnx_run(tmp_path / "run")
    pin(run, data, seed=0)
    calib = build_calibration_set(run.root, None, progress=False)  # `edge calibrate RUN`: the whole train split
    payload = pin(run, data, seed=1)
    test = set(payload["splits"]["test"]["items"])
    return run, data, len(test & set(calib.provenance["items"]))


def test_the_calibration_set_records_its_items_hashes_and_the_split_fingerprint(tmp_path: Path) -> None:
    data = _flat_folder(tmp_path / "shapes")
    run = tiny_onnx_run(tmp_path / "run")
    payload = pin(run, data, seed=0)
    calib = build_calibration_set(run.root, None, size=12, seed=2, progress=False)
    train = dict(zip(payload["splits"]["train"]["items"], payload["splits"]["train"]["hashes"]))
    items, hashes = calib.provenance["items"], calib.provenance["item_hashes"]
    assert len(items) == len(hashes) == 12 and all(train[i] == h for i, h in zip(items, hashes))
    assert calib.provenance["split_fingerprint"] == payload["splits"]["train"]["fingerprint"]


def test_retraining_with_another_seed_makes_quantize_refuse_the_stale_set(
    retrained: tuple[RunDir, Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    run, data, leaked = retrained
    print(f"\n{leaked} of 12 new test images were calibration images")
    assert leaked > 0  # the shape: 9 of 12 on its folder
    assert main(["quantize", str(run.root), "--target", "cpu", "--method", "minmax"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edge quantize: error: ") and line.endswith(f"run `edge calibrate {run.root}`")
    assert "of calibration set" in line and "are not in the current train split" in line
    assert not run.int8_cpu.exists()


def test_every_reader_refuses_the_stale_set_and_edge_calibrate_fixes_it(
    retrained: tuple[RunDir, Path, int], tmp_path: Path
) -> None:
    from bench.scripts.peers import run_calibration
    from edge.quantize.cli import quantize_run

    run, _, _ = retrained
    with pytest.raises(UserError, match=STALE):
        load_calibration_set(run.root)
    with pytest.raises(UserError, match=STALE):
        load_calibration_set(run.calibration_file)
    with pytest.raises(UserError, match=STALE):
        run_calibration(run.root)
    # --calibration PATH given explicitly, outside the run: checked against the run it quantizes
    elsewhere = tmp_path / "elsewhere" / "calib.npy"
    elsewhere.parent.mkdir()
    shutil.copy(run.calibration_file, elsewhere)
    shutil.copy(run.calibration_file.with_name("calibration.npy.json"), elsewhere.with_name("calib.npy.json"))
    load_calibration_set(elsewhere)  # no run named: nothing to compare with
    with pytest.raises(UserError, match=STALE):
        quantize_run(run.root, target="cpu", method="minmax", calibration=elsewhere)

    fresh = build_calibration_set(run.root, None, progress=False)  # `edge calibrate RUN`
    test = set(json.loads(run.splits.read_text())["splits"]["test"]["items"])
    assert not test & set(fresh.provenance["items"])
    assert load_calibration_set(run.root).content_hash == fresh.content_hash
    tensor, content_hash, _ = run_calibration(run.root)
    assert content_hash == fresh.content_hash and len(tensor) == len(fresh)


def test_a_set_without_item_hashes_is_refused_when_the_run_pins_a_split(tmp_path: Path) -> None:
    """Made by older code (or by hand): no item hashes, so nothing shows it holds only training images."""
    data = _flat_folder(tmp_path / "shapes")
    run = tiny_onnx_run(tmp_path / "run")
    images = [np.zeros((32, 32, 3), np.uint8)] * 4
    ids, labels = [f"circle/{i:03d}.png" for i in range(4)], np.zeros(4, int)
    store_calibration_set(run, SPEC, images, ids, labels, data=str(data), seed=0, requested=4, classes=CLASSES)
    assert len(load_calibration_set(run.root)) == 4  # no pinned split: nothing to compare with
    pin(run, data, seed=0)
    with pytest.raises(UserError, match=r"records no content hashes of its items \(it predates the check.*edge calibrate"):
        load_calibration_set(run.root)
    with pytest.raises(UserError, match=r"pins a data split .*run `edge calibrate"):
        photo_calibration_set(run.root, count=4)
