from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from train.data import FASHION_MNIST_LABELS, open_data, stratified_pick


def write_folder(root: Path, classes: dict[str, int], size=(12, 10), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def test_fashion_mnist_splits_are_disjoint_and_gray():
    data = open_data("fashion-mnist")
    assert data.classes == FASHION_MNIST_LABELS
    train, val, test = (data.split(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 60000 and len(test) == 10000
    assert not set(train.ids) & set(val.ids)
    image, label = test[0]
    assert image.shape == (28, 28) and image.dtype == np.uint8 and 0 <= label < 10
    assert set(val.class_counts().values()) == {600}  # stratified 10%


def test_stratified_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 100)
    a = stratified_pick(labels, 40, seed=1)
    assert np.array_equal(a, stratified_pick(labels, 40, seed=1))
    assert not np.array_equal(a, stratified_pick(labels, 40, seed=2))
    assert np.bincount(labels[a]).tolist() == [10, 10, 10, 10]


def test_image_folder_auto_split_is_stratified(tmp_path):
    write_folder(tmp_path, {"cat": 20, "dog": 20})
    data = open_data(tmp_path)
    assert data.classes == ("cat", "dog")
    sizes = {s: len(data.split(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 40 and min(sizes.values()) >= 2
    image, _ = data.split("train")[0]
    assert image.shape == (12, 10, 3)


def test_image_folder_with_train_and_val_uses_val_as_test(tmp_path):
    write_folder(tmp_path / "train", {"a": 10, "b": 10})
    write_folder(tmp_path / "val", {"a": 3, "b": 3}, seed=1)  # other images than train/'s
    data = open_data(tmp_path)
    assert len(data.split("test")) == 6
    assert len(data.split("train")) + len(data.split("val")) == 20


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    write_folder(tmp_path, {"a": 10, "b": 10})
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    data = open_data(tmp_path)
    skipped = sum(len(data.split(s).skipped) for s in ("train", "val", "test"))
    assert skipped == 2
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 20
    assert "skipped" in caplog.text


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"a": 5, "b": 0}, r"class folder\(s\) \['b'\] hold no images"),
        ({"only": 5}, "single class"),
        ({}, "no class folders"),
    ],
)
def test_bad_folders_give_clear_errors(tmp_path, layout, message):
    write_folder(tmp_path, layout)
    with pytest.raises(UserError, match=message):
        open_data(tmp_path)


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_data(tmp_path / "nope")


def truncated_jpeg(path: Path, size=(64, 64)) -> None:
    """A valid JPEG cut off after half its bytes: PIL's verify() accepts it, a full decode does not."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_jpeg_is_found_by_a_full_decode_skipped_and_counted(tmp_path, caplog):
    """Each image is evaluated once or not at all: the truncated JPEG is in no split (no same-class
    neighbour stands in for it), and n is the number of distinct readable images."""
    import logging

    write_folder(tmp_path, {"a": 10, "b": 10})
    truncated_jpeg(tmp_path / "a" / "truncated.jpg")
    with caplog.at_level(logging.WARNING, logger="train.data"):
        data = open_data(tmp_path, seed=4)
    splits = [data.split(s) for s in ("train", "val", "test")]
    assert [item for s in splits for item in s.skipped] == [str(tmp_path / "a" / "truncated.jpg")]
    assert not any(item.endswith("truncated.jpg") for s in splits for item in s.ids)
    assert sum(len(s) for s in splits) == 20
    loaded = [image.tobytes() for s in splits for image, _ in s]  # every item decodes, and as itself
    assert len(set(loaded)) == 20
    assert "skipped 1 unreadable image(s)" in caplog.text and "truncated.jpg" in caplog.text


def test_an_image_broken_after_the_scan_is_an_error_that_names_it_never_a_substitute(tmp_path):
    write_folder(tmp_path, {"a": 10, "b": 10})
    test = open_data(tmp_path).split("test")
    broken = Path(test.ids[0])
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.raises(UserError, match=rf"{broken.name} was readable when .* was scanned and no longer decodes"):
        test[0]
    assert test.skipped == []
