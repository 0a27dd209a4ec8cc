import json
import math
import os
import signal

import cv2
import numpy as np
import pytest
import torch

from edge.errors import UserError
from edge.manifest import read_manifest
from tests.train.conftest import tiny_config
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.data import FASHION_MNIST_LABELS, open_data
from train.distributed import Distributed
from train.loop import Trainer, train
from train.models import pretrained_spec
from train.report import curves_figure, epoch_line
from train.run_checkpoints import restored_sums

pytestmark = pytest.mark.slow


def test_run_writes_best_and_last_checkpoints_with_manifests_and_reports(tiny_run):
    out = tiny_run.run
    for name in ("checkpoint.pt", "last.pt"):
        assert read_manifest(out / name).kind == "checkpoint"
    best, last = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(out / "last.pt")
    assert best["training_state"] is None and last["training_state"]["epoch"] == 2
    assert best["arch"] == "tf_efficientnet_lite0" and best["num_classes"] == 10
    assert best["config"]["epochs"] == 2 and best["data_fingerprint"] == last["data_fingerprint"]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 2
    for png in ("curves.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == tiny_run.best_epoch and summary["test_images"] == 64
    assert read_manifest(out / "checkpoint.pt").metrics["test_top1"] == pytest.approx(tiny_run.test["top1"])


def test_spec_is_the_backbones_own_with_gray_resize_and_the_data_labels(tiny_run):
    _, spec = model_from_checkpoint(tiny_run.checkpoint)
    own = pretrained_spec("tf_efficientnet_lite0")
    assert spec.labels == FASHION_MNIST_LABELS
    assert (spec.color, spec.crop, spec.input_size, spec.resize_size) == ("gray", "resize", 32, 32)
    assert spec.mean == own.mean and spec.std == own.std and spec.interpolation == own.interpolation


def test_best_checkpoint_evaluates_through_spec_apply_as_training_reported(tiny_run):
    model, spec = model_from_checkpoint(tiny_run.checkpoint)
    val = open_data("fashion-mnist", seed=3).split("val", 64, 3)
    batch = spec.apply_batch([val.image(i) for i in range(len(val))])
    with torch.inference_mode():
        predicted = model(torch.from_numpy(batch)).argmax(1).numpy()
    top1 = 100.0 * float((predicted == val.labels).mean())
    assert top1 == pytest.approx(tiny_run.best_val_top1)


def test_ctrl_c_writes_a_resumable_checkpoint_and_resume_continues_exactly(tiny_run, tmp_path):
    out = tmp_path / "interrupted"

    def interrupt(trainer, epoch, step):
        if (epoch, step) == (0, 1):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out), on_step=interrupt)
    state = load_checkpoint(out / "last.pt")["training_state"]
    assert (state["epoch"], state["step"]) == (0, 2)
    assert read_manifest(out / "last.pt").provenance["resumable"] is True

    train(tiny_config(out, resume=True))
    resumed = load_checkpoint(out / "last.pt")["state_dict"]
    reference = load_checkpoint(tiny_run.last)["state_dict"]
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    resumed_history = load_checkpoint(out / "last.pt")["history"]
    assert [r["val_top1"] for r in resumed_history] == [r["val_top1"] for r in tiny_run.history]
    # the interrupted epoch's running sums (plain loss included) came back from last.pt
    assert [r["train_loss_plain"] for r in resumed_history] == pytest.approx([r["train_loss_plain"] for r in tiny_run.history])


def test_history_records_the_plain_training_loss_and_curves_plot_it(tiny_run):
    rows = tiny_run.history
    plain = [row["train_loss_plain"] for row in rows]
    assert all(isinstance(value, float) and 0 < value < 5 for value in plain)
    # the criterion carries label smoothing 0.1 (the default): its loss is not the plain one
    assert all(abs(value - row["train_loss"]) > 1e-3 for value, row in zip(plain, rows))
    header = (tiny_run.run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,lr,train_loss,train_loss_plain,train_top1,")
    loss_ax = curves_figure(rows, tiny_run.best_epoch, label_smoothing=0.1).axes[0]
    assert [text.get_text() for text in loss_ax.get_legend().get_texts()][:2] == [
        "train loss (no smoothing)",
        "val loss (no smoothing)",
    ]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx(plain)


def test_without_label_smoothing_the_plain_loss_is_the_criterions(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "plain", label_smoothing=0.0, augment="none", drop_rate=0.0), Distributed(), None)
    trainer.prepare()
    trainer.begin_epoch()
    images, labels = next(iter(torch.utils.data.DataLoader(trainer.train_dataset, batch_sampler=trainer.sampler)))
    loss_sum, correct, plain_sum = trainer.train_step(images, labels, len(labels))
    assert plain_sum == pytest.approx(loss_sum, rel=1e-6) and plain_sum > 0 and 0 <= correct <= len(labels)


