import time

import numpy as np
import pytest
import torch

from edge.errors import UserError
from edge.photos import PHOTO_CLASSES
from train import models
from train.models import LITE0, build_model, head_size, map_lite0_state_dict, pretrained_spec


def test_mapped_lite0_gives_the_original_models_logits(photos):
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch", reason="needs the dev extra (efficientnet-lite-pytorch)")
    reference = reference_lib.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(models.lite0_weights_file(), map_location="cpu", weights_only=True))
    ours = build_model(LITE0, pretrained=True)
    spec = pretrained_spec(LITE0)
    batch = torch.from_numpy(spec.apply_batch(list(photos.values())))
    with torch.no_grad():
        expected = reference.eval()(batch)
        actual = ours.eval()(batch)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_lite0_mapping_checks_every_shape():
    target = build_model(LITE0).state_dict()
    source = {f"x{i}": v.clone() for i, v in enumerate(target.values())}
    first = next(iter(source))
    source[first] = torch.zeros(1, 2, 3)
    with pytest.raises(UserError, match="mapping failed: x0"):
        map_lite0_state_dict(source, target)
    with pytest.raises(UserError, match="tensors"):
        map_lite0_state_dict(dict(list(source.items())[:-1]), target)


def test_pretrained_lite0_names_the_real_photos(pretrained_run, photos):
    from edge.runners import select_runner

    with select_runner(pretrained_run, backend="torch") as runner:
        logits = runner.infer(runner.spec.apply_batch(list(photos.values())))
    for name, row in zip(photos, logits):
        assert int(np.argmax(row)) in PHOTO_CLASSES[name], f"{name}: top-1 {runner.spec.labels[int(np.argmax(row))]}"


def test_imagenet_labels_come_from_metadata():
    labels = models.imagenet_labels()
    assert len(labels) == 1000 and labels[285] == "Egyptian cat" and labels[967] == "espresso"


def test_unknown_model_is_rejected_before_any_work():
    with pytest.raises(UserError, match="unknown model 'resnet9000'"):
        build_model("resnet9000")


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_large", "efficientnet_b0", LITE0])
def test_new_head_matches_classes_and_dropout(arch):
    model = build_model(arch, num_classes=7, drop_rate=0.2)
    assert head_size(model) == 7
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in model.modules())
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_zoo_covers_the_torchvision_models_and_any_timm_name():
    for arch in ("resnet18", "resnet50", "efficientnet_b0", "efficientnet_b4", "vit_b_16", "mobilenet_v3_large"):
        assert models.zoo_entry(arch).library == "torchvision"
    assert models.zoo_entry("resnet18").imagenet_top1 == pytest.approx(69.758)
    assert models.zoo_entry("convnext_atto").library == "timm"


def test_offline_download_fails_within_seconds_naming_weights(monkeypatch):
    # Point the hub cache somewhere empty so the real download path is taken.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub-cache")
    monkeypatch.setattr(models, "_NETWORK_PROBE_TIMEOUT_S", 2.0)

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(models.socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(UserError, match="--weights PATH"):
        build_model("resnet18", pretrained=True)
    assert time.monotonic() - start < 10


def test_weights_file_loads_a_local_state_dict(tmp_path):
    source = build_model("resnet18", num_classes=3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_model("resnet18", num_classes=3, weights_path=path)
    # The head is fresh (new classes) but the backbone is the file's.
    torch.testing.assert_close(loaded.conv1.weight, source.conv1.weight)
    with pytest.raises(UserError, match="does not fit this model"):
        build_model("mobilenet_v3_large", weights_path=path)
    with pytest.raises(UserError, match="does not exist"):
        build_model("resnet18", weights_path=tmp_path / "missing.pth")


def test_spec_of_a_torchvision_model_uses_its_transforms():
    spec = pretrained_spec("efficientnet_b0")
    assert (spec.input_size, spec.interpolation, spec.num_classes) == (224, "bicubic", 1000)
