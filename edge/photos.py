"""Real photos for models without their own data here (the ImageNet-pretrained Lite0).

scikit-image ships a few real photos; seeded random crops and flips of them give a small,
varied set to calibrate or verify on. Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from edge.errors import require

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def base_photos() -> dict[str, np.ndarray]:
    """scikit-image's photos as BGR uint8 frames (what a camera delivers)."""
    data = require("skimage.data", "dev", "Using scikit-image's photos as images")
    return {name: np.ascontiguousarray(getattr(data, name)()[:, :, ::-1]) for name in PHOTO_NAMES}


def photo_set(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` BGR images: the photos themselves first, then seeded random crops (50-100% of the
    shorter side) with random horizontal flips."""
    photos = list(base_photos().values())
    rng = np.random.default_rng(seed)
    images = photos[:count]
    while len(images) < count:
        photo = photos[len(images) % len(photos)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 1.0))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        images.append(np.ascontiguousarray(crop))
    return images
