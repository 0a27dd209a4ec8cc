"""train/qat.py: the QAT schedule's length and its losses (the fine-tune itself: tests/edge/quantize/test_qat.py)."""

from __future__ import annotations

import pytest

from train.qat import qat_epochs


@pytest.mark.parametrize(("original", "expected"), [(1, 1), (3, 1), (10, 1), (20, 2), (30, 3), (100, 10)])
def test_about_a_tenth_of_the_epochs_at_least_one(original: int, expected: int) -> None:
    assert qat_epochs(original) == expected


def test_distillation_fits_the_float_teacher_and_labels_fit_the_labels() -> None:
    pytest.importorskip("modelopt.torch.distill", reason="QAT needs nvidia-modelopt (the qat extra)")
    import torch

    from train.qat import _criterion, _frozen_teacher

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    teacher = _frozen_teacher(torch, student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    images, labels = torch.randn(8, 3, 2, 2), torch.randint(0, 5, (8,))
    distill = _criterion(torch, teacher, label_smoothing=0.0)
    # the student is still the teacher: nothing to fit, whatever the labels say
    assert float(distill(student(images), images, labels)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        student[1].weight.mul_(3.0)
    logits = student(images)
    expected = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), torch.softmax(teacher(images), 1), reduction="batchmean")
    assert float(distill(logits, images, labels)) == pytest.approx(float(expected), rel=1e-5) and float(expected) > 0
    labelled = _criterion(torch, None, label_smoothing=0.0)
    assert float(labelled(logits, images, labels)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
