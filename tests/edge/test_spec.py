import json

import numpy as np
import pytest

from edge.errors import UserError
from edge.spec import PreprocessSpec


def make_spec(**kw):
    base = dict(input_size=32, resize_size=36, crop="center", interpolation="bilinear", labels=["a", "b"])
    base.update(kw)
    return PreprocessSpec(**base)


def test_json_round_trip_keeps_every_field():
    spec = make_spec(color="gray", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), channel_order="bgr")
    again = PreprocessSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["labels"] == ["a", "b"]


def test_unknown_field_is_rejected():
    data = make_spec().to_dict()
    data["gamma"] = 2.2
    with pytest.raises(UserError, match="unknown fields .*gamma"):
        PreprocessSpec.from_dict(data)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"crop": "zoom"}, "crop 'zoom' is not one of"),
        ({"color": "hsv"}, "color 'hsv'"),
        ({"resize_size": 16}, "smaller than input_size"),
        ({"std": (0.0, 1.0, 1.0)}, "std > 0"),
    ],
)
def test_invalid_spec_names_the_problem(changes, message):
    with pytest.raises(UserError, match=message):
        make_spec(**changes)


def test_apply_center_crop_normalises_and_orders_channels():
    spec = make_spec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    out = spec.apply(frame)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert np.allclose(out[2], 1.0) and np.allclose(out[0], 0.0)  # rgb order: blue is channel 2
    assert out.flags["C_CONTIGUOUS"]


def test_apply_center_crop_takes_the_middle():
    spec = make_spec(input_size=4, resize_size=4, mean=(0, 0, 0), std=(1, 1, 1))
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, 2:6] = 255  # the central 4 columns are white
    out = spec.apply(frame)
    assert np.allclose(out, 1.0)


def test_gray_spec_replicates_a_gray_channel_from_colour_frames():
    spec = make_spec(color="gray", crop="resize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frame = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    out = spec.apply(frame)
    assert out.shape == (3, 32, 32)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    gray_input = spec.apply(frame[..., 0])  # an HxW gray frame is accepted too
    assert gray_input.shape == (3, 32, 32)


def test_apply_rejects_float_frames_with_the_fix():
    with pytest.raises(UserError, match="uint8"):
        make_spec().apply(np.zeros((32, 32, 3), np.float32))


def test_with_input_size_keeps_crop_ratio():
    spec = make_spec(input_size=224, resize_size=256).with_input_size(112)
    assert (spec.input_size, spec.resize_size) == (112, 128)


def test_apply_batch_stacks():
    spec = make_spec()
    batch = spec.apply_batch([np.zeros((40, 40, 3), np.uint8)] * 3)
    assert batch.shape == (3, 3, 32, 32)


def test_spec_from_timm_model_config():
    timm = pytest.importorskip("timm")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    spec = PreprocessSpec.from_timm(model, labels=["x"])
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    assert spec.mean == (0.5, 0.5, 0.5)


def test_spec_from_torchvision_weights():
    tv = pytest.importorskip("torchvision.models")
    spec = PreprocessSpec.from_torchvision(tv.ResNet50_Weights.IMAGENET1K_V2)
    assert (spec.input_size, spec.resize_size) == (224, 232)
    assert spec.num_classes == 1000 and spec.labels[0] == "tench"


def test_spec_from_a_corrupt_onnx_file_is_a_user_error(tmp_path):
    from edge.spec import spec_from_onnx

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\xff\xfe not protobuf")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        spec_from_onnx(bad)


def _resize_then_crop(image: np.ndarray, size: int = 224, resize: int = 256) -> np.ndarray:
    """The definition: INTER_AREA to the short side ``resize``, then the centred ``size`` crop."""
    import cv2

    height, width = image.shape[:2]
    scale = resize / min(height, width)
    new_w, new_h = max(size, int(round(width * scale))), max(size, int(round(height * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return resized[top : top + size, left : left + size]


@pytest.mark.parametrize(
    ("width", "height", "window"),
    [
        (640, 480, "rows"),  # rows 30-450 of the source
        (480, 640, "cols"),
        (1280, 720, "rows"),
        (1920, 1080, None),  # the window falls between source pixels: the whole resize
        (1024, 768, None),  # an integer vertical scale: OpenCV's box path, kept
        (512, 512, None),
        (2560, 1440, "gray"),  # in colour the float32 window (39 MB) is over AREA_CROP_MAX_BYTES; gray's 13 MB
        (801, 601, None),
    ],
)
@pytest.mark.parametrize("gray", [False, True])
def test_center_crop_computes_the_crop_alone_with_the_same_values(photos, width, height, window, gray):
    """Resizing only the crop's window gives the very values of resizing the whole frame and
    cropping, on noisy photos, colour and gray; the window is taken exactly where it can be."""
    import cv2

    from edge.spec import _area_crop

    rng = np.random.default_rng(width + height)
    photo = cv2.resize(next(iter(photos.values())), (width, height), interpolation=cv2.INTER_LINEAR)
    frame = np.clip(photo.astype(np.int16) + rng.integers(-30, 31, photo.shape), 0, 255).astype(np.uint8)
    if gray:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    spec = PreprocessSpec(labels=["a", "b"], input_size=224, resize_size=256, crop="center", color="gray" if gray else "rgb")
    np.testing.assert_array_equal(spec._resize_and_crop(cv2, frame), _resize_then_crop(frame))
    scale = 256 / min(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    corner = (round((new_h - 224) / 2), round((new_w - 224) / 2))
    windowed = _area_crop(cv2, frame, (new_w, new_h), corner, 224)
    assert (windowed is not None) == (window in ("rows", "cols") or (window == "gray" and gray))
    if windowed is not None:
        np.testing.assert_array_equal(windowed, _resize_then_crop(frame))
