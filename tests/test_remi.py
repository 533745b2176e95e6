"""The native REMI encoder gives exactly MidiTok's base ids (``encode(encode_ids=False)``).

Every comparison runs MidiTok on a copy of the score (its preprocessing must not leak
into the native run) and checks the per-track id lists are equal, on the real corpora in
../shared/corpora (raw multi-track files, and after varemi's own track and pitch
handling), on hypothesis-generated scores, and on hand-written edge cases. Configurations
the encoder does not cover must raise ``UnsupportedConfig``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from miditok import REMI, MIDILike, TokenizerConfig
from symusic import Note, Score, Tempo, TimeSignature, Track

from varemi._base.errors import UnsupportedConfig, VaremiError
from varemi.music.encoder import EncodeOptions, _normalise_track_pitches
from varemi.music.encoder.remi import NativeREMI
from varemi.music.tokenizer import MAESTRO_CONFIG, load_base_tokenizer, vocab_pitch_range

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
CORPUS_DIRS = ("pop909", "vgmidi/phrases", "miditok_tests")
MUSIC_SUFFIXES = (".mid", ".midi", ".abc")

# --------------------------------------------------------------------------- tokenizers

MAESTRO = MAESTRO_CONFIG
"""Keyword arguments of the Maestro-REMI-bpe20k configuration (varemi.maestro_config)."""

CONFIGS = {
    "wide_beats_32_vel": dict(
        beat_res={(0, 4): 8, (4, 12): 4}, num_velocities=32, pitch_range=(30, 100)
    ),
    "coarse_all_pitches": dict(
        beat_res={(0, 2): 4, (2, 8): 2, (8, 16): 1}, num_velocities=8, pitch_range=(0, 127)
    ),
    "odd_resolution_attribute_controls": dict(
        beat_res={(0, 4): 6, (4, 8): 4},
        num_velocities=5,
        ac_polyphony_bar=True,
        ac_note_density_track=True,
    ),
    "no_velocities_dedup": dict(use_velocities=False, remove_duplicated_notes=True),
    "bar_end_trailing_drums": dict(
        use_bar_end_tokens=True,
        add_trailing_bars=True,
        use_pitchdrum_tokens=True,
        drums_pitch_range=(27, 88),
    ),
    "durations_for_some_programs": dict(
        use_note_duration_programs=[0, 1, 2, 3, 40, -1], num_velocities=127
    ),
}
"""Other covered configurations: overrides of MAESTRO."""


@cache
def tokenizer(name: str) -> REMI:
    """The builtin tokenizer (BPE-trained), or an untrained REMI of a named config."""
    if name == "builtin":
        return load_base_tokenizer("builtin").tokenizer
    return REMI(TokenizerConfig(**{**MAESTRO, **CONFIGS[name]}))


@cache
def native(name: str) -> NativeREMI:
    return NativeREMI.from_tokenizer(tokenizer(name))


ALL_CONFIGS = ("builtin", *CONFIGS)


def miditok_ids(tok: REMI, score: Score) -> list[list[int]]:
    """MidiTok's base ids, per track, on a copy of the score."""
    result = tok.encode(score.copy(), encode_ids=False)
    sequences = result if isinstance(result, list) else [result]
    return [list(s.ids) for s in sequences]


def snapshot(score: Score) -> tuple:
    """Everything of a score the encoders read, as plain values."""
    return (
        score.ticks_per_quarter,
        [
            (t.program, t.is_drum, {k: v.tolist() for k, v in t.notes.numpy().items()})
            for t in score.tracks
        ],
    )


def assert_same(name: str, score: Score, label: str = "") -> None:
    before = snapshot(score)
    try:
        expected = miditok_ids(tokenizer(name), score)
    except Exception as e:  # MidiTok refuses it: the native encoder must raise the same
        with pytest.raises(type(e)):
            native(name).encode_base(score)
        return
    got = native(name).encode_base(score)
    assert all(isinstance(a, np.ndarray) and a.dtype == np.int32 for a in got)
    assert [a.tolist() for a in got] == expected, f"{name} {label}"
    assert snapshot(score) == before, "encode_base modified the score"


# --------------------------------------------------------------------------- corpora


