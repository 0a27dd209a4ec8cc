"""The bundled real photos: scikit-image's cat, coffee, rocket and astronaut, and their ImageNet
classes, plus other photos scikit-image ships for the calibration and validation roles.

They stand in for data wherever a model has none of its own here (the ImageNet-pretrained Lite0):
the camera demo video, photo calibration and evaluation sets, the TensorRT self-test and the
tests. Seeded random crops and flips of them give a small, varied set. Nothing is downloaded: every
photo here ships inside scikit-image's wheel (some of ``skimage.data`` needs pooch and a network;
none of those is used).

Like a run's data split, the photo sets have roles (:data:`PHOTO_ROLES`: calibration, val, test)
that never share a photo (:data:`ROLE_PHOTOS`): the test role holds the cat, the coffee, the rocket
and the astronaut, whole and cropped, and is what acceptance, export verification, the selftest
and the tests evaluate (the pretrained model must name the cat, the coffee and the rocket); the
calibration and val roles are crops of other photos, so no content of a test image — not even a
crop of one — is calibrated or chosen on. As a second guard, every crop is a square whose side is
congruent to its role's index modulo the number of roles, and each role draws from its own random
stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge.errors import require

# our name -> how to get it from scikit-image's ``skimage.data`` (all inside the wheel, no download)
SKIMAGE_PHOTOS: dict[str, Callable[[Any], np.ndarray]] = {
    "cat": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "rocket": lambda data: data.rocket(),
    "astronaut": lambda data: data.astronaut(),
    "motorcycle-left": lambda data: data.stereo_motorcycle()[0],
    "motorcycle-right": lambda data: data.stereo_motorcycle()[1],
    "hubble": lambda data: data.hubble_deep_field(),
    "immunohistochemistry": lambda data: data.immunohistochemistry(),
    "coins": lambda data: data.coins(),
    "camera": lambda data: data.camera(),
    "retina": lambda data: data.retina(),
    "clock": lambda data: data.clock(),
    "moon": lambda data: data.moon(),
}
# ImageNet classes the pretrained model must name for each photo, through every backend and the camera.
PHOTO_CLASSES = {
    "cat": frozenset({281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": frozenset({967, 968}),  # espresso, cup
    "rocket": frozenset({657, 744, 812}),  # missile, projectile, space shuttle
}
NAMED_PHOTOS = tuple(PHOTO_CLASSES)  # the photos with a known class: cat, coffee, rocket
PHOTO_ROLES = ("calibration", "val", "test")  # disjoint photo sets; only test holds whole photos
# Which photos each role crops from: no photo is in two roles. The two motorcycle views show one
# scene, so both are calibration's.
ROLE_PHOTOS = {
    "calibration": ("motorcycle-left", "motorcycle-right", "hubble", "immunohistochemistry", "coins"),
    "val": ("camera", "retina", "clock", "moon"),
    "test": ("astronaut", "cat", "coffee", "rocket"),
}
SET_PHOTOS = ROLE_PHOTOS["test"]  # the test role's photos, whole first, in this order
CROP_RANGE = (0.5, 0.97)  # crop side as a fraction of the photo's shorter side: never the whole photo


def photos(names: Sequence[str] = NAMED_PHOTOS) -> dict[str, np.ndarray]:
    """The named photos as BGR uint8 frames (what a camera delivers; a gray photo in three channels)."""
    unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
    if unknown:
        raise ValueError(f"unknown photos {unknown}: the bundled ones are {', '.join(SKIMAGE_PHOTOS)}")
    data = require("skimage.data", "dev", "Using scikit-image's photos as images")
    frames = {}
    for name in names:
        image = np.asarray(SKIMAGE_PHOTOS[name](data))
        image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
        frames[name] = np.ascontiguousarray(image[:, :, ::-1])
    return frames


def photo_set(count: int, seed: int = 0, *, role: str) -> list[np.ndarray]:
    """``count`` BGR images for one role (calibration, val or test) from that role's photos
    (:data:`ROLE_PHOTOS`): for test the photos themselves first, then seeded random square crops
    (50-97% of the shorter side) with random horizontal flips.

    No photo, and so no image, is in two roles' sets, whatever the seeds and counts (see the module
    docstring); ``seed`` varies the crops within a role."""
    if role not in PHOTO_ROLES:
        raise ValueError(f"unknown photo set role {role!r}: use one of {', '.join(PHOTO_ROLES)}")
    residue = PHOTO_ROLES.index(role)
    base = list(photos(ROLE_PHOTOS[role]).values())
    rng = np.random.default_rng([residue, seed])  # one random stream per role
    images = base[:count] if role == "test" else []
    drawn: set[tuple[int, int, int, int, bool]] = set()
    while len(images) < count:
        index = len(images) % len(base)
        photo = base[index]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(*CROP_RANGE))
        side -= (side - residue) % len(PHOTO_ROLES)  # the role's residue: no crop of another role has this shape
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        flip = bool(rng.random() < 0.5)
        if (index, side, top, left, flip) in drawn:  # the same crop twice: draw again
            continue
        drawn.add((index, side, top, left, flip))
        crop = photo[top : top + side, left : left + side]
        images.append(np.ascontiguousarray(crop[:, ::-1] if flip else crop))
    return images


def photo_set_sources(count: int, role: str) -> list[str]:
    """Which photo each image of ``photo_set(count, seed, role=role)`` shows (or is a crop of)."""
    names = ROLE_PHOTOS[role]
    return [names[i % len(names)] for i in range(count)]
