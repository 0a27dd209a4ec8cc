"""train/splits.py: the run owns its data split. Training pins train/val/test in RUN/splits.json and
every later stage (calibrate, quantize, export, bench) reads it; a stage's --seed only subsamples
inside it; other data is external, and an image the model trained on is never evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.run import RunDir
from tests.train.conftest import tiny_config
from train.splits import MIN_VAL_IMAGES, read_splits, run_data, small_split_warning, source_key

CLASSES = ("circle", "square", "stripes")
PER_CLASS = 30


def _flat_folder(root: Path) -> Path:
    """Class folders directly under root (no train/val/test): the split is drawn by training."""
    import cv2

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            if c == 0:
                cv2.circle(image, (16, 16), 8 + i % 5, (200, 200, 200), -1)
            elif c == 1:
                cv2.rectangle(image, (8, 8), (20 + i % 6, 22), (220, 220, 220), -1)
            else:
                image[:, :: 2 + i % 3] = 230
            cv2.imwrite(str(root / name / f"{i:03d}.png"), image)
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A flat folder trained for one epoch with seed 3 (not the stages' default seed 0)."""
    from train.loop import train

    base = tmp_path_factory.mktemp("splits")
    data = _flat_folder(base / "shapes")
    run = base / "run"
    train(tiny_config(run, data=str(data), train_limit=None, val_limit=None, test_limit=None, epochs=1, seed=3))
    return run, data


def _items(split) -> set[str]:
    return {str(Path(i).resolve()) for i in split.ids}


def test_training_pins_the_split_with_ids_hashes_and_fingerprints(folder_run):
    run, data = folder_run
    pinned = read_splits(RunDir(run))
    assert pinned is not None and pinned.trained and pinned.seed == 3
    assert pinned.source == source_key(data) and pinned.classes == CLASSES
    counts = {name: pinned.splits[name]["count"] for name in ("train", "val", "test")}
    assert sum(counts.values()) == len(CLASSES) * PER_CLASS and min(counts.values()) > 0
    items = [set(pinned.splits[n]["items"]) for n in ("train", "val", "test")]
    assert not (items[0] & items[1] or items[0] & items[2] or items[1] & items[2])
    assert all(not Path(i).is_absolute() and i.split("/")[0] in CLASSES for i in items[2])  # relative to the data root
    assert all(len(h) == 16 for h in pinned.splits["test"]["hashes"])
    manifest = json.loads((run / "checkpoint.pt.json").read_text())
    assert manifest["provenance"]["splits"]["fingerprints"]["test"] == pinned.fingerprint("test")


def test_every_stage_reads_the_pinned_split_whatever_its_seed(folder_run):
    """calibrate / quantize / bench with seeds 0 and 5 after training with seed 3: the same test
    items (same fingerprint), and no calibration or validation item among them."""
    from bench.worker import eval_split
    from calibration.sets import build_calibration_set
    from edge.quantize.evaluate import eval_set_from_data
    from edge.spec import PreprocessSpec

    run, data = folder_run
    pinned = read_splits(RunDir(run))
    assert pinned is not None
    test_items = {str((Path(pinned.source) / i).resolve()) for i in pinned.splits["test"]["items"]}
    fingerprints = set()
    for seed in (0, 5):
        data_of_run, split = eval_split(str(run), str(data), None, seed)  # bench --eval DIR --seed S
        assert not data_of_run.external
        fingerprints.add(split.fingerprint())
        assert _items(split) == test_items
        assert data_of_run.describe(split, "test")["split_fingerprint"] == pinned.fingerprint("test")

        calib = build_calibration_set(run, None, size=20, seed=seed, out=run / f"calib-{seed}.npy", progress=False)
        calib_items = {str((Path(pinned.source) / i).resolve()) for i in calib.provenance["items"]}
        assert len(calib_items) == 20 and not calib_items & test_items

        val = run_data(run).split("val", 6, seed)  # what quantize --method auto chooses on
        assert _items(val) <= {str((Path(pinned.source) / i).resolve()) for i in pinned.splits["val"]["items"]}
        assert not _items(val) & test_items
        spec = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=CLASSES)
        evaluated = eval_set_from_data(run, str(data), "test", None, spec, seed=seed, progress=False)
        assert len(evaluated) == len(test_items)
    assert len(fingerprints) == 1


