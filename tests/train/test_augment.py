"""Augmentation: the presets' outputs, their randomness, and agreement with torchvision's definitions."""

import numpy as np
import pytest
import torch

from edge.spec import PreprocessSpec
from train.augment import (
    AUGMENTATIONS,
    EpochBatches,
    SampleParams,
    TrainDataset,
    augment_image,
    draw_params,
    to_network_input,
)
from train.data import ImageSplit

GRAY = PreprocessSpec(input_size=32, resize_size=32, crop="resize", color="gray", mean=(0.5,) * 3, std=(0.5,) * 3)
COLOR = PreprocessSpec(input_size=24, resize_size=28, interpolation="bicubic")
COLOR_BGR = COLOR.replace(channel_order="bgr")


def _split(images):
    labels = np.arange(len(images), dtype=np.int64) % 2
    return ImageSplit("mem", "train", ("a", "b"), labels, [str(i) for i in range(len(images))], lambda i: images[i])


def _images():
    """Gray, color, non-square, larger than the input (downscaled), HxWx1 and BGRA."""
    rng = np.random.default_rng(0)
    shapes = [(28, 28), (40, 40, 3), (17, 50), (120, 90, 3), (33, 33, 1), (30, 20, 4)]
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def _denormalize(tensor, spec):
    return tensor * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)


@pytest.mark.parametrize("preset", ["standard", "light", "none"])
@pytest.mark.parametrize("spec", [GRAY, COLOR, COLOR_BGR], ids=["gray", "rgb", "bgr"])
def test_every_preset_gives_normalized_float32_chw_at_the_input_size(preset, spec):
    images = _images()
    dataset = TrainDataset(_split(images), spec, preset, seed=1)
    for index in range(len(images)):
        tensor, label = dataset[(index, 0)]
        assert tensor.shape == spec.input_shape and tensor.dtype == torch.float32 and label == index % 2
        pixels = _denormalize(tensor, spec)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        if spec.color == "gray":
            assert torch.allclose(pixels[0], pixels[1], atol=1e-6) and torch.allclose(pixels[0], pixels[2], atol=1e-6)


@pytest.mark.parametrize("spec", [GRAY, COLOR, COLOR_BGR], ids=["gray", "rgb", "bgr"])
def test_none_is_exactly_the_eval_preprocessing(spec):
    images = _images()
    dataset = TrainDataset(_split(images), spec, "none", seed=1)
    keys = [(i, 3) for i in range(len(images))]
    for (tensor, _), image in zip(dataset.__getitems__(keys), images):
        np.testing.assert_array_equal(tensor.numpy(), spec.apply(image))


def test_light_and_standard_follow_the_spec_channel_order_mean_and_std():
    flat = np.zeros((30, 30, 3), np.uint8)
    flat[:, :] = (10, 100, 200)  # BGR
    for spec in (COLOR, COLOR_BGR):
        tensor = TrainDataset(_split([flat]), spec, "light", seed=0)[(0, 0)][0]
        rgb = (200, 100, 10) if spec.channel_order == "rgb" else (10, 100, 200)
        expected = (np.asarray(rgb) / 255 - np.asarray(spec.mean)) / np.asarray(spec.std)
        np.testing.assert_allclose(tensor.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_a_sample_is_seeded_by_seed_epoch_and_index_and_leaves_global_generators_alone():
    images = _images()[:2]
    dataset = TrainDataset(_split(images), COLOR, "standard", seed=7)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = dataset[(1, 0)][0]
    assert torch.equal(first, dataset[(1, 0)][0])
    assert torch.equal(first, TrainDataset(_split(images), COLOR, "standard", seed=7)[(1, 0)][0])
    assert not torch.equal(first, dataset[(1, 1)][0])
    assert not torch.equal(first, TrainDataset(_split(images), COLOR, "standard", seed=8)[(1, 0)][0])
    assert torch.equal(torch_state, torch.get_rng_state())  # dropout's generator: --resume stays exact
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()


@pytest.mark.parametrize("spec", [GRAY, COLOR], ids=["gray", "color"])
def test_a_sample_is_the_same_alone_in_a_batch_on_any_rank_and_in_any_worker(spec):
    images = [np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8) for i in range(12)]
    dataset = TrainDataset(_split(images), spec, "standard", seed=5)
    alone = {i: dataset[(i, 2)][0] for i in range(len(images))}
    for keys in ([(i, 2) for i in range(12)], [(i, 2) for i in (7, 3, 11)]):
        for (tensor, _), (index, _) in zip(dataset.__getitems__(keys), keys):
            assert torch.equal(tensor, alone[index])
    for world, workers in ((1, 0), (2, 0), (1, 2)):
        for rank in range(world):
            sampler = EpochBatches(len(images), 8, seed=0, rank=rank, world=world)
            sampler.set_epoch(2)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
            for keys, (batch, _) in zip(sampler, loader):
                assert torch.equal(batch, torch.stack([alone[index] for index, _ in keys]))


