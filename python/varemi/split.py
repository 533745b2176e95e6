"""The split by file (DESIGN.md contract 6): which files go to ``val``.

Owns the split parameters (``--seed``, ``--train-split``) and their validator; the
hashing itself is the native kernel :func:`varemi.kernels.val_mask`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from varemi.errors import SplitParameterError

_TWO_64 = 2**64


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


def val_mask(files: Sequence[str], seed: int, train_split: float) -> np.ndarray:
    """Which files belong to ``val``.

    Args:
        files: Paths relative to the MIDI root, POSIX separators.
        seed: The split seed.
        train_split: Fraction of files meant for ``train``.

    Returns:
        Boolean array, True for ``val``.

    Raises:
        SplitParameterError: a parameter out of range.
    """
    from varemi import kernels

    check_split_params(seed, train_split)
    return kernels.val_mask(files, seed, train_split)
