"""The split by file or group (docs/contracts.md contract 6): which files go to ``val``.

Owns the split parameters (``--seed``, ``--train-split``) and their validator; the
hashing itself is the native kernel :func:`varemi.core.kernels.val_mask`. In format 2 a
file that belongs to a group (duplicates, ``--groups``, ``--group-by``) hashes its
group's key instead of its own path, so a group never straddles the splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from varemi.core import kernels
from varemi.core.params import check_split_params

_TWO_64 = 2**64


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
    check_split_params(seed, train_split)
    keys = [group_key.get(f, f) for f in files] if group_key else files
    return kernels.val_mask(keys, seed, train_split)
