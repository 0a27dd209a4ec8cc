"""PreprocessSpec: the one description of what a network expects as input.

Training writes it into the checkpoint, export into the ONNX ``metadata_props``, every manifest
carries it. Calibration, bench and camera build their inputs with :meth:`PreprocessSpec.apply`
and take no mean/std/size flags of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from edge.errors import UserError, require

SPEC_VERSION = 1
CROP_MODES = ("center", "resize")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
COLORS = ("rgb", "gray")
CHANNEL_ORDERS = ("rgb", "bgr")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes a network input.

    ``crop="center"``: resize the shorter side to ``resize_size``, then take the central
    ``input_size`` square (timm / torchvision eval). ``crop="resize"``: resize the whole frame to
    ``input_size`` x ``input_size`` (aspect ratio not kept). ``color="gray"`` converts to one gray
    channel and replicates it to three, so a Fashion-MNIST model sees gray camera frames.
    ``channel_order`` is the order of the network's input channels.
    """

    input_size: int
    resize_size: int
    crop: str = "center"
    interpolation: str = "bilinear"
    color: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "rgb"
    labels: tuple[str, ...] = field(default_factory=tuple)
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))
        problems = []
        if self.input_size <= 0 or self.resize_size <= 0:
            problems.append(f"sizes must be positive (input {self.input_size}, resize {self.resize_size})")
        if self.crop == "center" and self.resize_size < self.input_size:
            problems.append(f"resize_size {self.resize_size} is smaller than input_size {self.input_size}")
        for name, value, allowed in (
            ("crop", self.crop, CROP_MODES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
            ("color", self.color, COLORS),
            ("channel_order", self.channel_order, CHANNEL_ORDERS),
        ):
            if value not in allowed:
                problems.append(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need three values each, std > 0")
        if problems:
            raise UserError("invalid preprocess spec: " + "; ".join(problems))

    # ---- construction -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.input_size, self.input_size)

    def replace(self, **changes: Any) -> "PreprocessSpec":
        data = self.to_dict()
        data.update(changes)
        return PreprocessSpec.from_dict(data)

    def with_input_size(self, input_size: int) -> "PreprocessSpec":
        """Same spec at another input size, keeping the resize/crop ratio."""
        ratio = self.resize_size / self.input_size
        return self.replace(input_size=input_size, resize_size=int(math.floor(input_size * ratio + 1e-6)))

    @classmethod
    def from_timm(cls, model: Any, labels: Sequence[str] = ()) -> "PreprocessSpec":
        """From a timm model's own pretrained config (``resolve_data_config``)."""
        timm_data = require("timm.data", "train", "Reading a timm model's preprocessing")
        cfg = timm_data.resolve_data_config({}, model=model)
        _, height, width = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        return cls(
            input_size=int(height),
            resize_size=int(math.floor(height / crop_pct)),
            crop="center",
            interpolation=_normalise_interpolation(cfg.get("interpolation", "bilinear")),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            labels=tuple(labels),
        )

    @classmethod
    def from_torchvision(cls, weights: Any) -> "PreprocessSpec":
        """From a torchvision ``Weights`` entry (its eval transforms and categories)."""
        preset = weights.transforms()
        crop = preset.crop_size[0] if isinstance(preset.crop_size, (list, tuple)) else preset.crop_size
        resize = preset.resize_size[0] if isinstance(preset.resize_size, (list, tuple)) else preset.resize_size
        interpolation = getattr(preset.interpolation, "value", str(preset.interpolation))
        return cls(
            input_size=int(crop),
            resize_size=int(resize),
            crop="center",
            interpolation=_normalise_interpolation(interpolation),
            mean=tuple(preset.mean),
            std=tuple(preset.std),
            labels=tuple(weights.meta.get("categories") or ()),
        )

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["labels"] = list(self.labels)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        if not isinstance(data, dict):
            raise UserError(f"preprocess spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"preprocess spec has unknown fields {unknown}: written by a newer version?")
        missing = sorted({"input_size", "resize_size"} - set(data))
        if missing:
            raise UserError(f"preprocess spec is missing {missing}")
        if int(data.get("version", SPEC_VERSION)) > SPEC_VERSION:
            raise UserError(f"preprocess spec version {data['version']} is newer than this tool ({SPEC_VERSION})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"preprocess spec is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # ---- the inference-side preprocessing ----------------------------------------------
    def apply(self, frame_bgr_uint8: np.ndarray) -> np.ndarray:
        """One decoded frame (HxWx3 BGR or HxW gray, uint8) -> float32 CHW network input."""
        return self.to_input(self.resize_crop(frame_bgr_uint8))

    def resize_crop(self, frame_bgr_uint8: np.ndarray) -> np.ndarray:
        """The first half of :meth:`apply`: the frame resized and cropped, still uint8, in the colour
        the spec works in (``input_size`` square, HxW gray or HxWx3 BGR). ``to_input`` of it is
        ``apply`` of the frame, bit for bit: what a bundle's verification set stores (1 byte a pixel)."""
        cv2 = require("cv2", "opencv", "Preprocessing images")
        return np.asarray(self._resize_and_crop(cv2, self.working_image(frame_bgr_uint8)))

    def to_input(self, image: np.ndarray) -> np.ndarray:
        """The second half of :meth:`apply`: a :meth:`resize_crop` image -> float32 CHW network input
        (gray replicated to three channels or BGR put in channel order, then normalised)."""
        if self.color == "gray":
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif self.channel_order == "rgb":
            image = image[:, :, ::-1]
        return self._normalize(image)

    def working_image(self, frame_bgr_uint8: np.ndarray) -> np.ndarray:
        """A decoded frame, checked, in the colour the spec works in: HxW gray or HxWx3 BGR uint8."""
        cv2 = require("cv2", "opencv", "Preprocessing images")
        frame = np.asarray(frame_bgr_uint8)
        if frame.dtype != np.uint8:
            raise UserError(f"frames must be uint8 images, got {frame.dtype}")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3) or min(frame.shape[:2]) < 1:
            raise UserError(f"frames must be HxWx3 BGR or HxW gray, got shape {frame.shape}")
        if self.color == "gray":
            return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 (already in channel order) -> (x - 255 mean) / (255 std) as float32 CHW.

        Plane by plane into the output buffer: the same float32 operations as the vectorised
        ``(image - mean) * inv_std`` (bit-identical), without its HWC temporaries and the strided
        transpose copy, which cost a camera frame about 0.6 ms.
        """
        mean = np.asarray(self.mean, dtype=np.float32) * np.float32(255.0)
        inv_std = np.float32(1.0) / (np.asarray(self.std, dtype=np.float32) * np.float32(255.0))
        out = np.empty((3, *image.shape[:2]), dtype=np.float32)
        for channel in range(3):
            plane = out[channel]
            plane[...] = image[:, :, channel]
            plane -= mean[channel]
            plane *= inv_std[channel]
        return out

    def apply_batch(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Several frames -> float32 NCHW batch."""
        if len(frames) == 0:
            return np.zeros((0, *self.input_shape), dtype=np.float32)
        return np.stack([self.apply(f) for f in frames]).astype(np.float32, copy=False)

    def center_crop_geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Where a centre crop comes from in a ``height`` x ``width`` image: the resized size
        ``(new_w, new_h)`` (short side ``resize_size``) and the crop's corner ``(top, left)`` in it."""
        scale = self.resize_size / min(height, width)
        new_w = max(self.input_size, int(round(width * scale)))
        new_h = max(self.input_size, int(round(height * scale)))
        return (new_w, new_h), (int(round((new_h - self.input_size) / 2.0)), int(round((new_w - self.input_size) / 2.0)))

    def _resize_and_crop(self, cv2: Any, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if self.crop == "resize":
            return self.resize(cv2, image, self.input_size, self.input_size)
        (new_w, new_h), (top, left) = self.center_crop_geometry(height, width)
        if new_w < width and new_h < height:
            cropped = _area_crop(cv2, image, (new_w, new_h), (top, left), self.input_size)
            if cropped is not None:
                return cropped
        resized = self.resize(cv2, image, new_w, new_h)
        return resized[top : top + self.input_size, left : left + self.input_size]

    def resize(self, cv2: Any, image: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize as the spec does: antialiased ``INTER_AREA`` when shrinking, else its interpolation."""
        if image.shape[1] == width and image.shape[0] == height:
            return image
        shrinking = width < image.shape[1] and height < image.shape[0]
        # Downscaling with a plain bilinear/bicubic kernel aliases; PIL (the training side)
        # antialiases. INTER_AREA is OpenCV's antialiased downscale.
        flag = cv2.INTER_AREA if shrinking else _CV2_INTERPOLATION[self.interpolation](cv2)
        return cv2.resize(image, (width, height), interpolation=flag)


# The float32 window of _area_crop at most: 1280x720's (9.7 MB) is faster than the whole resize,
# 2560x1440's (39 MB) slower.
AREA_CROP_MAX_BYTES = 16 << 20


def _source_window(offset: int, size: int, source: int, resized: int) -> tuple[int, int] | None:
    """The source rows (or columns) behind ``size`` resized ones from ``offset`` when they start and
    end on whole source pixels (``offset`` and ``size`` times the scale ``source / resized`` both
    integers), else None."""
    start, stop = offset * source, (offset + size) * source
    if start % resized or stop % resized:
        return None
    return start // resized, stop // resized


def _area_crop(cv2: Any, image: np.ndarray, resized: tuple[int, int], corner: tuple[int, int], size: int) -> np.ndarray | None:
    """``cv2.resize(image, resized, INTER_AREA)[top:top+size, left:left+size]`` computed for the crop
    alone, or None where that cannot be done exactly.

    ``INTER_AREA`` is separable: OpenCV sums each source row horizontally (in float) and then adds
    the weighted rows vertically, rounding once at the end. When the crop's rows (or columns) start
    and end on whole source pixels, the same two passes over that window alone, horizontal then
    vertical, in float32, with the same scales and so the same weights, give the same values: the
    other axis is resized in full and then cropped. A 640x480 frame for a 224 crop of a 256 resize
    (rows 30-450 of the source) takes 1.00 ms this way against 1.58 ms for the whole resize, 1280x720
    (rows 45-675) 2.83 against 3.78 ms (``python -m bench.scripts.preprocess_benchmark``). The whole
    resize is kept where the window falls between source pixels (1920x1080), where a scale is an
    integer (OpenCV then averages boxes, faster and with other arithmetic) and where the float32
    window outgrows the caches (2560x1440: 13.9 against 12.4 ms, a session measurement),
    AREA_CROP_MAX_BYTES.
    """
    height, width = image.shape[:2]
    (new_w, new_h), (top, left) = resized, corner
    if width % new_w == 0 or height % new_h == 0:
        return None  # an integer scale: OpenCV's box-filter path, with its own arithmetic (and fast)
    rows = _source_window(top, size, height, new_h)
    cols = _source_window(left, size, width, new_w)
    if rows is None and cols is None:
        return None
    window_bytes = (rows[1] - rows[0] if rows else height) * (cols[1] - cols[0] if cols else width) * image[0, 0].size * 4
    if window_bytes > AREA_CROP_MAX_BYTES:
        return None
    window = image[slice(*rows) if rows else slice(None), slice(*cols) if cols else slice(None)].astype(np.float32)
    # horizontal pass (vertical scale 1): the crop's columns when they are a whole window, else all
    across = cv2.resize(window, (size if cols else new_w, window.shape[0]), interpolation=cv2.INTER_AREA)
    if not cols:
        across = across[:, left : left + size]
    # vertical pass (horizontal scale 1): the crop's rows when they are a whole window, else all
    down = cv2.resize(across, (size, size if rows else new_h), interpolation=cv2.INTER_AREA)
    if not rows:
        down = down[top : top + size]
    return np.rint(down).astype(np.uint8)


_CV2_INTERPOLATION = {
    "nearest": lambda cv2: cv2.INTER_NEAREST,
    "bilinear": lambda cv2: cv2.INTER_LINEAR,
    "bicubic": lambda cv2: cv2.INTER_CUBIC,
    "area": lambda cv2: cv2.INTER_AREA,
    "lanczos": lambda cv2: cv2.INTER_LANCZOS4,
}


def _normalise_interpolation(name: str) -> str:
    name = str(name).lower().replace("interpolationmode.", "")
    return {"random": "bilinear", "box": "area", "hamming": "bilinear"}.get(name, name)


def spec_from_onnx(model_or_path: Any) -> PreprocessSpec:
    """Read the spec an export wrote into an ONNX model's ``metadata_props``."""
    import onnx

    if hasattr(model_or_path, "graph"):
        model = model_or_path
    else:
        try:
            model = onnx.load(str(model_or_path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends: a corrupt or truncated file
            raise UserError(f"{model_or_path} is not a readable ONNX model ({type(exc).__name__}): re-export it") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if "preprocess_spec" not in props:
        raise UserError(f"{model_or_path} has no preprocess_spec in its metadata: re-export it with `edge export`")
    return PreprocessSpec.from_json(props["preprocess_spec"])