def test_the_epoch_log_line_compares_plain_losses():
    row = dict(
        epoch=3, train_loss=0.6, train_loss_plain=0.31, train_top1=90.12, val_loss=0.29, val_top1=91.2, images_per_s=1234.4
    )
    assert epoch_line(row) == "epoch 3: train loss 0.3100 (no smoothing) top-1 90.12% | val loss 0.2900 top-1 91.20% | 1234 img/s"
    assert epoch_line({**row, "train_loss_plain": None}).startswith("epoch 3: train loss 0.6000 top-1 90.12% |")


def test_a_last_checkpoint_without_the_plain_loss_resumes_with_none_for_that_epoch():
    old = {"loss": 40.0, "correct": 20.0, "seen": 32.0, "seconds": 3.0}  # written mid-epoch before plain_loss existed
    assert math.isnan(restored_sums(old)["plain_loss"]) and restored_sums(old)["loss"] == 40.0
    assert restored_sums({**old, "seen": 0.0, "loss": 0.0})["plain_loss"] == 0.0  # at an epoch's start: nothing lost
    assert restored_sums({**old, "plain_loss": 30.0})["plain_loss"] == 30.0


def test_feature_extract_trains_only_the_head_and_stops_early(tmp_path):
    # Also covers --amp (bf16 on CPU), --channels-last, --grad-checkpointing and DataLoader workers.
    options = dict(mode="feature-extract", amp=True, channels_last=True, grad_checkpointing=True, workers=2)
    out = tmp_path / "fx"
    result = train(tiny_config(out, epochs=3, patience=1, min_delta=100.0, test_limit=0, **options))
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1
    trained = load_checkpoint(result.last)["state_dict"]
    fresh = Trainer(tiny_config(tmp_path / "ref", **options), Distributed(), None)
    fresh.prepare()
    start = fresh.model.state_dict()
    head = set(fresh.head)
    for name, tensor in start.items():
        same = torch.equal(trained[name], tensor)
        assert same != (name in head), name  # backbone (incl. BN statistics) unchanged, head changed


def test_gradual_unfreezes_from_the_top_with_lower_rates_deeper(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "g", mode="gradual", backbone_lr_scale=0.5), Distributed(), None)
    trainer.prepare()
    named = dict(trainer.model.named_parameters())
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    group_lrs = [lr_of[id(named[names[0]])] for names in trainer.groups]
    head_lr = lr_of[id(named[trainer.head[0]])]
    assert group_lrs[-1] / head_lr == pytest.approx(0.5)  # --backbone-lr-scale
    assert [b / a for a, b in zip(group_lrs, group_lrs[1:])] == pytest.approx([2.0] * (len(group_lrs) - 1))
    trainer.set_trainable_for_epoch(0)
    assert [n for n, p in trainer.model.named_parameters() if p.requires_grad] == trainer.head
    trainer.set_trainable_for_epoch(2)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == set(trainer.head) | set(trainer.groups[-1]) | set(trainer.groups[-2])
    trainer.enter_train_mode()
    stem_bn = trainer.model.bn1
    assert not stem_bn.training and trainer.model.bn2.training  # frozen BN keeps its statistics


def test_cuda_out_of_memory_halves_the_micro_batch_and_keeps_the_step_exact(tmp_path, monkeypatch):
    config = dict(mode="feature-extract", drop_rate=0.0, augment="none", epochs=1, test_limit=0)
    reference = train(tiny_config(tmp_path / "ref", **config))
    original = torch.nn.Module.__call__

    def limited(self, *args, **kwargs):
        if self.__class__.__name__ == "EfficientNet" and torch.is_grad_enabled() and args[0].shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", limited)
    halved = train(tiny_config(tmp_path / "oom", **config))
    assert halved.history[-1]["micro_batch"] == 8
    expected = load_checkpoint(reference.last)["state_dict"]
    for name, tensor in load_checkpoint(halved.last)["state_dict"].items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_out_of_memory_under_ddp_names_the_batch_size_to_use(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "d", batch_size=64), Distributed(rank=0, world=2), None)
    trainer.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    trainer.micro_batch = 32
    with pytest.raises(UserError, match="--batch-size 32"):
        trainer.shrink_micro_batch()


def _write_folder(root, classes, per_class=10, size=(40, 48)):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.full((*size, 3), 40 + 60 * index, np.uint8)
            image[rng.integers(0, size[0]), :] = 255
            cv2.imwrite(str(root / name / f"{i}.png"), image)


def test_image_folder_run_skips_corrupt_images_and_resume_refuses_other_classes(tmp_path):
    data = tmp_path / "photos"
    _write_folder(data, ("ant", "bee", "cat"))
    (data / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "folder-run"
    result = train(tiny_config(out, data=str(data), train_limit=None, val_limit=None, test_limit=None, epochs=1, batch_size=8))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_images"] == 1
    _, spec = model_from_checkpoint(result.checkpoint)
    assert spec.labels == ("ant", "bee", "cat") and spec.color == "rgb" and spec.crop == "center"

    other = tmp_path / "other"
    _write_folder(other, ("ant", "bee", "dog"))
    with pytest.raises(UserError, match=r"classes .* differ from the checkpoint's"):
        train(tiny_config(out, data=str(other), resume=True, epochs=2))


def test_resume_without_a_last_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist; start the run without --resume"):
        train(tiny_config(tmp_path / "nothing", resume=True))