@pytest.mark.parametrize(("preset", "height", "width"), [("standard", 28, 28), ("standard", 40, 60), ("light", 50, 40)])
def test_drawn_parameters_keep_to_torchvisions_ranges(preset, height, width):
    augmentation = AUGMENTATIONS[preset]
    for draw in range(200):
        p = draw_params(np.random.default_rng(draw), height, width, augmentation)
        assert 0 <= p.top <= height - p.height and 0 <= p.left <= width - p.width
        assert augmentation.scale[0] * 0.9 <= p.height * p.width / (height * width) <= 1.0
        assert abs(p.angle) <= augmentation.degrees and abs(p.brightness - 1) <= augmentation.brightness
    params = [draw_params(np.random.default_rng(d), height, width, augmentation) for d in range(200)]
    assert 60 < sum(p.flip for p in params) < 140
    if preset == "light":
        assert all(p.angle == 0 and p.brightness == 1 for p in params)


def test_a_crop_that_never_fits_falls_back_to_the_central_one():
    # A 1 x 100 strip: every try asks for a crop several pixels high, so RandomResizedCrop takes the
    # central crop of the widest allowed aspect ratio (4:3 -> 1 x 1).
    params = draw_params(np.random.default_rng(0), 1, 100, AUGMENTATIONS["standard"])
    assert (params.top, params.left, params.height, params.width) == (0, 49, 1, 1)


def test_the_flip_mirrors_and_composes_with_the_rotation():
    spec = GRAY
    image = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    whole = dict(top=0, left=0, height=32, width=32)
    np.testing.assert_array_equal(augment_image(image, SampleParams(**whole, flip=True), spec), image[:, ::-1])
    np.testing.assert_array_equal(augment_image(image, SampleParams(**whole), spec), image)
    flipped_then_rotated = augment_image(image, SampleParams(**whole, flip=True, angle=10.0), spec)
    np.testing.assert_array_equal(
        flipped_then_rotated, augment_image(np.ascontiguousarray(image[:, ::-1]), SampleParams(**whole, angle=10.0), spec)
    )


def test_the_rotation_is_counter_clockwise_and_fills_zeros_in_the_corners():
    spec = GRAY
    whole = dict(top=0, left=0, height=32, width=32)
    flat = np.full((32, 32), 200, np.uint8)
    rotated = augment_image(flat, SampleParams(**whole, angle=15.0), spec)
    assert rotated[0, 0] == rotated[0, -1] == rotated[-1, 0] == rotated[-1, -1] == 0
    assert rotated[16, 16] == 200
    corner = to_network_input([rotated], [1.0], spec)[0, :, 0, 0]
    np.testing.assert_allclose(corner.numpy(), -np.asarray(spec.mean) / np.asarray(spec.std), atol=1e-6)
    dot = np.zeros((32, 32), np.uint8)
    dot[16, 26] = 255  # right of the center: a quarter turn counter-clockwise puts it above
    turned = augment_image(dot, SampleParams(**whole, angle=90.0), spec)
    row, col = np.unravel_index(np.argmax(turned), turned.shape)
    assert col in (15, 16) and row < 10


def test_brightness_scales_pixels_and_clamps_at_white():
    spec = GRAY
    image = np.array([[0, 50], [100, 250]], np.uint8)
    batch = to_network_input([image, image], [1.2, 0.8], spec)
    pixels = _denormalize(batch[:, 0:1], spec)[:, 0].numpy()  # every channel holds the gray value
    np.testing.assert_allclose(pixels[0], np.minimum(image * 1.2 / 255, 1.0), atol=1e-6)
    np.testing.assert_allclose(pixels[1], image * 0.8 / 255, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_pipeline_matches_torchvision_transforms_on_the_same_parameters(interpolation):
    """The definitions the presets name: resized crop, mirror, then rotation with 0 fill."""
    functional = pytest.importorskip("torchvision.transforms.functional")
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    spec = GRAY.replace(input_size=48, resize_size=48, interpolation=interpolation)
    rows, cols = np.mgrid[0:40, 0:32]
    blob = 200 * np.exp(-((rows - 12) ** 2 + (cols - 22) ** 2) / 40.0) + 1.5 * rows
    image = blob.clip(0, 255).astype(np.uint8)
    for params in (SampleParams(4, 3, 30, 26, flip=True, angle=12.0), SampleParams(0, 0, 40, 32, angle=-15.0)):
        ours = augment_image(image, params, spec).astype(float)
        mode = InterpolationMode(interpolation)
        pil = functional.resized_crop(
            Image.fromarray(image), params.top, params.left, params.height, params.width, [48, 48], mode
        )
        if params.flip:
            pil = functional.hflip(pil)
        pil = functional.rotate(pil, params.angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        # Interpolation kernels and the antialiased rotation edge differ by a few levels on average;
        # a mirrored or opposite rotation differs by about 20.
        assert np.abs(ours - np.asarray(pil, dtype=float)).mean() < 1.5


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'"):
        TrainDataset(_split(_images()), GRAY, "heavy", seed=0)