@cache
def corpus_scores(corpus: str) -> tuple[tuple[str, Score], ...]:
    """Every file of a corpus that symusic can read, parsed once."""
    out = []
    for path in sorted((CORPORA / corpus).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in MUSIC_SUFFIXES:
            continue
        try:
            out.append((path.name, Score(path)))
        except Exception:  # damaged files (miditok_tests/MIDIs_corrupted) are not music
            continue
    return tuple(out)


def varemi_preprocessed(score: Score, pitch_range: tuple[int, int]) -> Score:
    """The score as varemi's encode_midi hands it to the tokenizer (merge, clamp)."""
    from miditok.utils import merge_tracks

    score = score.copy()
    score.tracks = [t for t in score.tracks if not t.is_drum]
    if len(score.tracks) > 1:
        merge_tracks(score)
    for track in score.tracks:
        _normalise_track_pitches(track, EncodeOptions(pitch_range=pitch_range))
    return score


@pytest.mark.slow
@pytest.mark.skipif(not CORPORA.is_dir(), reason="../shared/corpora absent")
@pytest.mark.parametrize("mode", ["raw", "varemi"])
@pytest.mark.parametrize("name", ["builtin", "wide_beats_32_vel", "coarse_all_pitches"])
@pytest.mark.parametrize("corpus", CORPUS_DIRS)
def test_corpus_files_equal_miditok(corpus: str, name: str, mode: str) -> None:
    if not (CORPORA / corpus).is_dir():
        pytest.skip(f"{corpus} absent")
    scores = corpus_scores(corpus)
    assert scores, f"no readable file in {corpus}"
    nat = native(name)
    fallbacks = nat.fallbacks
    pitch_range = vocab_pitch_range(tokenizer(name))
    for filename, score in scores:
        if mode == "varemi":
            score = varemi_preprocessed(score, pitch_range)
        assert_same(name, score, filename)
    assert nat.fallbacks == fallbacks, "real files should never need MidiTok"


# --------------------------------------------------------------------------- hypothesis


@st.composite
def scores(draw: st.DrawFn) -> Score:
    """Random scores: any resolution, overlapping, zero-length, duplicate and far notes."""
    tpq = draw(st.integers(24, 960))
    score = Score(tpq)
    horizon = tpq * draw(st.sampled_from([4, 16, 64]))
    for _ in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 40))
        onsets = draw(st.lists(st.integers(0, horizon), min_size=1, max_size=6))
        times = [
            draw(st.one_of(st.sampled_from(onsets), st.integers(0, horizon))) for _ in range(n)
        ]
        if n and draw(st.booleans()):  # a note far past the others
            times[-1] = draw(st.integers(horizon, tpq * 4000))
        if n and draw(st.integers(0, 9)) == 0:  # a negative onset: MidiTok raises
            times[0] = draw(st.integers(-tpq * 8, -1))
        durations = draw(
            st.lists(
                st.one_of(st.just(0), st.integers(0, tpq * 2), st.integers(0, tpq * 40)),
                min_size=n,
                max_size=n,
            )
        )
        pitches = draw(st.lists(st.integers(0, 127), min_size=n, max_size=n))
        velocities = draw(st.lists(st.integers(1, 127), min_size=n, max_size=n))
        if n and draw(st.booleans()):  # exact duplicates
            k = draw(st.integers(0, n - 1))
            times.append(times[k])
            durations.append(durations[k])
            pitches.append(pitches[k])
            velocities.append(velocities[k])
        track = Track(program=draw(st.integers(0, 127)), is_drum=draw(st.booleans()), name="t")
        track.notes = Note.from_numpy(
            np.array(times, dtype=np.int32),
            np.array(durations, dtype=np.int32),
            np.array(pitches, dtype=np.int8),
            np.array(velocities, dtype=np.int8),
        )
        score.tracks.append(track)
    for _ in range(draw(st.integers(0, 3))):
        score.tempos.append(Tempo(draw(st.integers(0, horizon)), draw(st.floats(30, 240))))
    for _ in range(draw(st.integers(0, 3))):
        numerator = draw(st.integers(1, 12))
        denominator = draw(st.sampled_from([2, 4, 8]))
        score.time_signatures.append(
            TimeSignature(draw(st.integers(0, horizon)), numerator, denominator)
        )
    return score


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(score=scores(), name=st.sampled_from(ALL_CONFIGS))
def test_random_scores_equal_miditok(score: Score, name: str) -> None:
    assert_same(name, score)


@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=30),
    data=st.data(),
    name=st.sampled_from(ALL_CONFIGS),
)
def test_scores_without_resampling_equal_miditok(times: list[int], data, name: str) -> None:
    tpq = tokenizer(name).config.max_num_pos_per_beat
    n = len(times)
    durations = data.draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
    pitches = data.draw(st.lists(st.integers(0, 127), min_size=n, max_size=n))
    velocities = data.draw(st.lists(st.integers(0, 127), min_size=n, max_size=n))
    score = Score(tpq)
    track = Track(program=0, is_drum=data.draw(st.booleans()))
    track.notes = Note.from_numpy(
        np.array(times, dtype=np.int32),
        np.array(durations, dtype=np.int32),
        np.array(pitches, dtype=np.int8),
        np.array(velocities, dtype=np.int8),
    )
    score.tracks.append(track)
    assert_same(name, score)


