"""Tiny real training runs shared by the training tests (Fashion-MNIST, 32 px, a few hundred images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import TrainConfig


def tiny_config(out: Path, **changes: object) -> TrainConfig:
    """A run small enough for a unit test: 128 training images, 32 px, 2 epochs."""
    values: dict[str, object] = dict(
        out=str(out),
        data="fashion-mnist",
        train_limit=128,
        val_limit=64,
        test_limit=64,
        image_size=32,
        batch_size=32,
        epochs=2,
        lr=2e-3,
        warmup_epochs=0.25,
        drop_rate=0.2,
        augment="standard",
        seed=3,
    )
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished 2-epoch fine-tune (dropout and standard augmentation on, so RNG matters)."""
    from train.loop import train

    out = tmp_path_factory.mktemp("train") / "tiny"
    result = train(tiny_config(out))
    return result
