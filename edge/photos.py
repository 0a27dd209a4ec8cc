"""The bundled real photos: scikit-image's cat, coffee, rocket and astronaut, and their ImageNet classes.

They stand in for data wherever a model has none of its own here (the ImageNet-pretrained Lite0):
the camera demo video, photo calibration and evaluation sets, the TensorRT self-test and the
tests. Seeded random crops and flips of them give a small, varied set. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.errors import require

# our name -> scikit-image's function
SKIMAGE_NAMES = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut"}
# ImageNet classes the pretrained model must name for each photo, through every backend and the camera.
PHOTO_CLASSES = {
    "cat": frozenset({281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": frozenset({967, 968}),  # espresso, cup
    "rocket": frozenset({657, 744, 812}),  # missile, projectile, space shuttle
}
NAMED_PHOTOS = tuple(PHOTO_CLASSES)  # the photos with a known class: cat, coffee, rocket
SET_PHOTOS = ("astronaut", "cat", "coffee", "rocket")  # what photo_set crops from, in this order


def photos(names: Sequence[str] = NAMED_PHOTOS) -> dict[str, np.ndarray]:
    """The named photos as BGR uint8 frames (what a camera delivers)."""
    unknown = [n for n in names if n not in SKIMAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown photos {unknown}: the bundled ones are {', '.join(SKIMAGE_NAMES)}")
    data = require("skimage.data", "dev", "Using scikit-image's photos as images")
    return {name: np.ascontiguousarray(getattr(data, SKIMAGE_NAMES[name])()[:, :, ::-1]) for name in names}


def photo_set(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` BGR images: the photos themselves first, then seeded random crops (50-100% of the
    shorter side) with random horizontal flips."""
    base = list(photos(SET_PHOTOS).values())
    rng = np.random.default_rng(seed)
    images = base[:count]
    while len(images) < count:
        photo = base[len(images) % len(base)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 1.0))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        images.append(np.ascontiguousarray(crop))
    return images
