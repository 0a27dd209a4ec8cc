"""What the network sees while training: augmentation presets, datasets and the batch order.

Evaluation goes through ``PreprocessSpec.apply`` on the uint8 images from ``train.data`` (the same
code that runs on the device). Augmentation follows torchvision's definitions but runs OpenCV on
those uint8 arrays (one channel for gray specs, replicated to three at the end):

- ``standard``: RandomResizedCrop (``STANDARD_SCALE``), horizontal flip, rotation up to 15 degrees
  (bilinear, 0 outside), ColorJitter(brightness=0.2)
- ``light``: a mild RandomResizedCrop (85-100 % of the image, aspect 0.9-1.1) and horizontal flip
- ``none``: the eval preprocessing (``spec.apply``)

Every random choice comes from ``np.random.default_rng([seed, epoch, index])``: an epoch looks the
same with any number of DataLoader workers, on any rank, and after ``--resume``, and the global
torch generator (dropout) is never touched. The DataLoader hands ``TrainDataset.__getitems__`` a
whole batch, so brightness, normalization and the channel order run once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import require
from edge.spec import PreprocessSpec
from train.data import ImageSplit

# RandomResizedCrop's default scale (0.08, 1) is tuned for 90+ ImageNet epochs; short fine-tunes of
# small images lose too much of the object with it.
STANDARD_SCALE = (0.5, 1.0)
LIGHT_SCALE = (0.85, 1.0)
CROP_TRIES = 10  # RandomResizedCrop's tries before it falls back to a center crop


@dataclass(frozen=True)
class Augmentation:
    """A random preset: crop area fraction and aspect ratio range, rotation and brightness amplitude."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    degrees: float = 0.0
    brightness: float = 0.0


AUGMENTATIONS = {
    "standard": Augmentation(STANDARD_SCALE, (3 / 4, 4 / 3), degrees=15.0, brightness=0.2),
    "light": Augmentation(LIGHT_SCALE, (0.9, 1.1)),
}


@dataclass(frozen=True)
class SampleParams:
    """One sample's random choices: the crop box in the source image, the mirror, the rotation
    (degrees, counter-clockwise) and the brightness factor."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False
    angle: float = 0.0
    brightness: float = 1.0


def draw_params(rng: np.random.Generator, height: int, width: int, augmentation: Augmentation) -> SampleParams:
    """Random choices for one ``height`` x ``width`` image, with torchvision's distributions."""
    tries = rng.random((CROP_TRIES, 2)).tolist()
    place = rng.random(2).tolist()
    flip, angle, brightness = rng.random(3).tolist()
    top, left, crop_h, crop_w = _crop_box(tries, place, height, width, augmentation)
    degrees, jitter = augmentation.degrees, augmentation.brightness
    darkest = max(0.0, 1 - jitter)
    return SampleParams(
        top,
        left,
        crop_h,
        crop_w,
        flip=flip < 0.5,
        angle=degrees * (2 * angle - 1),
        brightness=darkest + (1 + jitter - darkest) * brightness,
    )


