"""Label-safe augmentation: transposed, velocity- and tempo-shifted copies (``--augment-*``).

Each copy is made from the parsed score in the worker, before labelling, so it is
labelled from its own music (a velocity change moves arousal honestly), then goes
through varemi's track merge and pitch normalisation (so the normalisation applies
after the shift) and is tokenised. A copy is named by its augmentation (``t+2``: every
non-drum pitch up two semitones; ``v-4``: every velocity down 4; ``q+10``: every tempo
10% faster, so the same notes last 10% less in seconds), recorded in the
``augmentation`` column (empty for the original), and shares its source's split and
group. MidiTok's ``augment_score`` recipe is pitch +-12, velocity +-4 (and duration
+-0.5 beat, which varemi does not offer). A tempo copy has the same tokens as its
source when the tokenizer has no tempo tokens (Maestro-REMI-bpe20k has none: time is
in beats), but not the same labels: its onset rate in seconds, and so its arousal,
moves with the tempo. That is the point of it: the same music, honestly relabelled.
"""

from __future__ import annotations

import re

import numpy as np

from varemi._base.errors import VaremiError

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


class AugmentError(VaremiError):
    """A bad ``--augment-*`` value."""


def parse_offsets(text: str | None, option: str, limit: int) -> tuple[int, ...]:
    """Read ``A..B`` (inclusive) or a comma list of integers; 0 (the original) is left out.

    Args:
        text: The option's value, or None.
        option: The option's name, for messages (``--augment-transpose``).
        limit: The largest offset magnitude accepted.

    Returns:
        The non-zero offsets, sorted, without repeats (empty for None).

    Raises:
        AugmentError: not a range or a list of integers, or an offset beyond ``limit``.
    """
    if text is None:
        return ()
    m = _RANGE.match(text)
    if m:
        low, high = int(m.group(1)), int(m.group(2))
        if low > high:
            raise AugmentError(f"{option} {text}: the range is empty ({low} > {high})")
        values = list(range(low, high + 1))
    else:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise AugmentError(
                f"{option} {text!r}: expected A..B or a comma list of integers (e.g. -3..3 or -2,2)"
            ) from None
    bad = [v for v in values if abs(v) > limit]
    if bad:
        raise AugmentError(
            f"{option} {text}: offsets must be within -{limit}..{limit}, got {bad[0]}"
        )
    return tuple(sorted({v for v in values if v != 0}))


def names(
    transpose: tuple[int, ...], velocity: tuple[int, ...], tempo: tuple[int, ...] = ()
) -> tuple[str, ...]:
    """The augmentation names of a build, in Python string order (the row order).

    Args:
        transpose: Semitone offsets.
        velocity: Velocity offsets.
        tempo: Tempo changes in percent.

    Returns:
        ``t+2``-style, ``v-4``-style and ``q+10``-style names, sorted.
    """
    return tuple(
        sorted(
            [f"t{t:+d}" for t in transpose]
            + [f"v{v:+d}" for v in velocity]
            + [f"q{q:+d}" for q in tempo]
        )
    )


def apply(score, name: str) -> None:
    """Apply the augmentation ``name`` to every non-drum track of ``score``, in place.

    Pitches are clipped to 0..127 (varemi's pitch normalisation runs afterwards),
    velocities to 1..127.

    Args:
        score: A ``symusic.Score`` in ticks.
        name: ``t+N``/``t-N`` (semitones), ``v+N``/``v-N`` (velocity) or ``q+N``/``q-N``
            (every tempo N% faster or slower; a score without tempo events gets one at
            the start, MIDI's default 120 quarter notes per minute, changed).
    """
    from symusic import Note, Tempo

    kind, offset = name[0], int(name[1:])
    if kind == "q":
        factor = 1.0 + offset / 100.0
        tempos = [(t.time, t.qpm) for t in score.tempos] or [(0, 120.0)]
        score.tempos = [Tempo(time, qpm * factor) for time, qpm in tempos]
        return
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        n = track.notes.numpy()
        pitch, velocity = n["pitch"].astype(np.int64), n["velocity"].astype(np.int64)
        if kind == "t":
            pitch = np.clip(pitch + offset, 0, 127)
        elif kind == "v":
            velocity = np.clip(velocity + offset, 1, 127)
        else:
            raise AugmentError(f"unknown augmentation {name!r}")
        track.notes = Note.from_numpy(
            n["time"], n["duration"], pitch.astype(np.int8), velocity.astype(np.int8)
        )
