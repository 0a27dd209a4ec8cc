"""The pieces of training that need no training run: config, CLI validation, batches, layer
groups and the closing diagnosis (augmentation: test_augment.py)."""

import pytest

from edge.cli import main
from edge.errors import UserError
from train.augment import EpochBatches
from train.config import PRESETS, TrainConfig, resolve_config
from train.models import ZOO, build_model, head_parameter_names, layer_groups
from train.report import diagnose


def test_explicit_flags_beat_the_preset_which_beats_the_defaults():
    config = resolve_config({"preset": "demo", "epochs": 1, "out": "x", "mode": None})
    assert config.epochs == 1 and config.image_size == PRESETS["demo"]["image_size"]
    assert config.mode == "finetune" and config.optimizer == TrainConfig().optimizer


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "--epochs must be > 0"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
        (["--batch-size", "0"], "--batch-size must be > 0"),
        (["--warmup-epochs", "5", "--epochs", "2"], "--warmup-epochs must be >= 0 and below --epochs"),
        (["--preset", "demo", "--resume"], "last.pt does not exist"),
    ],
)
def test_invalid_arguments_are_rejected_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_ranks_share_the_single_process_batches_and_resume_skips_done_steps():
    single = EpochBatches(50, 16, seed=1)
    ranks = [EpochBatches(50, 16, seed=1, rank=r, world=2) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.set_epoch(3)
    for whole, *parts in zip(single, *ranks):
        assert sorted(whole) == sorted(item for part in parts for item in part)
    whole_epoch = list(single)
    assert [len(b) for b in whole_epoch] == [16, 16, 16, 2]
    single.set_epoch(3, start_step=2)
    assert list(single) == whole_epoch[2:]
    assert EpochBatches(5, 4, seed=0, world=2).steps_per_epoch() == 1  # a last batch of 1 cannot feed 2 ranks


@pytest.mark.slow
@pytest.mark.parametrize("arch", ZOO)
def test_layer_groups_cover_every_backbone_parameter_once_in_order(arch):
    model = build_model(arch, num_classes=3, drop_rate=0.1)
    groups, head = layer_groups(model), head_parameter_names(model)
    names = [n for n, _ in model.named_parameters()]
    flat = [n for g in groups for n in g]
    assert len(groups) >= 4 and len(head) == 2
    assert sorted(flat + head) == sorted(names) and len(set(flat)) == len(flat)
    assert [names.index(g[0]) for g in groups] == sorted(names.index(g[0]) for g in groups)


def test_diagnosis_names_overfitting_underfitting_and_stays_quiet_otherwise():
    def row(train_loss, train_top1, val_loss, val_top1):
        return {"train_loss": train_loss, "train_top1": train_top1, "val_loss": val_loss, "val_top1": val_top1}

    overfit = [row(1.0, 80, 0.9, 80), row(0.6, 90, 0.8, 84), row(0.3, 97, 1.0, 85)]
    assert any("overfitting" in f and "--augment standard" in f for f in diagnose(overfit, "finetune"))
    underfit = [row(2.0, 40, 2.0, 41), row(1.8, 50, 1.8, 51)]
    found = diagnose(underfit, "feature-extract")
    assert len(found) == 1 and "underfitting" in found[0] and "--mode finetune" in found[0]
    assert diagnose([row(0.5, 92, 0.45, 91), row(0.4, 93, 0.4, 92)], "finetune") == []


def test_resume_refuses_a_changed_learning_rate(tmp_path, monkeypatch):
    import train.checkpoint

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    monkeypatch.setattr(train.checkpoint, "load_checkpoint", lambda path: {"config": TrainConfig(out=str(run)).to_dict()})
    from train.config import resume_config

    assert resume_config({"out": str(run), "epochs": 20, "resume": True}).epochs == 20
    with pytest.raises(UserError, match="--lr 0.5 differs from the saved run's 0.002"):
        resume_config({"out": str(run), "lr": 0.5, "resume": True})
