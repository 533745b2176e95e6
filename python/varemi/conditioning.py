"""Conditioning vocabulary and label discretisation (DESIGN.md contracts 1 and 2)."""

from __future__ import annotations

import numpy as np

from varemi.errors import BinsError

MAX_BINS = 255
"""Most bins per axis: bins run ``-h..h`` and are stored as int8 (``h`` at most 127)."""


def check_bins(bins: int) -> int:
    """Return ``(bins - 1) // 2`` after checking that ``bins`` is an odd integer in 1..255.

    Args:
        bins: Bins per axis.

    Returns:
        The half-width ``h``: bins run from ``-h`` to ``+h``.

    Raises:
        BinsError: ``bins`` is not a positive odd integer, or exceeds :data:`MAX_BINS`
            (the int8 bin columns would wrap).
    """
    if (
        isinstance(bins, bool)
        or not isinstance(bins, (int, np.integer))
        or bins < 1
        or bins % 2 == 0
    ):
        raise BinsError(f"bins must be a positive odd integer, got {bins!r}")
    if bins > MAX_BINS:
        raise BinsError(f"bins must be at most {MAX_BINS} (bins are stored as int8), got {bins}")
    return (int(bins) - 1) // 2


def conditioning_token_strings(bins: int = 9) -> list[str]:
    """The conditioning tokens in vocabulary order: ``[VAL=-h]..[VAL=+h]``, ``[ARO=-h]..[ARO=+h]``.

    Args:
        bins: Bins per axis (odd).

    Returns:
        ``2 * bins`` token strings.
    """
    h = check_bins(bins)
    return [f"[VAL={v:+d}]" for v in range(-h, h + 1)] + [f"[ARO={a:+d}]" for a in range(-h, h + 1)]


def discretise_uniform(values: np.ndarray, bins: int = 9) -> np.ndarray:
    """Uniform bins: clip to [-1, 1], then ``round((v + 1) / 2 * (B - 1)) - h`` (half to even).

    Args:
        values: Labels, any float array.
        bins: Bins per axis (odd).

    Returns:
        int8 bins in ``-h..h``.
    """
    h = check_bins(bins)
    v = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
    return (np.round((v + 1.0) / 2.0 * (bins - 1)) - h).astype(np.int8)


def quantile_edges(values: np.ndarray, bins: int = 9) -> np.ndarray:
    """Inner edges of equal-count bins over a corpus (``--binning quantile``).

    Args:
        values: The corpus's labels for one axis.
        bins: Bins per axis (odd).

    Returns:
        ``bins - 1`` non-decreasing edges (float64). Empty input gives uniform edges.
    """
    check_bins(bins)
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.linspace(-1.0, 1.0, bins + 1)[1:-1]
    return np.quantile(v, np.arange(1, bins) / bins)


def discretise_quantile(values: np.ndarray, edges: np.ndarray, bins: int = 9) -> np.ndarray:
    """Bin labels by precomputed quantile edges: bin ``k - h`` where ``k`` edges are <= v.

    Args:
        values: Labels.
        edges: ``bins - 1`` edges from :func:`quantile_edges`.
        bins: Bins per axis (odd).

    Returns:
        int8 bins in ``-h..h``.
    """
    h = check_bins(bins)
    k = np.searchsorted(
        np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right"
    )
    return (k - h).astype(np.int8)
