"""The bundled real photos: scikit-image's cat, coffee, rocket and astronaut, and their ImageNet classes.

They stand in for data wherever a model has none of its own here (the ImageNet-pretrained Lite0):
the camera demo video, photo calibration and evaluation sets, the TensorRT self-test and the
tests. Seeded random crops and flips of them give a small, varied set. Nothing is downloaded.

Like a run's data split, the photo sets have roles (:data:`PHOTO_ROLES`: calibration, val, test)
that never share an image, by construction: the whole photos belong to the test set only, and
every crop is a square whose side is congruent to its role's index modulo the number of roles
(and shorter than any photo), so two roles can never produce the same image; each role also
draws from its own random stream.
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
PHOTO_ROLES = ("calibration", "val", "test")  # disjoint photo sets; only test holds the whole photos
CROP_RANGE = (0.5, 0.97)  # crop side as a fraction of the photo's shorter side: never the whole photo


def photos(names: Sequence[str] = NAMED_PHOTOS) -> dict[str, np.ndarray]:
    """The named photos as BGR uint8 frames (what a camera delivers)."""
    unknown = [n for n in names if n not in SKIMAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown photos {unknown}: the bundled ones are {', '.join(SKIMAGE_NAMES)}")
    data = require("skimage.data", "dev", "Using scikit-image's photos as images")
    return {name: np.ascontiguousarray(getattr(data, SKIMAGE_NAMES[name])()[:, :, ::-1]) for name in names}


def photo_set(count: int, seed: int = 0, *, role: str) -> list[np.ndarray]:
    """``count`` BGR images for one role (calibration, val or test): for test the photos themselves
    first, then seeded random square crops (50-97% of the shorter side) with random horizontal flips.

    No image is in two roles' sets, whatever the seeds and counts (see the module docstring);
    ``seed`` varies the crops within a role."""
    if role not in PHOTO_ROLES:
        raise ValueError(f"unknown photo set role {role!r}: use one of {', '.join(PHOTO_ROLES)}")
    residue = PHOTO_ROLES.index(role)
    base = list(photos(SET_PHOTOS).values())
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