def _crop_box(
    tries: list[list[float]], place: list[float], height: int, width: int, augmentation: Augmentation
) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params on uniforms drawn beforehand -> (top, left, height, width)."""
    (scale_lo, scale_hi), (ratio_lo, ratio_hi) = augmentation.scale, augmentation.ratio
    log_lo, log_hi = math.log(ratio_lo), math.log(ratio_hi)
    area = height * width
    for u_scale, u_ratio in tries:
        target = area * (scale_lo + (scale_hi - scale_lo) * u_scale)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(place[0] * (height - h + 1)), int(place[1] * (width - w + 1)), h, w
    if width / height < ratio_lo:
        w, h = width, round(width / ratio_lo)
    elif width / height > ratio_hi:
        w, h = round(height * ratio_hi), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment_image(image: np.ndarray, params: SampleParams, spec: PreprocessSpec) -> np.ndarray:
    """Crop, resize, mirror and rotate a working image -> ``input_size`` squared uint8, same channels.

    The order is torchvision's: the crop is resized first (the eval path's resize: antialiased
    ``INTER_AREA`` when shrinking, else the spec's interpolation), then mirrored and rotated about
    its center in one bilinear warp that fills 0 outside, as RandomRotation does.
    """
    cv2 = require("cv2", "opencv", "Augmentation")
    size = spec.input_size
    crop = image[params.top : params.top + params.height, params.left : params.left + params.width]
    resized = spec.resize(cv2, crop, size, size)
    if params.angle == 0.0:
        return resized[:, ::-1] if params.flip else resized
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), params.angle, 1.0)
    if params.flip:  # rotate the mirror image: compose with x -> size - 1 - x
        matrix[:, 2] += matrix[:, 0] * (size - 1)
        matrix[:, 0] *= -1
    return cv2.warpAffine(resized, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_network_input(images: Sequence[np.ndarray], brightness: Sequence[float], spec: PreprocessSpec) -> Any:
    """Augmented uint8 images (all gray, or all BGR) and their brightness factors -> float32 NCHW.

    ColorJitter's brightness (scale, clamp to [0, 1]), then the spec's channel order, mean and std.
    Every step is elementwise, so a sample comes out the same in any batch.
    """
    torch = require("torch", "train", "Augmentation")
    batch = torch.from_numpy(np.stack(images))
    if batch.ndim == 3:  # gray: one channel, broadcast to three by the normalization
        batch = batch[:, None]
    else:
        batch = batch.permute(0, 3, 1, 2)
        if spec.channel_order == "rgb":
            batch = batch.flip(1)
    scale = torch.from_numpy(np.asarray(brightness, dtype=np.float32) / np.float32(255.0)).view(-1, 1, 1, 1)
    values = batch.to(torch.float32, memory_format=torch.contiguous_format).mul_(scale).clamp_(0.0, 1.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (values - mean) / std


class TrainDataset:
    """``dataset[(index, epoch)] -> (augmented CHW tensor, label)``, seeded per sample.

    ``__getitems__`` (what the DataLoader calls with a whole batch of keys) gives the same tensors
    as item-by-item access.
    """

    def __init__(self, split: ImageSplit, spec: PreprocessSpec, preset: str, seed: int) -> None:
        if preset != "none" and preset not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation preset {preset!r}")
        self.split = split
        self.spec = spec
        self.augmentation = AUGMENTATIONS.get(preset)  # None: the eval preprocessing
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split)

    def params(self, index: int, epoch: int, height: int, width: int) -> SampleParams:
        """The random choices for item ``index`` in ``epoch`` (a ``height`` x ``width`` image)."""
        if self.augmentation is None:
            raise ValueError("augmentation 'none' makes no random choices")
        return draw_params(np.random.default_rng([self.seed, epoch, index]), height, width, self.augmentation)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[tuple[Any, int]]:
        torch = require("torch", "train", "Training")
        items = [self.split[index] for index, _ in keys]
        if self.augmentation is None:
            return [(torch.from_numpy(self.spec.apply(image)), label) for image, label in items]
        crops, factors = [], []
        for (index, epoch), (image, _) in zip(keys, items):
            image = self.spec.working_image(image)
            params = self.params(index, epoch, image.shape[0], image.shape[1])
            crops.append(augment_image(image, params, self.spec))
            factors.append(params.brightness)
        batch = to_network_input(crops, factors, self.spec)
        return [(tensor, label) for tensor, (_, label) in zip(batch.unbind(0), items)]


class EvalDataset:
    """``dataset[index] -> (spec.apply(image), label)``: the deployed preprocessing."""

    def __init__(self, split: ImageSplit, spec: PreprocessSpec) -> None:
        self.split = split
        self.spec = spec

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        torch = require("torch", "train", "Evaluation")
        image, label = self.split[index]
        return torch.from_numpy(self.spec.apply(image)), label


class EpochBatches:
    """Batch order: a seeded permutation per epoch cut into global batches of ``batch_size``;
    rank ``r`` of ``world`` takes items ``r::world`` of each global batch.

    One process and N processes therefore see the same global batches, and ``--resume`` in the
    middle of an epoch skips exactly the batches already done. A last batch too small to give
    every rank an item is dropped.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start = start_step

    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest >= self.world else 0)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return [order[i : i + self.batch_size] for i in range(0, self.steps_per_epoch() * self.batch_size, self.batch_size)]

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.global_batches(self.epoch)[self.start :]:
            yield [(int(i), self.epoch) for i in batch[self.rank :: self.world]]