def test_external_data_is_evaluated_whole_and_training_images_are_refused(folder_run, tmp_path):
    run, data = folder_run
    pinned = read_splits(RunDir(run))
    assert pinned is not None
    external = tmp_path / "external"
    shutil.copytree(data, external)  # the same images under another path: mostly training images
    with pytest.raises(UserError, match=r"are in .*train or val split .* pass --exclude-seen"):
        run_data(run, external, evaluate=True).split("test")
    kept = run_data(run, external, evaluate=True, exclude_seen=True)
    split = kept.split("test")
    assert len(split) == pinned.splits["test"]["count"]  # only the run's test images survive
    info = kept.describe(split, "test")
    assert info["external"] and info["split"] == "external"
    assert info["excluded_seen"] == pinned.splits["train"]["count"] + pinned.splits["val"]["count"]


def test_stages_refuse_other_data_and_changed_images(folder_run, tmp_path):
    from calibration.sets import build_calibration_set

    run, data = folder_run
    other = _flat_folder(tmp_path / "other")
    with pytest.raises(UserError, match=r"was trained on .* drop --data"):
        build_calibration_set(run, str(other), size=4, progress=False)
    copy_data, copy_run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(data, copy_data)
    shutil.copytree(run, copy_run)
    payload = json.loads((copy_run / "splits.json").read_text())
    payload["source"] = str(copy_data.resolve())
    (copy_run / "splits.json").write_text(json.dumps(payload))
    changed = copy_data / payload["splits"]["test"]["items"][0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(UserError, match="changed since training"):
        run_data(copy_run).split("test")


def test_runs_without_or_with_a_broken_splits_file(folder_run, tmp_path):
    run, data = folder_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "splits.json").unlink()
    with pytest.raises(UserError, match=r"no splits.json: it was trained before runs pinned their data split"):
        run_data(old, data)
    (old / "splits.json").write_text('{"schema": "edge-splits", "schema_version": 1, "splits": {}}')
    with pytest.raises(UserError, match="is malformed"):
        run_data(old, data)
    (old / "splits.json").write_text("not json")
    with pytest.raises(UserError, match="not readable JSON"):
        run_data(old, data)


def test_a_pretrained_run_pins_the_data_a_stage_first_gets(folder_run, tmp_path):
    from edge.manifest import write_manifest
    from edge.spec import PreprocessSpec

    _, data = folder_run
    run = tmp_path / "pretrained"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"weights")
    spec = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=CLASSES)
    write_manifest(run / "checkpoint.pt", "checkpoint", spec, provenance={"trained": False}, environment={"hostname": "t"})
    evaluated = run_data(run, data, evaluate=True).split("test")  # bench --eval only reads: it pins nothing
    assert not (run / "splits.json").exists()
    first = run_data(run, data).split("test")  # a stage that draws from the data pins it
    assert first.fingerprint() == evaluated.fingerprint()
    pinned = read_splits(RunDir(run))
    assert pinned is not None and not pinned.trained
    assert run_data(run).split("test").fingerprint() == first.fingerprint()


# ---- small sets are named ------------------------------------------------------------------------


def test_training_on_a_small_validation_split_warns_and_records_it(folder_run):
    """90 images in all: the val split holds a handful, well under 200 (and 20 per class)."""
    run, _ = folder_run
    summary = json.loads((run / "summary.json").read_text())
    val_count = read_splits(RunDir(run)).splits["val"]["count"]
    assert summary["val_images"] == val_count < MIN_VAL_IMAGES
    [line] = summary["small_sets"]
    assert line.startswith(f"the validation split has only {val_count} images (")
    assert "`edge quantize --method auto` rest on noise; add images to the training data" in line
    assert json.loads((run / "checkpoint.pt.json").read_text())["metrics"]["val_images"] == val_count


