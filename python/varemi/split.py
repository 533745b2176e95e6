"""The split by file or group (DESIGN.md contract 6): which files go to ``val``.

Owns the split parameters (``--seed``, ``--train-split``) and their validator; the
hashing itself is the native kernel :func:`varemi.kernels.val_mask`. In format 2 a
file that belongs to a group (duplicates, ``--groups``, ``--group-by``) hashes its
group's key instead of its own path, so a group never straddles the splits.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

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


def val_mask(
    files: Sequence[str],
    seed: int,
    train_split: float,
    group_key: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Which files belong to ``val``.

    Args:
        files: Paths relative to the MIDI root, POSIX separators.
        seed: The split seed.
        train_split: Fraction of files meant for ``train``.
        group_key: A grouped file's split key (its group's first file, or the user's
            group name); a file not in it hashes its own path.

    Returns:
        Boolean array, True for ``val``.

    Raises:
        SplitParameterError: a parameter out of range.
    """
    from varemi import kernels

    check_split_params(seed, train_split)
    keys = [group_key.get(f, f) for f in files] if group_key else files
    return kernels.val_mask(keys, seed, train_split)
