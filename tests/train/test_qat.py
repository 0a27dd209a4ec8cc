"""train/qat.py: the QAT schedule's length (the fine-tune itself: tests/edge/quantize/test_qat.py)."""

from __future__ import annotations

import pytest

from train.qat import qat_epochs


@pytest.mark.parametrize(("original", "expected"), [(1, 1), (3, 1), (10, 1), (20, 2), (30, 3), (100, 10)])
def test_about_a_tenth_of_the_epochs_at_least_one(original: int, expected: int) -> None:
    assert qat_epochs(original) == expected
