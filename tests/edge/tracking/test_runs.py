"""`edge runs` (edge/tracking/runs.py): the sort order of its table (its output: tests/bench/test_tracking.py)."""

from __future__ import annotations

import pytest

from edge.errors import UserError
from edge.tracking.runs import sort_rows


def test_runs_sort_puts_the_best_first_and_missing_figures_last():
    rows = [
        {"run": "a", "fp32_top1": 90.0, "int8_drop": 0.4, "latency": {"cpu b1": 2.0}},
        {"run": "b", "fp32_top1": None, "int8_drop": 0.1, "latency": {}},
        {"run": "c", "fp32_top1": 92.5, "int8_drop": None, "latency": {"cpu b1": 1.0}},
    ]
    assert [r["run"] for r in sort_rows(rows, "fp32_top1")] == ["c", "a", "b"]
    assert [r["run"] for r in sort_rows(rows, "fp32_top1", reverse=True)] == ["a", "c", "b"]
    assert [r["run"] for r in sort_rows(rows, "int8_drop")] == ["b", "a", "c"]
    assert [r["run"] for r in sort_rows(rows, "cpu_b1")] == ["c", "a", "b"]
    with pytest.raises(UserError, match="--sort cuda_b1: no such column; use one of run, .*, cpu_b1$"):
        sort_rows(rows, "cuda_b1")
