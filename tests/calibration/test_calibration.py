"""calibration/: stratified sets from the training split, the reader, chunked range collection."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from calibration.reader import calibration_reader, iter_batches
from calibration.sets import build_calibration_set, load_calibration_set
from edge.atomic import sha256_file
from edge.errors import UserError
from edge.manifest import read_manifest
from edge.quantize.ranges import collect_ranges, refine_input_range


@pytest.fixture(scope="module")
def calib_run(fashion_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calib") / "run"
    shutil.copytree(fashion_onnx_run, root)
    return root


def test_set_is_a_stratified_draw_from_the_training_split(calib_run: Path) -> None:
    calib = build_calibration_set(calib_run, "fashion-mnist", size=50, seed=3, progress=False)
    assert calib.tensor.shape == (50, 3, 32, 32) and calib.tensor.dtype == np.float32
    items = calib.provenance["items"]
    assert all(item.startswith("train:") for item in items)  # never the t10k test images
    assert sorted(calib.provenance["class_counts"].values()) == [5] * 10
    manifest = read_manifest(calib.path)
    assert manifest.kind == "calibration" and manifest.sha256 == sha256_file(calib.path)
    assert manifest.parent_file == "model.onnx"
    again = build_calibration_set(calib_run, "fashion-mnist", size=50, seed=3, progress=False)
    assert again.content_hash == calib.content_hash
    other = build_calibration_set(calib_run, "fashion-mnist", size=50, seed=4, progress=False)
    assert other.content_hash != calib.content_hash


def test_short_set_and_missing_classes_warn_with_counts(
    calib_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "tiny"
    rng = np.random.default_rng(0)
    import cv2

    for name, count in (("a", 6), ("b", 6), ("c", 1)):
        (data / name).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(data / name / f"{i}.png"), rng.integers(0, 255, (20, 20), dtype=np.uint8))
    from edge.manifest import write_manifest
    from edge.spec import PreprocessSpec

    run = tmp_path / "run"
    shutil.copytree(calib_run, run, ignore=shutil.ignore_patterns("calibration"))
    spec = PreprocessSpec(input_size=32, resize_size=32, crop="resize", color="gray", labels=("a", "b", "c"))
    (run / "model.onnx.json").unlink()
    write_manifest(run / "model.onnx", "onnx", spec)
    from edge.run import RunDir
    from train.data import open_data
    from train.splits import pin_splits

    pin_splits(RunDir(run), str(data), open_data(str(data)), seed=0)  # as if trained on the tiny folder
    with caplog.at_level(logging.WARNING):
        calib = build_calibration_set(run, str(data), size=40, seed=0, progress=False)
    assert len(calib) < 40
    assert f"calibration set has {len(calib)} images, fewer than the 40 requested" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_calibration_set(run, str(data), size=2, seed=0, progress=False)
    assert "calibration set misses class(es) ['" in caplog.text and "class counts: {'a': " in caplog.text


def test_wrong_data_or_size_is_refused(calib_run: Path) -> None:
    with pytest.raises(UserError, match="at least 1"):
        build_calibration_set(calib_run, "fashion-mnist", size=0)
    with pytest.raises(UserError, match="does not exist"):
        build_calibration_set(calib_run, "/nonexistent/data")
    with pytest.raises(UserError, match="build it with `edge calibrate"):
        load_calibration_set(calib_run / "calibration" / "missing.npy")


def test_reader_batches_and_refuses_nan() -> None:
    tensor = np.random.default_rng(0).standard_normal((10, 3, 4, 4)).astype(np.float32)
    reader = calibration_reader(tensor, "input", batch_size=4)
    sizes = []
    while (feed := reader.get_next()) is not None:
        sizes.append(len(feed["input"]))
    assert sizes == [4, 4, 2] and len(reader) == 3
    tensor[7, 1, 2, 3] = np.inf
    with pytest.raises(UserError, match=r"calibration batch 1 \(items 4..7\) contains 1 NaN/Inf"):
        list(iter_batches(tensor, 4))


def test_chunked_ranges_match_onnxruntime_on_the_whole_set(fashion_onnx_run: Path, tmp_path: Path) -> None:
    """Minmax from batches equals ORT's calibrator over everything; percentile stays close."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    tensor = load_calibration_set(_calibrated(fashion_onnx_run, tmp_path)).tensor
    ours = collect_ranges(fashion_onnx_run / "model.onnx", iter_batches(tensor, 8), ("minmax", "percentile"), symmetric=True)
    reference = {}
    for method in (CalibrationMethod.MinMax, CalibrationMethod.Percentile):
        calibrator = create_calibrator(
            fashion_onnx_run / "model.onnx",
            None,
            str(tmp_path / f"aug-{method}.onnx"),
            calibrate_method=method,
            extra_options={"symmetric": True},
        )
        calibrator.collect_data(calibration_reader(np.asarray(tensor), "input", batch_size=64))
        reference[method] = calibrator.compute_data()
    minmax_ref = reference[CalibrationMethod.MinMax]
    shared = set(ours["minmax"].data) & set(minmax_ref.data)
    assert len(shared) > 50
    for name in shared:
        np.testing.assert_allclose(
            np.ravel(ours["minmax"].data[name].range_value), np.ravel(minmax_ref.data[name].range_value), rtol=1e-6
        )
    pct_ref = reference[CalibrationMethod.Percentile]
    highs = [
        (ours["percentile"].data[n].highest, pct_ref.data[n].highest) for n in set(ours["percentile"].data) & set(pct_ref.data)
    ]
    ratios = np.array([a / b for a, b in highs if b > 1e-3])
    assert np.median(np.abs(ratios - 1)) < 0.05