def test_small_split_warning_thresholds():
    from train.data import ImageSplit

    def split(per_class: list[int]) -> ImageSplit:
        labels = np.repeat(np.arange(len(per_class)), per_class)
        return ImageSplit("x", "val", tuple(f"c{i}" for i in range(len(per_class))), labels, [], lambda i: None)

    assert small_split_warning(split([100, 100]), "FIX") is None
    assert small_split_warning(split([20] * 10), "FIX") is None  # 200 images, 20 of each
    few = small_split_warning(split([190, 19]), "FIX")
    assert few is not None and "(19 of class 'c1'; fewer than 200 or 20 per class)" in few and few.endswith("; FIX")
    assert "one image moves its top-1 by 1.00 points" in small_split_warning(split([50, 50]), "FIX")


def test_an_unreadable_image_is_named_once_however_often_the_folder_is_opened(tmp_path, caplog):
    """quantize opens the run's data for calibration, val and test: one warning, not three."""
    import logging

    from train.data import open_data

    data = _flat_folder(tmp_path / "shapes")
    (data / "square" / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING, logger="train.data"):
        for _ in range(3):
            open_data(data)
    assert caplog.text.count("unreadable image(s)") == 1


# ---- no content in two splits, no unreadable image counted ------------------------------------------


def test_a_content_saved_twice_is_kept_in_train_only_counted_and_warned(tmp_path, caplog):
    """Every image saved twice under two names: no val or test item has the content of a train item
    (nor of another evaluated item), splits.json counts the copies left out, and one warning names them."""
    import logging

    from train.data import open_data
    from train.splits import pin_splits

    data = _flat_folder(tmp_path / "shapes")
    for image in sorted(data.rglob("*.png")):
        shutil.copyfile(image, image.with_name(f"{image.stem}-copy.png"))
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    with caplog.at_level(logging.WARNING, logger="train.data"):
        pin_splits(run, data, open_data(data, seed=0), seed=0)
    payload = json.loads(run.splits.read_text())
    train, val, test = (payload["splits"][n]["hashes"] for n in ("train", "val", "test"))
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(set(val)) == len(val) and len(set(test)) == len(test)
    removed = payload["duplicates"]
    assert removed["removed_from_val"] > 0 and removed["removed_from_test"] > 0
    drawn = 2 * len(CLASSES) * PER_CLASS
    assert len(train) + len(val) + len(test) + removed["removed_from_val"] + removed["removed_from_test"] == drawn
    assert len(set(train) | set(val) | set(test)) == len(CLASSES) * PER_CLASS  # every content is still somewhere
    [line] = [r.getMessage() for r in caplog.records if "same content" in r.getMessage()]
    assert f"{removed['removed_from_val']} val and {removed['removed_from_test']} test image(s)" in line
    assert "kept in one split only (train first)" in line
    # a later stage reopening the data sees the same split (the copies left out again)
    assert run_data(run.root).split("test").fingerprint() == run_data(run.root).split("test").fingerprint()
    assert len(run_data(run.root).split("test")) == len(test)


def test_unreadable_images_are_counted_in_splits_json_and_n_is_the_distinct_images_evaluated(tmp_path):
    from edge.quantize.evaluate import eval_set_from_data
    from edge.spec import PreprocessSpec
    from tests.train.test_data import truncated_jpeg
    from train.data import open_data
    from train.splits import pin_splits

    data = _flat_folder(tmp_path / "shapes")
    truncated_jpeg(data / "circle" / "truncated.jpg", (32, 32))
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    pin_splits(run, data, open_data(data, seed=0), seed=0)
    payload = json.loads(run.splits.read_text())
    assert payload["unreadable"]["items"] == ["circle/truncated.jpg"]
    assert sum(payload["unreadable"][n] for n in ("train", "val", "test")) == 1
    assert sum(payload["splits"][n]["count"] for n in ("train", "val", "test")) == len(CLASSES) * PER_CLASS
    spec = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=CLASSES)
    evaluated = eval_set_from_data(run.root, str(data), "test", None, spec, progress=False)
    assert len(evaluated) == payload["splits"]["test"]["count"]
    assert len({row.tobytes() for row in evaluated.tensor}) == len(evaluated)  # each image once
