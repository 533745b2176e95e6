"""The statistics of ``evaluate``: Spearman's rho, bootstrap intervals, permutation tests.

numpy only. Every function that draws is seeded, so a figure is reproducible from its
inputs and its seed.

- :func:`spearman`: rho with ties averaged (what ``scipy.stats.spearmanr`` gives).
- :func:`bootstrap_interval`: the 95% percentile interval of a statistic of ``n`` items
  drawn with replacement (pieces are the items in ``evaluate``).
- :func:`permutation_pvalue`: the one-sided p-value of a statistic of pairs against the
  same statistic with one side permuted: ``(k + 1) / (permutations + 1)``, ``k`` the
  permutations whose statistic is at least the observed one.
- :func:`mean_interval`: a mean and its bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

RESAMPLES = 1000
"""Bootstrap resamples behind every interval of ``evaluate``."""

PERMUTATIONS = 1000
"""Permutations behind every permutation p-value of ``evaluate`` (smallest p 1/1001)."""

LEVEL = 0.95
"""The coverage of the intervals."""

_TOLERANCE = 1e-12
"""A permuted statistic this close below the observed one counts as reaching it (rounding)."""


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what scipy.stats.rankdata does by default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a, b) -> float | None:
    """Spearman's rho (ties averaged); None when either side is constant or too short.

    Args:
        a: Values.
        b: Values, paired with ``a``.

    Returns:
        rho in [-1, 1], or None.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def bootstrap_interval(
    stat: Callable[[np.ndarray], float | None],
    n: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[float] | None:
    """The 95% percentile bootstrap interval of a statistic of ``n`` items.

    Each resample draws ``n`` item indices with replacement; a resample on which the
    statistic is undefined (None: e.g. one side constant) is left out. The same seed
    draws the same resamples, so figures of the same items share them.

    Args:
        stat: The statistic of the items at some indices (an int array of length n).
        n: How many items.
        resamples: How many resamples.
        seed: Seed of the draws.

    Returns:
        ``[low, high]``, or None when ``n`` is 0 or no resample is defined.
    """
    if n < 1 or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    values = [v for _ in range(resamples) if (v := stat(rng.integers(0, n, n))) is not None]
    if not values:
        return None
    tail = 100 * (1 - LEVEL) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def permutation_pvalue(
    stat: Callable[[np.ndarray], float | None],
    n: int,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> float | None:
    """One-sided permutation p-value: how often a permuted pairing does at least as well.

    ``stat(order)`` is the statistic with one side of the pairs taken in ``order`` (the
    requested bins, in ``evaluate``); the observed value is ``stat(arange(n))``. With
    ``k`` of ``permutations`` random orders at or above it (within rounding),
    p = (k + 1) / (permutations + 1): never 0, ``1 / (permutations + 1)`` at best.

    Args:
        stat: The statistic of a pairing.
        n: How many pairs.
        permutations: How many random orders.
        seed: Seed of the orders.

    Returns:
        p in (0, 1], or None when the observed statistic is undefined.
    """
    observed = stat(np.arange(n)) if n else None
    if observed is None or permutations < 1:
        return None
    rng = np.random.default_rng(seed)
    k = 0
    for _ in range(permutations):
        v = stat(rng.permutation(n))
        k += v is not None and v >= observed - _TOLERANCE
    return (k + 1) / (permutations + 1)


def spearman_pvalue(a, b, permutations: int = PERMUTATIONS, seed: int = 0) -> float | None:
    """:func:`permutation_pvalue` of :func:`spearman`, ``a`` permuted (vectorised).

    Permuting ``a`` permutes its ranks, so every permuted rho is one dot product.

    Args:
        a: Values (the side that is permuted: the requested bins).
        b: Values paired with ``a`` (the measured figure).
        permutations: How many random orders.
        seed: Seed of the orders.

    Returns:
        p in (0, 1], or None when rho is undefined.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    observed = spearman(a, b)
    if observed is None or permutations < 1:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    rng = np.random.default_rng(seed)
    k = 0
    for start in range(0, permutations, 256):  # 256 orders at a time: bounded memory
        m = min(256, permutations - start)
        orders = np.stack([rng.permutation(len(a)) for _ in range(m)])
        k += int(np.count_nonzero(ra[orders] @ rb / denom >= observed - _TOLERANCE))
    return (k + 1) / (permutations + 1)


def spearman_interval(a, b, resamples: int = RESAMPLES, seed: int = 0) -> list[float] | None:
    """:func:`bootstrap_interval` of :func:`spearman` over the pairs ``(a[i], b[i])``.

    Vectorised: each resample's ranks (ties averaged) come from the counts of the
    original values it drew. A resample with a constant side is left out.

    Args:
        a: Values.
        b: Values, paired with ``a``.
        resamples: How many resamples.
        seed: Seed of the draws.

    Returns:
        ``[low, high]``, or None.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    if n < 1 or resamples < 1:
        return None
    _, ca = np.unique(a, return_inverse=True)
    _, cb = np.unique(b, return_inverse=True)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, 128):  # 128 resamples at a time: bounded memory
        idx = rng.integers(0, n, (min(128, resamples - start), n))
        ra, rb = _resampled_ranks(ca, idx), _resampled_ranks(cb, idx)
        ra -= ra.mean(axis=1, keepdims=True)
        rb -= rb.mean(axis=1, keepdims=True)
        denom = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
        ok = denom > 0
        values.append((ra * rb).sum(axis=1)[ok] / denom[ok])
    drawn = np.concatenate(values)
    if not len(drawn):
        return None
    tail = 100 * (1 - LEVEL) / 2
    return [float(np.percentile(drawn, tail)), float(np.percentile(drawn, 100 - tail))]


def _resampled_ranks(codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Ranks (ties averaged, 0-based) of ``codes[idx]`` along each row of ``idx``.

    ``codes`` are the dense ranks of the original values (``np.unique``'s inverse), so a
    value's rank in a resample is the count of smaller drawn values plus half of the
    equal ones beside it.
    """
    rows, n = idx.shape
    u = int(codes.max()) + 1
    drawn = codes[idx]
    flat = (np.arange(rows)[:, None] * u + drawn).ravel()
    counts = np.bincount(flat, minlength=rows * u).reshape(rows, u).astype(np.float64)
    below = np.cumsum(counts, axis=1) - counts
    mid = below + (counts - 1) / 2
    return np.take_along_axis(mid, drawn, axis=1)


def mean_interval(x, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float | None, list | None]:
    """A mean and its 95% bootstrap interval (vectorised).

    Args:
        x: Values.
        resamples: How many resamples.
        seed: Seed of the draws.

    Returns:
        ``(mean, [low, high])``; ``(None, None)`` for no values, ``(mean, None)`` for one
        (one value says nothing of its spread).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if len(x) == 0:
        return None, None
    mean = float(x.mean())
    if len(x) < 2 or resamples < 1:
        return mean, None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    return mean, [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]
