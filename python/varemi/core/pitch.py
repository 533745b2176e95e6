"""Pitch normalisation parameters: ``--pitch-policy``, ``--pitch-range`` (contract 3).

The validator here is the one the build runs before any work and the pure-Python
reference of :func:`varemi.core.kernels.normalize_pitches` runs on every call. The
normalisation of a score's tracks is in :mod:`varemi.music.encoder`.
"""

from __future__ import annotations

import operator

from varemi._base.errors import PitchRangeError
from varemi._base.options import PITCH_POLICIES


def check_pitch_params(policy: str, low: int, high: int) -> None:
    """Refuse a pitch policy or range that cannot work, naming the option.

    Args:
        policy: ``--pitch-policy``: ``clamp``, ``fold`` or ``drop``.
        low: Lowest pitch of ``--pitch-range``, inclusive.
        high: Highest pitch of ``--pitch-range``, inclusive.

    Raises:
        TypeError: a bound that is not an integer.
        PitchRangeError: unknown policy, ``low > high``, bounds outside 0..127, or
            ``fold`` on a range narrower than an octave.
    """
    low, high = operator.index(low), operator.index(high)  # ints only, as the native side
    if policy not in PITCH_POLICIES:
        raise PitchRangeError(f"--pitch-policy must be one of {PITCH_POLICIES}, got {policy!r}")
    if low > high:
        raise PitchRangeError(f"--pitch-range low ({low}) > high ({high})")
    if not (0 <= low <= 127 and 0 <= high <= 127):
        raise PitchRangeError(f"--pitch-range must lie in 0..127, got [{low}, {high}]")
    if policy == "fold" and high - low < 11:
        raise PitchRangeError(
            f"--pitch-policy fold needs a --pitch-range of at least an octave, got [{low}, {high}]"
        )
