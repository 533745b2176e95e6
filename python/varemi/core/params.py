"""The parameters of the window and split kernels, checked in one place.

The native wrappers (:mod:`varemi.core.kernels`), their twins (:mod:`varemi.core.reference`)
and the build all refuse a bad ``--window-size``, ``--stride``, ``--min-window-tokens``,
``--seed`` or ``--train-split`` here, with a message naming the option.
"""

from __future__ import annotations

import operator

from varemi._base.errors import SplitParameterError, WindowParameterError
from varemi._base.options import WINDOW_ALIGNS

_TWO_64 = 2**64


def check_window_params(window_size: int, stride: int, min_window_tokens: int) -> None:
    """Refuse window parameters out of range, naming the option.

    Args:
        window_size: Tokens per window (``--window-size``), at least 1.
        stride: Distance between window starts (``--stride``), at least 1.
        min_window_tokens: Shortest window kept (``--min-window-tokens``), in
            1..window_size.

    Raises:
        TypeError: a parameter that is not an integer.
        WindowParameterError: a parameter out of range.
    """
    window_size, stride = operator.index(window_size), operator.index(stride)
    min_window_tokens = operator.index(min_window_tokens)
    if window_size < 1:
        raise WindowParameterError(f"--window-size must be >= 1, got {window_size}")
    if stride < 1:
        raise WindowParameterError(f"--stride must be >= 1, got {stride}")
    if min_window_tokens < 1:
        raise WindowParameterError(f"--min-window-tokens must be >= 1, got {min_window_tokens}")
    if min_window_tokens > window_size:
        raise WindowParameterError(
            f"--min-window-tokens ({min_window_tokens}) must not exceed "
            f"--window-size ({window_size})"
        )


def check_split_params(seed: int, train_split: float) -> None:
    """Refuse split parameters out of range, naming the option.

    Args:
        seed: ``--seed``, in 0..2**64-1.
        train_split: ``--train-split``, in (0, 1].

    Raises:
        TypeError: a seed that is not an integer.
        SplitParameterError: a parameter out of range (NaN included).
    """
    seed = operator.index(seed)
    if not 0 <= seed < _TWO_64:
        raise SplitParameterError(f"--seed must be in 0..2**64-1, got {seed}")
    if not 0.0 < train_split <= 1.0:  # also refuses NaN
        raise SplitParameterError(f"--train-split must be in (0, 1], got {train_split}")


def check_window_align(align: str) -> None:
    """Refuse a ``--window-align`` that is not one of :data:`WINDOW_ALIGNS`.

    Args:
        align: ``token`` or ``bar``.

    Raises:
        WindowParameterError: another value.
    """
    if align not in WINDOW_ALIGNS:
        raise WindowParameterError(
            f"--window-align must be one of {', '.join(WINDOW_ALIGNS)}, got {align!r}"
        )
