"""Conditioning vocabulary and label discretisation (docs/contracts.md contracts 1 and 2).

Owns the bins (``--bins``, ``--binning``), the conditioning token strings, the one
predicate telling them from music tokens (:func:`is_conditioning_token`) and the one
bin -> token-id mapping (:func:`bin_token_ids`) that build, export, verify and
:func:`varemi.conditioning_ids` all use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from varemi._base.errors import BinsError, ConditioningError
from varemi._base.options import BINNINGS

MAX_BINS = 255
"""Most bins per axis: bins run ``-h..h`` and are stored as int8 (``h`` at most 127)."""


_CONDITIONING_TOKEN = re.compile(r"^\[(VAL|ARO)=[+-]\d+\]$")


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
        raise BinsError(f"--bins must be a positive odd integer, got {bins!r}")
    if bins > MAX_BINS:
        raise BinsError(f"--bins must be at most {MAX_BINS} (bins are stored as int8), got {bins}")
    return (int(bins) - 1) // 2


def check_binning(binning: str) -> None:
    """Refuse an unknown ``--binning``.

    Args:
        binning: ``uniform`` or ``quantile``.

    Raises:
        BinsError: any other value.
    """
    if binning not in BINNINGS:
        raise BinsError(f"--binning must be one of {BINNINGS}, got {binning!r}")


def is_conditioning_token(token: str) -> bool:
    """Whether a token string is a conditioning token (``[VAL=+2]``, ``[ARO=-1]``).

    Args:
        token: A token string of the vocabulary.

    Returns:
        True for the tokens of contract 1 (any bin), False for music tokens.
    """
    return _CONDITIONING_TOKEN.match(token) is not None


def bin_token_ids(
    tokens: Mapping[str, int], valence_bins: np.ndarray, arousal_bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The conditioning token ids of bins: ``[VAL=v]`` and ``[ARO=a]`` looked up by name.

    The one bin -> id mapping of varemi: ``build`` (through :mod:`varemi.core.windows`),
    ``verify`` and :func:`varemi.conditioning_ids` all use it.

    Args:
        tokens: Conditioning token string to id (``dataset_info.json``'s
            ``conditioning_tokens``, or what ``add_conditioning_tokens`` returned);
            ``2 * bins`` entries.
        valence_bins: Valence bins in ``-h..h`` (any integer array or scalar).
        arousal_bins: Arousal bins in ``-h..h``.

    Returns:
        int32 valence ids and int32 arousal ids, shaped as the bins.

    Raises:
        BinsError: a bin outside ``-h..h``.
        ConditioningError: ``tokens`` lacks a token of contract 1.
    """
    bins = len(tokens) // 2
    names = conditioning_token_strings(bins) if bins % 2 == 1 and bins <= MAX_BINS else []
    h = (bins - 1) // 2  # check_bins(bins) when names is not empty
    if not names or len(tokens) != len(names) or any(n not in tokens for n in names):
        expected = f"{names[0]}..{names[-1]}" if names else "an odd number of bins per axis"
        raise ConditioningError(
            f"conditioning tokens {list(tokens)[:4]}... are not those of contract 1 ({expected})"
        )
    table = np.array([tokens[n] for n in names], dtype=np.int32).reshape(2, 2 * h + 1)
    out = []
    for axis, (name, b) in enumerate((("valence", valence_bins), ("arousal", arousal_bins))):
        b = np.asarray(b, dtype=np.int64)
        if b.size and (int(b.min()) < -h or int(b.max()) > h):
            bad = int(b.min()) if int(b.min()) < -h else int(b.max())
            raise BinsError(f"{name} bin {bad} is outside {-h}..{h}")
        out.append(table[axis][b + h])
    return out[0], out[1]


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
    """Inner edges of equal-count bins over a corpus (``--binning quantile``), ties by rank.

    Sorted, the ``n`` labels take ranks ``0..n-1``; a group of equal labels takes the
    mid-rank of the group, ``m = (labels below) + (count - 1) / 2``, so ties always share
    one bin: the bin is ``k - h`` with ``k = min(floor((m + 1/2) * B / n), B - 1)``. With
    distinct labels every bin gets ``n / B`` of them (to within one); sign-only labels
    (half -1, half +1, 9 bins) go to -2 and +2; all-equal labels go to the neutral bin.
    Edge ``j`` (``j = 1..B-1``) is the smallest label whose ``k >= j``, so
    :func:`discretise_quantile` with these edges gives exactly those bins; when no label
    reaches ``k = j`` the edge is the float just above the largest label. Equal
    consecutive edges mean empty bins (see :func:`bins_used`).

    Args:
        values: The corpus's labels for one axis.
        bins: Bins per axis (odd).

    Returns:
        ``bins - 1`` non-decreasing edges (float64). Empty input gives uniform edges.
    """
    check_bins(bins)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.linspace(-1.0, 1.0, bins + 1)[1:-1]
    distinct, counts = np.unique(v, return_counts=True)
    below = np.cumsum(counts) - counts
    mid = below + (counts - 1) / 2.0
    k = np.minimum(np.floor((mid + 0.5) * bins / v.size).astype(np.int64), bins - 1)
    above = np.nextafter(distinct[-1], np.inf)
    first = np.searchsorted(k, np.arange(1, bins), side="left")  # k is non-decreasing
    return np.where(first < distinct.size, distinct[np.minimum(first, distinct.size - 1)], above)


def bins_used(edges: np.ndarray, values: np.ndarray, bins: int = 9) -> int:
    """How many distinct bins the labels fall in (fewer than ``bins`` when ties collapse them).

    Args:
        values: Labels.
        edges: From :func:`quantile_edges`.
        bins: Bins per axis (odd).

    Returns:
        The number of distinct bins among ``discretise_quantile(values, edges, bins)``.
    """
    return int(np.unique(discretise_quantile(values, edges, bins)).size)


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
