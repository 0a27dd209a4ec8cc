"""Writing checkpoints (train/checkpoint.py, train/run_checkpoints.py): tensors and plain data only,
so plain ``torch.load(weights_only=True)`` reads them back whole — spec, config, weights and the
state that ``--resume`` continues from."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from edge.errors import UserError
from edge.spec import PreprocessSpec
from train.checkpoint import model_from_checkpoint, plain_data, save_checkpoint
from train.config import TrainConfig
from train.data import FASHION_MNIST_LABELS
from train.models import build_model
from train.run_checkpoints import restore_rng, rng_state

ARCH = "test_efficientnet"  # timm's 100k-parameter test network: builds offline in a second
SPEC = PreprocessSpec(input_size=16, resize_size=16, crop="resize", labels=["a", "b"])


def plain_leaves(value: object, where: str = "payload") -> list[str]:
    """Where ``value`` holds anything but tensors, Python numbers, strings, bools and None."""
    if isinstance(value, torch.Tensor) or type(value) in (type(None), bool, int, float, str):
        return []
    if type(value) is dict:
        return [bad for key, item in value.items() for bad in plain_leaves(key, where) + plain_leaves(item, f"{where}[{key!r}]")]
    if type(value) in (list, tuple):
        return [bad for index, item in enumerate(value) for bad in plain_leaves(item, f"{where}[{index}]")]
    return [f"{where}: {type(value).__module__}.{type(value).__qualname__}"]


def draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]


def test_a_trained_run_s_checkpoints_are_plain_data_read_back_whole(tiny_run):
    """checkpoint.pt and last.pt of a real training run: plain torch.load(weights_only=True), with no
    allowlist, reads every field; the spec, config and weights are the run's own."""
    for path in (tiny_run.checkpoint, tiny_run.last):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert plain_leaves(payload) == []
        assert payload["format"] == CHECKPOINT_FORMAT
        assert tuple(PreprocessSpec.from_dict(payload["spec"]).labels) == tuple(FASHION_MNIST_LABELS)
        assert TrainConfig.from_dict(payload["config"]).epochs == 2
        assert [row["val_top1"] for row in payload["history"]] == [row["val_top1"] for row in tiny_run.history]
    state = torch.load(tiny_run.last, map_location="cpu", weights_only=True)["training_state"]
    assert set(state["rng"]) == {"torch", "numpy", "python", "cuda"}
    assert state["rng"]["numpy"]["bit_generator"] == "MT19937" and len(state["rng"]["numpy"]["key"]) == 624
    assert isinstance(state["optimizer"]["state"], dict) and state["optimizer"]["param_groups"]


def test_a_checkpoint_round_trips_spec_config_weights_and_resume_state(tmp_path):
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    optimizer.step()
    config = TrainConfig(out=str(tmp_path), data="photos/", model=ARCH, image_size=16, train_limit=None)
    history = [{"epoch": 1, "val_top1": np.float64(50.0), "val_loss": np.float32(0.5), "micro_batch": np.int64(8)}]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = {"epoch": 1, "step": 0, "optimizer": optimizer.state_dict(), "rng": rng_state(torch), "best_top1": np.float64(50.0)}
    expected = draws()

    path = save_checkpoint(tmp_path / "last.pt", model, ARCH, SPEC, {"drop_rate": 0.0}, config.to_dict(), history, "abc", state)
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no allowlist: plain data only
    assert plain_leaves(payload) == []
    assert PreprocessSpec.from_dict(payload["spec"]) == SPEC
    assert TrainConfig.from_dict(payload["config"]) == config
    assert payload["history"] == [{"epoch": 1, "val_top1": 50.0, "val_loss": 0.5, "micro_batch": 8}]
    assert type(payload["history"][0]["val_top1"]) is float and type(payload["history"][0]["micro_batch"]) is int
    rebuilt, spec = model_from_checkpoint(path)
    assert spec == SPEC
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    restored = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    restored.load_state_dict(payload["training_state"]["optimizer"])
    assert restored.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    for index, saved in optimizer.state_dict()["state"].items():
        for key, value in saved.items():
            torch.testing.assert_close(restored.state_dict()["state"][index][key], value, rtol=0, atol=0)

    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(torch, payload["training_state"]["rng"])
    assert draws() == expected  # torch, NumPy and Python continue exactly where they were saved


def test_an_earlier_version_s_checkpoint_with_numpy_values_still_loads_and_resumes(tmp_path):
    """Earlier checkpoints held NumPy float64 metrics and NumPy's RNG state tuple (an array): their
    NumPy data types are allowed on reading, nothing else is."""
    model = build_model(ARCH, num_classes=2)
    np.random.seed(4), random.seed(4), torch.manual_seed(4)
    legacy_rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(), "cuda": None}
    expected = draws()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": ARCH,
        "num_classes": 2,
        "model_config": {},
        "state_dict": model.state_dict(),
        "spec": SPEC.to_dict(),
        "config": {"epochs": 1},
        "history": [{"epoch": 1, "val_top1": np.float64(50.0)}],
        "data_fingerprint": "abc",
        "training_state": {"rng": legacy_rng},
    }
    torch.save(payload, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["history"][0]["val_top1"] == 50.0
    restore_rng(torch, loaded["training_state"]["rng"])
    assert draws() == expected


def test_a_numpy_object_array_is_still_refused(tmp_path):
    """The NumPy allowance is numbers only: an object array (whose items could be anything) is refused."""
    torch.save({"format": CHECKPOINT_FORMAT, "x": np.array([Path("x")], dtype=object)}, tmp_path / "objects.pt")
    with pytest.raises(UserError, match=r"objects\.pt .*only an unsafe load \(pickle\).*refused"):
        load_checkpoint(tmp_path / "objects.pt")


def test_plain_data_turns_numpy_numbers_into_python_ones_and_refuses_objects():
    assert plain_data({"a": [np.float64(1.5), (np.int64(2), np.bool_(True))]}) == {"a": [1.5, (2, True)]}
    assert type(plain_data(np.float64(1.5))) is float
    with pytest.raises(TypeError, match=r"checkpoint\['config'\]\['out'\] holds a pathlib\.PosixPath"):
        plain_data({"config": {"out": Path("runs/x")}})
    with pytest.raises(TypeError, match="numpy.ndarray"):
        plain_data({"rng": np.zeros(3)})