def _calibrated(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return build_calibration_set(target, "fashion-mnist", size=32, seed=0, progress=False).path


def test_input_range_fits_the_8bit_pixel_grid() -> None:
    """(p/255 - 0.5)/0.5: minmax's [-1, 1] gives scale 2/255 and zero point 128, every value a tie;
    the refined range is exactly the grid of 2/254 with zero point 127 (black and white exact)."""
    values = (np.arange(256) / 255 - 0.5) / 0.5
    counts = np.ones(256, dtype=np.int64)
    counts[0] = 10_000  # a black background
    low, high = refine_input_range(values.astype(np.float32), counts, -1.0, 1.0)
    scale = (high - low) / 255
    assert scale == pytest.approx(2 / 254) and -low / scale == pytest.approx(127)

    def rms(scale: float, zero_point: int) -> float:
        q = np.clip(np.round(values / scale) + zero_point, 0, 255)
        return float(np.sqrt(np.average((values - (q - zero_point) * scale) ** 2, weights=counts)))

    assert rms(scale, 127) < 0.1 * rms(2 / 255, 128)
    # a range that is already a clean grid stays as it is
    grid = np.arange(-64, 192) / 64
    assert refine_input_range(grid, np.ones(256), grid.min(), grid.max()) == (grid.min(), grid.max())


def test_observers_see_every_tensor_and_the_input_range_is_refined(fashion_onnx_run: Path, tmp_path: Path) -> None:
    tensor = np.asarray(load_calibration_set(_calibrated(fashion_onnx_run, tmp_path)).tensor)

    class Recorder:
        def __init__(self) -> None:
            self.batches: list[set[str]] = []

        def add(self, tensors: dict) -> None:
            self.batches.append(set(tensors))

    recorder = Recorder()
    ranges = collect_ranges(fashion_onnx_run / "model.onnx", iter_batches(tensor, 16), ("minmax",), observers=[recorder])
    assert len(recorder.batches) == 2 and "input" in recorder.batches[0] and len(recorder.batches[0]) > 50
    low, high = ranges["minmax"].data["input"].range_value
    assert (float(low), float(high)) == pytest.approx((-1, 1 + 2 / 254))
    # continuous (not 8-bit) inputs keep their calibrated range; symmetric ranges are never refined
    noise = np.random.default_rng(0).uniform(-1, 1, tensor.shape).astype(np.float32)
    plain = collect_ranges(fashion_onnx_run / "model.onnx", iter_batches(noise, 16), ("minmax",))
    np.testing.assert_allclose(np.ravel(plain["minmax"].data["input"].range_value), [noise.min(), noise.max()])
    symmetric = collect_ranges(fashion_onnx_run / "model.onnx", iter_batches(tensor, 16), ("minmax",), symmetric=True)
    np.testing.assert_allclose(np.ravel(symmetric["minmax"].data["input"].range_value), [-1, 1])


def test_calibrating_again_keeps_the_previous_set_in_history(fashion_onnx_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    first = build_calibration_set(run, "fashion-mnist", size=8, seed=0, progress=False)
    before = {name: (run / "calibration" / name).read_bytes() for name in ("calibration.npy", "calibration.npy.json")}
    second = build_calibration_set(run, "fashion-mnist", size=8, seed=1, progress=False)
    assert second.content_hash != first.content_hash
    (kept,) = list((run / "history").iterdir())
    for name, data in before.items():  # same relative path under history/<time>/
        assert (kept / "calibration" / name).read_bytes() == data, name
    assert load_calibration_set(kept / "calibration" / "calibration.npy").content_hash == first.content_hash


def test_mean_minmax_is_the_mean_of_each_images_extremes(fashion_onnx_run: Path, tmp_path: Path) -> None:
    """mean-minmax (NNCF's default activation range) from batches of uneven size: per tensor, the
    mean over images of each image's min and max, inside minmax's range; symmetric ranges of tensors
    never seen negative start at 0 with unsigned_where_nonnegative."""
    tensor = np.asarray(load_calibration_set(_calibrated(fashion_onnx_run, tmp_path)).tensor)

    class Recorder:
        def __init__(self) -> None:
            self.values: dict[str, list[np.ndarray]] = {}

        def add(self, tensors: dict) -> None:
            for name, value in tensors.items():
                self.values.setdefault(name, []).append(np.asarray(value))

    recorder = Recorder()
    ranges = collect_ranges(
        fashion_onnx_run / "model.onnx", iter_batches(tensor, 12), ("minmax", "mean-minmax"), observers=[recorder]
    )
    checked = 0
    for name, data in ranges["mean-minmax"].data.items():
        if name == "input":  # the graph input gets its 8-bit grid (refine_input_range), as for minmax
            continue
        values = np.concatenate(recorder.values[name])
        assert len(values) == len(tensor)
        rows = values.reshape(len(values), -1)
        expected = (rows.min(axis=1).mean(), rows.max(axis=1).mean())
        np.testing.assert_allclose(np.ravel(data.range_value), expected, rtol=1e-5, atol=1e-6)
        low, high = ranges["minmax"].data[name].range_value
        assert float(low) <= float(data.range_value[0]) and float(data.range_value[1]) <= float(high)
        checked += 1
    assert checked > 50
    spread = [
        n
        for n in ranges["mean-minmax"].data
        if n != "input" and ranges["mean-minmax"].data[n].highest < 0.95 * ranges["minmax"].data[n].highest
    ]
    assert spread  # images differ: the mean of the maxima is below the maximum somewhere

    symmetric = collect_ranges(
        fashion_onnx_run / "model.onnx",
        iter_batches(tensor, 12),
        ("mean-minmax",),
        symmetric=True,
        unsigned_where_nonnegative=True,
    )["mean-minmax"].data
    for name, data in symmetric.items():
        low, high = (float(v) for v in data.range_value)
        values = np.concatenate(recorder.values[name]).reshape(len(tensor), -1)
        bound = max(abs(values.min(axis=1).mean()), abs(values.max(axis=1).mean()))
        assert high == pytest.approx(bound, rel=1e-5)
        assert low == (0.0 if values.min() >= 0 else pytest.approx(-bound, rel=1e-5))
