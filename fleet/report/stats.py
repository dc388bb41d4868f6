"""Means with a 95% Student-t interval over a few units (no scipy in the project: the t quantile is computed
here, by integrating the t density and bisecting)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

CONFIDENCE = 0.95


def _t_density(x: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_zero(x: float, df: int, intervals: int = 400) -> float:
    """P(0 < T < x) by Simpson's rule (the density is smooth and bounded: 400 intervals give 4 digits)."""
    h = x / intervals
    total = _t_density(0.0, df) + _t_density(x, df)
    total += sum((4 if i % 2 else 2) * _t_density(i * h, df) for i in range(1, intervals))
    return total * h / 3


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p in (0.5, 1)) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    target = p - 0.5
    lo, hi = 0.0, 1.0
    while _t_cdf_above_zero(hi, df) < target:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_above_zero(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and the half-width of its 95% t interval (None when n < 2)."""

    mean: float
    half_width: float | None
    n: int


def mean_interval(values: list[float]) -> Interval | None:
    """Mean and 95% t interval of finite ``values``; None for an empty list."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, None, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n), n)
