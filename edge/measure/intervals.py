"""Distribution-free intervals for timing rounds: a median, a paired ratio, and new/old across runs.

A cell's latency is R round p50s. Their median gets an order-statistic interval (no normality
assumed: with R = 5 it is [min, max] at 93.8%). A ratio measured within one run (INT8/FP32 in
the same round, stepped back to back) is the median of per-round ratios with the same interval.
Two runs (a report and its baseline) are independent samples: their ratio is the Hodges-Lehmann
estimate (median of all pairwise log-ratios) with the exact Mann-Whitney interval, which covers
at 96.8% with 5 rounds on each side. Nothing is divided by the machine probe timed beside each
round (``edge.measure.timing.MachineProbe``): it is a noise figure only (its docstring says why); a
slower machine is told from a slower model by the other artifacts timed in the same rounds
(``bench.latency_gate``). An interval below ``CONFIDENCE_FLOOR`` gives no latency verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache
from statistics import median
from typing import Any

CONFIDENCE = 0.95
# A latency verdict needs an interval at least this sure: 3+3 rounds give 90%, 2+2 only 66.7%, 1+1 none.
CONFIDENCE_FLOOR = 0.90


def _binom_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n


def _sorted_sample(values: list[float]) -> list[float]:
    """The values as sorted floats; ValueError when there are none."""
    x = sorted(float(v) for v in values)
    if not x:
        raise ValueError("no values")
    return x


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float | None]:
    """(low, high, level): the order-statistic interval for the median of ``values``.

    The widest coverage available ([min, max]) is used when ``confidence`` cannot be reached;
    ``level`` is the exact coverage (None for a single value, which has no interval).
    """
    x = _sorted_sample(values)
    n = len(x)
    if n == 1:
        return x[0], x[0], None
    k = 1
    for j in range(1, n // 2 + 1):
        if 2 * _binom_tail(j - 1, n) <= 1 - confidence:
            k = j
        else:
            break
    return x[k - 1], x[n - k], 1 - 2 * _binom_tail(k - 1, n)


def quantile_interval(values: list[float], q: float, confidence: float = CONFIDENCE) -> tuple[float, float, float | None]:
    """(low, high, level): the distribution-free order-statistic interval for the ``q`` quantile
    (0 < q < 1) of the population ``values`` were drawn from; the narrowest pair of order statistics
    symmetric in rank around ``q * n`` that covers at ``confidence`` (the widest available otherwise).
    ``median_interval`` is the q = 0.5 case with exact binomial tails."""
    x = _sorted_sample(values)
    n = len(x)
    if n == 1:
        return x[0], x[0], None
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(q) + (n - i) * math.log1p(-q)
        for i in range(n + 1)
    ]
    cumulative, total = [], 0.0
    for value in log_pmf:
        total += math.exp(value)
        cumulative.append(total)

    def cdf(k: int) -> float:  # P(Binomial(n, q) <= k)
        return cumulative[k]

    centre = q * n
    best = (0, n - 1)
    for half in range(1, n + 1):
        lo, hi = max(0, int(math.floor(centre)) - half), min(n - 1, int(math.ceil(centre)) + half - 1)
        best = (lo, hi)
        if cdf(hi) - cdf(lo) >= confidence or (lo == 0 and hi == n - 1):
            break
    lo, hi = best
    level = cdf(hi) - cdf(lo)  # P(x_(lo+1) <= quantile < x_(hi+1)) in 1-based order statistics
    return x[lo], x[hi], level


def spread_pct(values: list[float]) -> float | None:
    """(max - min) / median of round figures, in percent: how much the rounds disagreed."""
    if len(values) < 2:
        return None
    middle = median(values)
    return (max(values) - min(values)) / middle * 100.0 if middle > 0 else None


@dataclass(frozen=True)
class Ratio:
    """A ratio with its interval: ``estimate`` in [``low``, ``high``] at coverage ``level``."""

    estimate: float
    low: float
    high: float
    level: float | None
    n: int  # rounds (paired) or pairs of rounds (two runs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        level = f" at {self.level * 100:.1f}%" if self.level is not None else ""
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}{level}]"


def paired_ratio(numerators: list[float], denominators: list[float], confidence: float = CONFIDENCE) -> Ratio:
    """Per-round ratios (same round, back to back): their median and its order-statistic interval."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("paired ratios need the same, non-zero number of rounds on each side")
    ratios = [a / b for a, b in zip(numerators, denominators)]
    low, high, level = median_interval(ratios, confidence)
    return Ratio(median(ratios), low, high, level, len(ratios))


@cache
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of orderings giving each Mann-Whitney U = 0 .. n*m (exact null distribution)."""
    if n == 0 or m == 0:
        return (1,)
    counts = [0] * (n * m + 1)
    for u, c in enumerate(_u_counts(n - 1, m)):  # the largest value belongs to the first sample
        counts[u + m] += c
    for u, c in enumerate(_u_counts(n, m - 1)):
        counts[u] += c
    return tuple(counts)


def _u_cdf(c: int, n: int, m: int) -> float:
    counts = _u_counts(n, m)
    return sum(counts[: c + 1]) / sum(counts)


def two_sample_ratio(new: list[float], old: list[float], confidence: float = CONFIDENCE) -> Ratio:
    """new/old from two independent sets of rounds: Hodges-Lehmann estimate, Mann-Whitney interval."""
    if not new or not old or min(new) <= 0 or min(old) <= 0:
        raise ValueError("two positive samples are needed")
    n, m = len(new), len(old)
    diffs = sorted(math.log(a) - math.log(b) for a in new for b in old)
    k = 1
    if n <= 30 and m <= 30:
        for j in range(1, n * m // 2 + 1):
            if 2 * _u_cdf(j - 1, n, m) <= 1 - confidence:
                k = j
            else:
                break
        level = 1 - 2 * _u_cdf(k - 1, n, m)
    else:  # the normal approximation of U
        z = 1.959963984540054 if confidence == CONFIDENCE else _z(confidence)
        k = max(1, int(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12)))
        level = confidence
    estimate = math.exp(median(diffs))
    return Ratio(estimate, math.exp(diffs[k - 1]), math.exp(diffs[n * m - k]), level, n * m)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)
