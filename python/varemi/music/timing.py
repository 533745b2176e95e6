"""A file's tempo map, and a decoded window of its ids given the tempos of its bars.

``build --label-time seconds --label-scope window`` labels each window with the file's
own timing. The window's ids are decoded as for beat labels (MidiTok: no tempo, 120 qpm,
the tokenizer's resolution); the decoded score is then given the file's tempo map over
the music it holds, shifted so that its tick 0 is where the window's music starts in
the file:

- the tokens count time in bars of :func:`varemi.music.tokenizer.bar_quarters`
  quarters (4/4, whatever the file's own time signature, for a tokenizer without
  time-signature tokens), and MidiTok writes a ``Bar`` token for every bar from the
  file's tick 0, empty ones included;
- MidiTok decodes the music before a window's first ``Bar`` into its bar 0 and the
  first ``Bar`` into bar 1, or that ``Bar`` into bar 0 when the window starts with it.
  So the decoded bar 0 is the file's bar ``b - 1``, where ``b`` is the number of Bar
  tokens in the ids before the window, or bar ``b`` when the window's first id starts
  a bar (:func:`window_first_bars`);
- the tempo in force at that bar's first quarter goes to tick 0, and every later change
  of the file's map to its offset from there, rounded to the decoded score's ticks
  (:func:`give_tempos`). Tempo changes after the window's last tick are left out.

A window decoded and given a constant 120 qpm map (a file without tempo events, or one
at 120 qpm throughout) is the beat-time window exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from symusic import Score

DEFAULT_MSPQ = 500_000
"""Microseconds per quarter before a file's first tempo event (MIDI's 120 qpm)."""


@dataclass(frozen=True)
class TempoMap:
    """A file's tempo changes in quarter notes from its start.

    Attributes:
        quarters: float64, where each tempo starts, ascending; the first is 0.
        mspq: int64 microseconds per quarter of each.
    """

    quarters: np.ndarray
    mspq: np.ndarray


def tempo_map(score: Score) -> TempoMap:
    """The tempo map of a score in ticks, in quarters (120 qpm before its first event).

    Args:
        score: A symusic score in ticks (as :func:`varemi.music.files.parse_midi` gives).

    Returns:
        Its :class:`TempoMap`.
    """
    arrays = score.tempos.numpy()
    order = np.argsort(arrays["time"], kind="stable")
    quarters = np.asarray(arrays["time"], dtype=np.float64)[order] / score.ticks_per_quarter
    mspq = np.asarray(arrays["mspq"], dtype=np.int64)[order]
    if len(quarters) == 0 or quarters[0] > 0:
        quarters = np.concatenate([[0.0], quarters])
        mspq = np.concatenate([[DEFAULT_MSPQ], mspq])
    return TempoMap(quarters, mspq)


def window_first_bars(
    ids: np.ndarray, starts: np.ndarray, bar_starts: np.ndarray, bar_counts: np.ndarray
) -> np.ndarray:
    """The file's bar (from 0) that each window's decoded bar 0 is (see the module doc).

    Args:
        ids: The file's music token ids.
        starts: Where each window starts in ``ids``.
        bar_starts: Which ids start a bar (:func:`varemi.music.tokenizer.bar_start_table`).
        bar_counts: How many bars each id holds
            (:func:`varemi.music.tokenizer.bar_count_table`).

    Returns:
        int64, one bar per window.
    """
    ids = np.asarray(ids, dtype=np.int64)
    known = (ids >= 0) & (ids < len(bar_counts))
    safe = np.where(known, ids, 0)
    per_id = np.where(known, bar_counts[safe], 0)
    before = np.concatenate([[0], np.cumsum(per_id)])  # Bar tokens in ids[:k]
    starts = np.asarray(starts, dtype=np.int64)
    opens = known[starts] & bar_starts[safe[starts]]
    return np.maximum(before[starts] - np.where(opens, 0, 1), 0)


def give_tempos(score: Score, tempo: TempoMap, start: float) -> None:
    """Give a decoded score the file's tempos from quarter ``start`` on, in place.

    Args:
        score: A decoded score, in ticks; its own tempos are replaced.
        tempo: The file's tempo map.
        start: Where the score's tick 0 lies in the file, in quarters.
    """
    from symusic import Tempo

    tpq = score.ticks_per_quarter
    end = start + score.end() / tpq
    first = max(int(np.searchsorted(tempo.quarters, start, side="right")) - 1, 0)
    later = np.nonzero((tempo.quarters > start) & (tempo.quarters < end))[0]
    ticks = np.rint((tempo.quarters[later] - start) * tpq).astype(np.int64)
    score.tempos = [Tempo(0, mspq=int(tempo.mspq[first]))] + [
        Tempo(int(t), mspq=int(tempo.mspq[k])) for t, k in zip(ticks, later, strict=True)
    ]
