"""Native REMI base-token encoding: MidiTok's ids, computed in Rust.

:class:`NativeREMI` gives, for a ``symusic.Score``, exactly the base ids (before BPE)
that ``tokenizer.encode(score, encode_ids=False)`` gives with MidiTok 3.1, one int32
array per track MidiTok keeps. It covers REMI configurations without time-signature,
tempo, key-signature, chord, rest, program, sustain-pedal, pitch-bend, control-change or
pitch-interval tokens (the Maestro-REMI-bpe20k configuration and its neighbours: any
``beat_res``, ``num_velocities``, ``pitch_range``, velocities on or off, duration tokens
for any set of programs, duplicate removal, ``PitchDrum`` tokens, ``Bar_End`` tokens and
trailing bars). :meth:`NativeREMI.from_tokenizer` raises :class:`UnsupportedConfig` for
any other configuration, so callers can keep MidiTok for it.

MidiTok's steps are reproduced in its order: resampling to the tokenizer's resolution as
``symusic.Score.resample`` does it, removal of the notes outside the pitch range (and of
the tracks left empty), nearest velocity and duration of the vocabulary, optional
duplicate removal, a stable sort by onset, then ``Bar``/``Position`` tokens and
``Pitch``/``Velocity``/``Duration`` per note (see ``crates/varemi-core/src/remi.rs``).
A score that MidiTok would refuse or treat in a way the kernel does not (a negative onset,
ticks that overflow int32 when resampled) is handed to MidiTok itself: the result is always
MidiTok's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from varemi import _native
from varemi._base.errors import UnsupportedConfig, UnsupportedScore

if TYPE_CHECKING:
    from miditok import REMI
    from symusic import Score

__all__ = ["NativeREMI", "UnsupportedConfig", "UnsupportedScore"]

_OFF_FLAGS = (
    "use_chords",
    "use_rests",
    "use_tempos",
    "use_time_signatures",
    "use_key_signatures",
    "use_sustain_pedals",
    "use_pitch_bends",
    "use_control_changes",
    "use_programs",
    "use_pitch_intervals",
    "one_token_stream_for_programs",
    "program_changes",
    "sustain_pedal_duration",
)
"""Config flags that must be off: each adds tokens or preprocessing the kernel lacks."""

_REMI_PARAMS = ("max_bar_embedding", "use_bar_end_tokens", "add_trailing_bars")


def _id(vocab: dict[str, int], token: str) -> int:
    try:
        return int(vocab[token])
    except KeyError:
        raise UnsupportedConfig(f"the vocabulary has no {token} token") from None


class NativeREMI:
    """MidiTok REMI base-token encoding in Rust, for the configurations it covers exactly.

    Build it with :meth:`from_tokenizer`; :meth:`encode_base` then replaces
    ``[s.ids for s in tokenizer.encode(score, encode_ids=False)]``.

    Attributes:
        tokenizer: The MidiTok tokenizer the tables come from (also the fallback).
        fallbacks: How many scores :meth:`encode_base` handed to MidiTok so far.
    """

    def __init__(
        self,
        tokenizer: REMI,
        encoder: Any,
        pitchdrum: bool,
        duration_programs: frozenset[int],
        trailing_bars: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self._encoder = encoder
        self._pitchdrum = pitchdrum
        self._duration_programs = duration_programs
        self._trailing_bars = trailing_bars
        self.fallbacks = 0

    @classmethod
    def from_tokenizer(cls, tokenizer: REMI) -> NativeREMI:
        """Prepare the native encoder for a MidiTok tokenizer.

        Args:
            tokenizer: A MidiTok tokenizer (BPE-trained or not).

        Returns:
            The encoder, holding the tokenizer's vocabulary tables.

        Raises:
            UnsupportedConfig: The tokenizer is not a plain ``miditok.REMI``, or a config
                flag, REMI parameter or vocabulary table is one the encoder does not
                reproduce exactly (the reason names it).
        """
        from miditok import REMI

        if type(tokenizer) is not REMI:
            raise UnsupportedConfig(
                f"only miditok.REMI is covered, got {type(tokenizer).__module__}."
                f"{type(tokenizer).__qualname__}"
            )
        config = tokenizer.config
        for flag in _OFF_FLAGS:
            if getattr(config, flag, False):
                raise UnsupportedConfig(f"config.{flag} is on")
        if tokenizer.is_multi_voc:
            raise UnsupportedConfig("multi-vocabulary tokenizers are not covered")
        if getattr(tokenizer, "_note_on_off", False):
            raise UnsupportedConfig("NoteOn/NoteOff tokenizers are not covered")
        # REMI reads only these three; other keys (from older tokenizer files) are unused.
        params = {key: config.additional_params.get(key) for key in _REMI_PARAMS}
        if params.get("max_bar_embedding") is not None:
            raise UnsupportedConfig("additional_params max_bar_embedding is set")
        tpq = int(config.max_num_pos_per_beat)
        if list(tokenizer.time_signatures) != [(4, 4)] or tokenizer.time_division != tpq:
            raise UnsupportedConfig("only 4/4 bars at config.max_num_pos_per_beat ticks/beat")

        vocab = tokenizer.vocab
        bar_end = bool(params.get("use_bar_end_tokens", False))
        position_ids = [_id(vocab, f"Position_{k}") for k in range(4 * tpq)]
        pitch_tables = [_pitch_table(vocab, "Pitch", config.pitch_range)]
        pitchdrum = bool(config.use_pitchdrum_tokens)
        if pitchdrum:
            pitch_tables.append(_pitch_table(vocab, "PitchDrum", config.drums_pitch_range))

        velocities = None
        if config.use_velocities:
            values = [int(v) for v in tokenizer.velocities]
            velocities = (values, [_id(vocab, f"Velocity_{v}") for v in values])
            if values != sorted(values):
                raise UnsupportedConfig("velocity values are not sorted")

        duration_programs = frozenset(int(p) for p in config.use_note_duration_programs)
        if tpq not in tokenizer._tpb_to_time_array:
            raise UnsupportedConfig(f"no duration table at {tpq} ticks per beat")
        values = [int(v) for v in tokenizer._tpb_to_time_array[tpq]]
        ticks_to_token = tokenizer._tpb_ticks_to_tokens[tpq]
        if not values or values != sorted(values) or values[0] < 1:
            raise UnsupportedConfig("duration table is empty, unsorted or has 0 ticks")
        if duration_programs:
            duration_ids = [_id(vocab, f"Duration_{ticks_to_token[v]}") for v in values]
        else:  # no program has durations: the ids are never used
            duration_ids = [-1] * len(values)

        encoder = _native.RemiEncoder(
            tpq,
            _id(vocab, "Bar_None"),
            _id(vocab, "Bar_End") if bar_end else None,
            bool(params.get("add_trailing_bars", False)),
            position_ids,
            pitch_tables,
            velocities,
            (values, duration_ids),
            bool(config.remove_duplicated_notes),
        )
        return cls(
            tokenizer,
            encoder,
            pitchdrum,
            duration_programs,
            bool(params.get("add_trailing_bars", False)),
        )

    def encode_base(self, score: Score) -> list[np.ndarray]:
        """Base ids (before BPE) of every track MidiTok keeps, as it gives them.

        Equal to ``[np.asarray(s.ids, np.int32) for s in
        tokenizer.encode(score, encode_ids=False)]``: one array per track that still has
        notes after preprocessing, in track order, or a single empty array when no track
        is left. The score is not modified.

        Args:
            score: A ``symusic.Score`` in ticks (any other input goes to MidiTok).

        Returns:
            One int32 array of base ids per kept track.

        Raises:
            Exception: Whatever MidiTok raises for a score it cannot encode (such scores
                are handed to MidiTok).
        """
        from symusic.core import ScoreTick

        if not isinstance(score, ScoreTick):
            return self._miditok(score)
        tpq = int(score.ticks_per_quarter)
        out = []
        for track in score.tracks:
            if track.note_num() == 0:
                continue
            notes = track.notes.numpy()
            program = -1 if track.is_drum else int(track.program)
            try:
                ids = self._encoder.encode_track(
                    notes["time"],
                    notes["duration"],
                    notes["pitch"],
                    notes["velocity"],
                    tpq,
                    1 if track.is_drum and self._pitchdrum else 0,
                    program in self._duration_programs,
                )
            except UnsupportedScore:
                return self._miditok(score)
            if ids is not None:
                out.append(ids)
        if not out:
            if self._trailing_bars:  # MidiTok raises on a score without notes here
                return self._miditok(score)
            return [np.zeros(0, dtype=np.int32)]
        return out

    def _miditok(self, score: Any) -> list[np.ndarray]:
        """MidiTok's own answer (or exception), for what the kernel hands back."""
        self.fallbacks += 1
        copy = getattr(score, "copy", None)
        result = self.tokenizer.encode(copy() if callable(copy) else score, encode_ids=False)
        sequences = result if isinstance(result, list) else [result]
        return [np.asarray(s.ids, dtype=np.int32) for s in sequences]


def _pitch_table(
    vocab: dict[str, int], kind: str, pitch_range: tuple[int, int]
) -> tuple[int, list[int]]:
    """``(low, ids)`` of a pitch range; -1 for a pitch the vocabulary lacks.

    A tokenizer saved before MidiTok 3.0.6 with ``pitch_range`` (21, 109) has no
    ``Pitch_109``: MidiTok raises ``KeyError`` on such a note, so the kernel hands any
    score holding one back to MidiTok, and encodes every other score itself.
    """
    low, high = int(pitch_range[0]), int(pitch_range[1])
    if not 0 <= low <= high <= 127:
        raise UnsupportedConfig(f"{kind} range {pitch_range} is outside 0..127")
    ids = [int(vocab.get(f"{kind}_{p}", -1)) for p in range(low, high + 1)]
    if all(i < 0 for i in ids):
        raise UnsupportedConfig(f"the vocabulary has no {kind} token of {pitch_range}")
    return low, ids
