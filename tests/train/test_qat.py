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


def test_fake_quantizers_start_from_the_mean_minmax_ranges() -> None:
    """Every Conv/Linear input quantizer's amax is the larger magnitude of the mean per-image min
    and max of the float input it reads (not Model Optimizer's max), the quantizers are left on,
    and the model's weights are untouched."""
    pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt (the qat extra)")
    import numpy as np
    import torch

    from train.qat import _insert_quantizers, _modelopt, _quant_config, start_from_mean_minmax

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1), torch.nn.Flatten(), torch.nn.Linear(32, 3)
    )
    images = np.random.default_rng(0).standard_normal((40, 3, 4, 4)).astype(np.float32)
    images[::7] *= 6  # a few images with extremes far beyond the others: max and mean-minmax differ
    seen: dict[int, list] = {0: [], 2: [], 4: []}  # the float inputs each layer reads
    hooks = [model[i].register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].detach())) for i in seen]
    with torch.no_grad():
        model(torch.from_numpy(images))
    for hook in hooks:
        hook.remove()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    mtq = _modelopt()
    _insert_quantizers(mtq, model, _quant_config(mtq, 8), images)
    maxima = {i: float(model[i].input_quantizer.amax) for i in seen}
    assert start_from_mean_minmax(torch, model, images) == 3
    for i, (value,) in seen.items():
        rows = value.reshape(len(value), -1)
        expected = max(abs(float(rows.amin(1).mean())), abs(float(rows.amax(1).mean())))
        quantizer = model[i].input_quantizer
        assert float(quantizer.amax) == pytest.approx(expected, rel=1e-5)
        assert float(quantizer.amax) < maxima[i]  # below Model Optimizer's max calibration
        assert quantizer.is_enabled
    for name, value in model.state_dict().items():
        if name in weights:
            assert torch.equal(value, weights[name]), name
