"""edge/photos.py: the photo sets of the calibration, val and test roles never share an image."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from edge.photos import PHOTO_ROLES, SET_PHOTOS, photo_set, photos


def content_hash(image: np.ndarray) -> str:
    """What an image is: its shape and its pixels."""
    return hashlib.sha256(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def test_roles_share_no_image_whatever_the_seeds() -> None:
    # the sizes quantize uses (48-512 calibration photos, 24 val and 24 test) and several seeds per role
    sets = {
        (role, seed): [content_hash(image) for image in photo_set(count, seed, role=role)]
        for role, count in (("calibration", 96), ("val", 24), ("test", 24))
        for seed in (0, 1, 5)
    }
    for (role_a, seed_a), (role_b, seed_b) in itertools.combinations(sets, 2):
        if role_a != role_b:
            shared = set(sets[role_a, seed_a]) & set(sets[role_b, seed_b])
            assert not shared, f"{role_a} (seed {seed_a}) and {role_b} (seed {seed_b}) share {len(shared)} image(s)"
    for key, hashes in sets.items():
        assert len(set(hashes)) == len(hashes), f"{key} repeats an image"


def test_only_the_test_set_holds_the_whole_photos() -> None:
    whole = {content_hash(image) for image in photos(SET_PHOTOS).values()}
    test = photo_set(24, 0, role="test")
    assert [content_hash(image) for image in test[: len(whole)]] == [content_hash(p) for p in photos(SET_PHOTOS).values()]
    for role in ("calibration", "val"):
        assert not whole & {content_hash(image) for image in photo_set(48, 0, role=role)}, role


def test_crop_shapes_carry_their_role() -> None:
    for residue, role in enumerate(PHOTO_ROLES):
        images = photo_set(40, 3, role=role)
        crops = images[len(SET_PHOTOS) :] if role == "test" else images
        assert all(c.shape[0] == c.shape[1] and c.shape[0] % len(PHOTO_ROLES) == residue for c in crops), role
        assert all(c.dtype == np.uint8 and c.shape[2] == 3 for c in images)


def test_sets_are_seeded_and_roles_are_checked() -> None:
    first, again = photo_set(12, 4, role="val"), photo_set(12, 4, role="val")
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, photo_set(12, 5, role="val")))
    with pytest.raises(ValueError, match="unknown photo set role 'train'"):
        photo_set(4, 0, role="train")


def _is_crop_of(image: np.ndarray, photo: np.ndarray) -> bool:
    """Whether ``image`` (a crop, maybe flipped) shows part of ``photo``: its first row, or that row
    reversed, is a run of pixels of some row of the photo."""
    rows = [np.ascontiguousarray(image[0]).tobytes(), np.ascontiguousarray(image[0, ::-1]).tobytes()]
    pixel = photo.shape[2]
    for line in photo:
        data = np.ascontiguousarray(line).tobytes()
        for row in rows:
            at = data.find(row)
            while at >= 0:
                if at % pixel == 0:
                    return True
                at = data.find(row, at + 1)
    return False


def test_calibration_and_val_photos_hold_no_content_of_a_test_photo() -> None:
    """Not even a crop: the calibration and val roles crop other photos than the test role holds."""
    test_photos = list(photos(SET_PHOTOS).values())
    for role in ("calibration", "val"):
        images = photo_set(24, 0, role=role)
        shared = [i for i, image in enumerate(images) if any(_is_crop_of(image, photo) for photo in test_photos)]
        assert not shared, f"{len(shared)} of {len(images)} {role} images are crops of a test photo"
    assert _is_crop_of(photo_set(8, 0, role="test")[6], test_photos[2])  # the check finds a crop: the test role's own


def test_each_role_crops_its_own_photos_and_they_load_offline() -> None:
    from edge.photos import ROLE_PHOTOS, photo_set_sources

    names = [name for role in PHOTO_ROLES for name in ROLE_PHOTOS[role]]
    assert len(names) == len(set(names))  # no photo in two roles
    frames = photos(names)
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames.values())
    assert len({content_hash(f) for f in frames.values()}) == len(names)
    images = photo_set(10, 0, role="calibration")
    for image, source in zip(images, photo_set_sources(10, "calibration")):
        assert _is_crop_of(image, frames[source])
