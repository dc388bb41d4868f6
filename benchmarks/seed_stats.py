"""Intervals over training seeds (or units): what a benchmark's headline figure is quoted with."""

from __future__ import annotations

import math

import numpy as np

# two-sided 95% Student t critical values by sample size (n - 1 degrees of freedom)
_T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26, 11: 2.23, 12: 2.20,
        13: 2.18, 14: 2.16, 15: 2.14, 16: 2.13, 17: 2.12, 18: 2.11, 19: 2.10, 20: 2.09, 25: 2.06, 30: 2.05}


def t_interval(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (nan half-width below two samples)."""
    a = np.asarray(x, dtype=float)
    if len(a) < 2:
        return float(a.mean()) if len(a) else float("nan"), float("nan")
    t95 = _T95.get(len(a)) or next((v for k, v in sorted(_T95.items()) if k >= len(a)), 1.96)
    return float(a.mean()), float(t95 * a.std(ddof=1) / math.sqrt(len(a)))


def welch_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95% interval (Welch's standard error, with the t quantile of
    the smaller sample's degrees of freedom: conservative); nan half-width below two samples a side."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(x), len(y)) < 2:
        return float(x.mean() - y.mean()) if len(x) and len(y) else float("nan"), float("nan")
    n = min(len(x), len(y))
    t95 = _T95[max(k for k in _T95 if k <= n)]  # the next tabulated size below: a wider interval, never narrower
    se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return float(x.mean() - y.mean()), float(t95 * se)


def ratio_interval(num: list[float], den: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """mean(num) / mean(den) and its 95% percentile-bootstrap interval, resampling each side's seeds."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, len(a), (draws, len(a)))].mean(axis=1)
    rb = b[rng.integers(0, len(b), (draws, len(b)))].mean(axis=1)
    lo, hi = np.percentile(ra / rb, [2.5, 97.5])
    return float(a.mean() / b.mean()), float(lo), float(hi)


def median_interval(x: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Median and its distribution-free interval (order statistics of the binomial sign test): the k-th smallest
    and k-th largest values, k the largest with P(Binom(n, 1/2) < k) <= (1 - level) / 2. An interval that cannot
    be had at ``level`` (fewer than 6 values at 95%) is the whole range, nan where empty."""
    a = sorted(float(v) for v in x)
    n = len(a)
    if not n:
        return float("nan"), float("nan"), float("nan")
    tail, k, below = (1 - level) / 2, 0, 0.0
    while k < n // 2 and below + math.comb(n, k) / 2**n <= tail:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k, 1)
    return float(np.median(a)), a[k - 1], a[n - k]


def sign_test_above(x: list[float], threshold: float) -> float:
    """One-sided sign-test p-value that the median of ``x`` is above ``threshold`` (ties dropped): the chance of
    at least as many values above it if each were above or below with even odds."""
    above = sum(v > threshold for v in x)
    n = above + sum(v < threshold for v in x)
    return sum(math.comb(n, j) for j in range(above, n + 1)) / 2**n if n else float("nan")
