"""`edge quantize --method auto` refuses to choose on a validation split below --min-val-images
(edge/quantize/search.py check_val_size), says why and what to change, and exits 2 with nothing
written; a fixed method, a lower floor or the unlabelled photo set of a pretrained run still run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.quantize.evaluate import EvalSet
from edge.quantize.options import DEFAULT_MIN_VAL_IMAGES, QuantizeOptions, check_val_size


def labelled(count: int) -> EvalSet:
    return EvalSet("photos:val", np.zeros((count, 3, 8, 8), np.float32), np.arange(count) % 2)


def test_the_floor_is_trainings_small_set_floor():
    from train.splits import MIN_VAL_IMAGES

    assert DEFAULT_MIN_VAL_IMAGES == MIN_VAL_IMAGES == 200


def test_auto_refuses_a_small_split_and_names_the_fix():
    with pytest.raises(
        UserError, match=r"would choose on 5 validation images \(photos:val\), fewer than --min-val-images 200"
    ) as err:
        check_val_size(labelled(5), QuantizeOptions())
    message = str(err.value)
    assert "one image moves top-1 by 20.00 points" in message
    assert "add images to the training data" in message and "--min-val-images 5" in message
    assert "\n" not in message


def test_a_val_limit_below_the_floor_is_named():
    with pytest.raises(UserError, match=r"raise --val-limit to 200 or more"):
        check_val_size(labelled(50), QuantizeOptions(val_limit=50))


def test_enough_images_a_lower_floor_or_unlabelled_photos_pass():
    check_val_size(labelled(200), QuantizeOptions())
    check_val_size(labelled(5), QuantizeOptions(min_val_images=5))
    check_val_size(labelled(5), QuantizeOptions(min_val_images=0))
    check_val_size(EvalSet("scikit-image photos:val", np.zeros((24, 3, 8, 8), np.float32), None), QuantizeOptions())


def test_a_negative_floor_is_refused():
    with pytest.raises(UserError, match=r"--min-val-images must be >= 0"):
        QuantizeOptions(min_val_images=-1).validate()


def test_the_cli_exits_2_before_calibrating_and_writes_nothing(fashion_onnx_run: Path, tmp_path: Path, capsys):
    from edge.cli import main

    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    argv = ["quantize", str(run), "--target", "cpu", "--data", "fashion-mnist", "--val-limit", "50"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would choose on 50 validation images (fashion-mnist:val)" in err[0]
    assert "raise --val-limit to 200 or more" in err[0]
    assert not (run / "model.int8-cpu.onnx").exists() and not (run / "calibration").exists()