# --------------------------------------------------------------------------- edge cases


def one_track_score(tpq: int, notes: list[tuple[int, int, int, int]]) -> Score:
    score = Score(tpq)
    track = Track(program=0)
    for time, duration, pitch, velocity in notes:
        track.notes.append(Note(time, duration, pitch, velocity))
    score.tracks.append(track)
    return score


@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize(
    "score",
    [
        Score(480),  # no track at all
        one_track_score(480, []),  # one empty track
        one_track_score(480, [(0, 480, 10, 80), (10, 5, 127, 80)]),  # all out of range
        one_track_score(480, [(480 * 4 * 50, 0, 60, 1)]),  # one note after 50 empty bars
        one_track_score(8, [(0, 0, 60, 0), (0, 0, 60, 0), (3, -4, 61, 127)]),
        one_track_score(7, [(3, 1, 60, 64), (1, 1, 62, 64), (3, 7, 58, 64)]),
    ],
    ids=["no_track", "empty_track", "out_of_range", "far", "zero_and_negative", "tpq_7"],
)
def test_edge_cases_equal_miditok(name: str, score: Score) -> None:
    assert_same(name, score)


def test_negative_onset_raises_what_miditok_raises() -> None:
    score = one_track_score(480, [(-480, 480, 60, 80), (0, 480, 62, 80)])
    with pytest.raises(KeyError) as expected:
        tokenizer("builtin").encode(score.copy(), encode_ids=False)
    nat = NativeREMI.from_tokenizer(tokenizer("builtin"))
    with pytest.raises(KeyError) as got:
        nat.encode_base(score)
    assert str(got.value) == str(expected.value)
    assert nat.fallbacks == 1


def test_resampling_overflow_raises_what_miditok_raises() -> None:
    score = one_track_score(1, [(2**31 - 8, 1, 60, 80)])
    with pytest.raises(OverflowError):
        tokenizer("builtin").encode(score.copy(), encode_ids=False)
    with pytest.raises(OverflowError):
        native("builtin").encode_base(score)


def test_builtin_maestro_files_need_no_fallback_and_are_int32() -> None:
    score = one_track_score(480, [(0, 480, 60, 80), (960, 240, 64, 100)])
    nat = NativeREMI.from_tokenizer(tokenizer("builtin"))
    ids = nat.encode_base(score)
    assert nat.fallbacks == 0
    assert [a.dtype for a in ids] == [np.dtype(np.int32)]
    assert ids[0].tolist() == miditok_ids(tokenizer("builtin"), score)[0]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (dict(use_chords=True), "use_chords"),
        (dict(use_tempos=True), "use_tempos"),
        (dict(use_programs=True), "use_programs"),
        (dict(use_time_signatures=True), "use_time_signatures"),
        (dict(use_rests=True), "use_rests"),
        (dict(use_key_signatures=True), "use_key_signatures"),
        (dict(use_sustain_pedals=True), "use_sustain_pedals"),
        (dict(use_pitch_bends=True), "use_pitch_bends"),
        (dict(use_control_changes=True), "use_control_changes"),
        (dict(use_pitch_intervals=True), "use_pitch_intervals"),
        (dict(max_bar_embedding=300), "max_bar_embedding"),
    ],
)
def test_uncovered_configs_are_refused(overrides: dict, reason: str) -> None:
    tok = REMI(TokenizerConfig(**{**MAESTRO, **overrides}))
    with pytest.raises(UnsupportedConfig, match=reason) as info:
        NativeREMI.from_tokenizer(tok)
    assert isinstance(info.value, VaremiError)
    assert reason in info.value.reason


def test_other_tokenizers_are_refused() -> None:
    with pytest.raises(UnsupportedConfig, match="REMI"):
        NativeREMI.from_tokenizer(MIDILike(TokenizerConfig(**MAESTRO)))


def test_vocabulary_without_a_pitch_of_the_range() -> None:
    # The pre-3.0.6 tokenizer files: pitch_range (21, 109) but no Pitch_109 token.
    tok = REMI(TokenizerConfig(**MAESTRO))
    tok.config.pitch_range = (21, 109)
    nat = NativeREMI.from_tokenizer(tok)
    fine = one_track_score(480, [(0, 480, 108, 80), (480, 480, 110, 80)])
    assert [a.tolist() for a in nat.encode_base(fine)] == miditok_ids(tok, fine)
    assert nat.fallbacks == 0
    bad = one_track_score(480, [(0, 480, 109, 80)])
    with pytest.raises(KeyError, match="Pitch_109"):
        miditok_ids(tok, bad)
    with pytest.raises(KeyError, match="Pitch_109"):
        nat.encode_base(bad)
    assert nat.fallbacks == 1
