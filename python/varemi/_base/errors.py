"""Exceptions raised by varemi, native and pure-Python code alike.

Every bad parameter raises a subclass of :class:`VaremiError`, itself a
:class:`ValueError`, so callers can catch either. Unsupported array dtypes raise
the built-in :class:`TypeError`. The native extension raises these same classes.
"""

from __future__ import annotations


class VaremiError(ValueError):
    """Base class for every bad-parameter error raised by varemi."""


class WindowParameterError(VaremiError):
    """Window size, stride or ``min_window_tokens`` out of range."""


class OffsetsError(VaremiError):
    """Per-file offsets that are not non-decreasing or run past the token array."""


class PitchRangeError(VaremiError):
    """A pitch range with low > high, or a pitch policy that cannot work on it."""


class BinsError(VaremiError):
    """A number of bins that is not a positive odd integer, or a bad binning."""


class SplitParameterError(VaremiError):
    """A ``train_split`` outside (0, 1] or a seed outside the unsigned 64-bit range."""


class ConditioningError(VaremiError):
    """Conditioning ids or window arrays that do not fit together."""


class UnsupportedConfig(VaremiError):
    """A tokenizer configuration the native encoder (REMI or BPE) does not reproduce exactly.

    Attributes:
        reason: One line naming the configuration flag or table that is not covered.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedScore(VaremiError):
    """A score the native REMI encoder hands back to MidiTok (e.g. a negative onset)."""


class UnknownTokenIdError(VaremiError):
    """A base token id that is not in the tokenizer's base vocabulary."""


class OutputFolderError(VaremiError):
    """The output folder cannot be (over)written safely, or writing into it failed."""


class EmptyDatasetError(VaremiError):
    """A build that kept no file: nothing is written, the previous output stays."""


class LabelInputError(VaremiError):
    """Note arrays the label features cannot be computed from (no notes, bad lengths)."""
