"""What the network sees while training: augmentation presets, datasets and the batch order.

Evaluation goes through ``PreprocessSpec.apply`` on the uint8 images from ``train.data`` (the same
code that runs on the device). Augmentation builds PIL images from those arrays, applies
torchvision transforms and ends with the spec's channel order and normalization:

- ``standard``: RandomResizedCrop, horizontal flip, rotation 15 degrees, ColorJitter(brightness=0.2)
- ``light``: a mild RandomResizedCrop (85-100 % of the image) and horizontal flip
- ``none``: the eval preprocessing (``spec.apply``)

Every random choice is seeded from (seed, epoch, index): an epoch looks the same with any number
of DataLoader workers, on any rank, and after ``--resume``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edge.errors import require
from edge.spec import PreprocessSpec
from train.data import ImageSplit

# RandomResizedCrop's default scale (0.08, 1) is tuned for 90+ ImageNet epochs; short fine-tunes of
# small images lose too much of the object with it.
STANDARD_SCALE = (0.5, 1.0)
LIGHT_SCALE = (0.85, 1.0)


def _pil_interpolation(name: str) -> Any:
    transforms = require("torchvision.transforms", "train", "Augmentation")
    mode = transforms.InterpolationMode
    return {
        "nearest": mode.NEAREST,
        "bilinear": mode.BILINEAR,
        "bicubic": mode.BICUBIC,
        "area": mode.BOX,
        "lanczos": mode.LANCZOS,
    }[name]


def train_transform(spec: PreprocessSpec, preset: str) -> Callable[[np.ndarray], Any]:
    """uint8 image (BGR or gray) -> float32 CHW tensor, augmented as ``preset`` says."""
    torch = require("torch", "train", "Augmentation")
    if preset == "none":
        return lambda image: torch.from_numpy(spec.apply(image))
    transforms = require("torchvision.transforms", "train", "Augmentation")
    interpolation = _pil_interpolation(spec.interpolation)
    size = spec.input_size
    steps: list[Any] = []
    if preset == "standard":
        steps += [
            transforms.RandomResizedCrop(size, scale=STANDARD_SCALE, interpolation=interpolation),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(15, interpolation=_pil_interpolation("bilinear")),
            transforms.ColorJitter(brightness=0.2),
        ]
    elif preset == "light":
        steps += [
            transforms.RandomResizedCrop(size, scale=LIGHT_SCALE, ratio=(0.9, 1.1), interpolation=interpolation),
            transforms.RandomHorizontalFlip(),
        ]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}")
    steps.append(transforms.ToTensor())
    pipeline = transforms.Compose(steps)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)

    def apply(image: np.ndarray) -> Any:
        tensor = pipeline(to_pil(image, spec))
        if spec.channel_order == "bgr":
            tensor = tensor.flip(0)
        return (tensor - mean) / std

    return apply


def to_pil(image: np.ndarray, spec: PreprocessSpec) -> Any:
    """A uint8 BGR/gray array as an RGB PIL image, gray (replicated) when the spec says so."""
    from PIL import Image

    cv2 = require("cv2", "opencv", "Augmentation")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if spec.color == "gray":
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return Image.fromarray(np.ascontiguousarray(gray), mode="L").convert("RGB")
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return Image.fromarray(rgb)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class TrainDataset:
    """``dataset[(index, epoch)] -> (augmented CHW tensor, label)``, seeded per sample."""

    def __init__(self, split: ImageSplit, spec: PreprocessSpec, preset: str, seed: int) -> None:
        self.split = split
        self.transform = train_transform(spec, preset)
        self.random = preset != "none"
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        torch = require("torch", "train", "Training")
        index, epoch = key
        image, label = self.split[index]
        if not self.random:
            return self.transform(image), label
        # fork_rng leaves the global generator (dropout) untouched, so resuming stays exact.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.transform(image), label


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
