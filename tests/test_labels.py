"""The heuristic labeller, the labels CSV reader and the MIDI file walk."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from symusic import Note, Pedal, Score, Tempo, Track

import varemi.labelling.heuristic
from varemi._base.errors import VaremiError
from varemi.core.label_features import FEATURE_NAMES
from varemi.labelling.heuristic import (
    LABEL_COLUMNS,
    LABEL_FEATURES,
    LabelError,
    LabelParameterError,
    _label_one,
    extract_features,
    label_features,
    label_file,
    label_folder,
)
from varemi.labelling.label_csv import LabelsCSVError, read_labels_csv, write_labels_csv
from varemi.music.files import list_midi_files

REPO = Path(__file__).resolve().parents[1]
VGMIDI = REPO.parent / "shared" / "corpora" / "vgmidi"

C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]
C_MINOR_SCALE = [60, 62, 63, 65, 67, 68, 70, 72]
C_MAJOR_CHORDS = [(48, 52, 55), (53, 57, 60), (55, 59, 62), (48, 52, 55)]  # I IV V I
C_MINOR_CHORDS = [(48, 51, 55), (53, 56, 60), (55, 59, 62), (48, 51, 55)]  # i iv V i


# --------------------------------------------------------------------------- helpers
def make_score(
    notes: list[tuple[int, int, int, int]],
    bpm: float = 120.0,
    drums: list[tuple[int, int, int, int]] | None = None,
) -> Score:
    """A score at 480 ticks per quarter from (time, duration, pitch, velocity) tuples."""
    score = Score(480)
    score.tempos.append(Tempo(0, bpm))
    track = Track("piano", 0, False)
    for time, duration, pitch, velocity in notes:
        track.notes.append(Note(time, duration, pitch, velocity))
    score.tracks.append(track)
    if drums:
        kit = Track("drums", 0, True)
        for time, duration, pitch, velocity in drums:
            kit.notes.append(Note(time, duration, pitch, velocity))
        score.tracks.append(kit)
    return score


def piece(scale: list[int], chords: list[tuple[int, ...]], step: int, velocity: int, bars: int = 4):
    """A melody on ``scale`` every ``step`` ticks over block chords, one chord a bar."""
    notes = []
    bar = 4 * 480
    for b in range(bars):
        chord = chords[b % len(chords)]
        notes += [(b * bar, bar, p, velocity) for p in chord]
        for i, t in enumerate(range(b * bar, (b + 1) * bar, step)):
            notes.append((t, step, scale[(b * 3 + i) % len(scale)], velocity))
    return notes


def labels_of(score: Score) -> tuple[float, float]:
    return label_features(extract_features(score))


def write(path: Path, score: Score) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small corpus: a few good pieces, nested, plus an empty and a corrupt file."""
    root = tmp_path / "midi"
    write(root / "fast.mid", make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 120, 110), 140))
    write(root / "slow.mid", make_score(piece(C_MINOR_SCALE, C_MINOR_CHORDS, 960, 40), 60))
    write(root / "sub" / "major.MID", make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 240, 80)))
    write(root / "sub" / "minor.midi", make_score(piece(C_MINOR_SCALE, C_MINOR_CHORDS, 240, 80)))
    write(root / "empty.mid", Score(480))
    (root / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02garbage")
    (root / "notes.txt").write_text("not a MIDI file")
    return root


# --------------------------------------------------------------------------- features
def test_fast_loud_piece_has_higher_arousal_than_slow_soft_one():
    _, fast = labels_of(make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 120, 110), 140))
    _, slow = labels_of(make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 960, 40), 60))
    assert fast > 0.5 > -0.5 > slow


def test_onset_rate_in_seconds_carries_arousal_under_a_constant_tempo_map():
    notes = piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 240, 80)
    _, quick = labels_of(make_score(notes, bpm=180))
    _, same = labels_of(make_score(notes, bpm=120))
    _, slow = labels_of(make_score(notes, bpm=60))
    assert quick > same > slow
    # The same music written in half the ticks at half the tempo: only the tempo differs.
    halved = [(t // 2, d // 2, p, v) for t, d, p, v in notes]
    as_written = extract_features(make_score(notes, bpm=120))
    rewritten = extract_features(make_score(halved, bpm=60))
    assert rewritten.pop("tempo_bpm") == pytest.approx(as_written.pop("tempo_bpm") / 2, rel=1e-4)
    assert rewritten == pytest.approx(as_written)


def test_major_piece_has_higher_valence_than_minor_equivalent():
    major, _ = labels_of(make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 240, 80)))
    minor, _ = labels_of(make_score(piece(C_MINOR_SCALE, C_MINOR_CHORDS, 240, 80)))
    # The minor piece is as tonal, as high and as legato as the major one: only its
    # harmony (a minor key, minor triads) speaks against it.
    assert major > 0.5 > 0.0 > -0.2 > minor


def test_mode_and_triads_detect_major_and_minor():
    major = extract_features(make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 240, 80)))
    minor = extract_features(make_score(piece(C_MINOR_SCALE, C_MINOR_CHORDS, 240, 80)))
    assert major["mode"] > 0 > minor["mode"]
    assert major["triad_balance"] > 0.5
    assert minor["triad_balance"] < 0  # V (G major) is a major triad in C minor too


def test_features_in_seconds_and_tempo():
    # 8 quarter notes at 120 bpm, one at a time: 4 s, 2 onsets a second.
    f = extract_features(make_score([(i * 480, 480, 60, 64) for i in range(8)]))
    assert list(f) == [*FEATURE_NAMES, "drum_density"] == list(LABEL_FEATURES)
    assert f["duration_s"] == pytest.approx(4.0)
    assert f["onset_rate"] == pytest.approx(2.0)
    assert f["ioi_median"] == pytest.approx(0.5)
    assert f["note_duration"] == pytest.approx(0.5)
    assert f["articulation"] == pytest.approx(1.0)
    assert f["tempo_bpm"] == pytest.approx(120.0, rel=1e-4)
    assert f["velocity_mean"] == 64.0
    assert f["velocity_range"] == 0.0


def test_velocity_range_gates_loudness():
    notes = [(i * 240, 240, 60 + i % 5, 64) for i in range(32)]
    louder = [(t, d, p, 127) for t, d, p, _ in notes]
    varied = [(t, d, p, 50 + 20 * (i % 2)) for i, (t, d, p, _) in enumerate(notes)]
    assert extract_features(make_score(varied))["velocity_range"] == 20.0
    # One velocity throughout (an editor's default): how loud it is changes nothing.
    assert labels_of(make_score(notes)) == labels_of(make_score(louder))
    _, soft = labels_of(make_score(varied))
    _, loud = labels_of(make_score([(t, d, p, v + 50) for t, d, p, v in varied]))
    assert loud > soft


CENTRES = {
    "note_density": 7.0,
    "ioi_median": 0.25,
    "log_duration": -1.0,
    "velocity_mean": 80.0,
    "velocity_range": 40.0,
    "tempo_bpm": 100.0,
    "articulation": 1.5,
    "triad_balance": 0.05,
    "local_major": 0.725,
    "key_clarity": 0.85,
    "pitch_mean": 60.0,
    "drum_density": 4.0,
}


def test_formula_is_one_tanh_of_unbounded_weighted_evidence():
    assert label_features(CENTRES) == (0.0, 0.0)
    # drums: a doubling of the drum onsets is one spread; no drums (0) is neutral
    assert label_features(CENTRES | {"drum_density": 8.0})[1] == pytest.approx(math.tanh(0.5))
    assert label_features(CENTRES | {"drum_density": 0.0}) == (0.0, 0.0)
    # One spread up on one feature moves the evidence by exactly that feature's weight.
    v, a = label_features(CENTRES | {"note_density": 14.0, "local_major": 0.825})
    assert (v, a) == (pytest.approx(math.tanh(0.4 * 1.0)), pytest.approx(math.tanh(0.5 * 1.0)))
    v, _ = label_features(CENTRES | {"triad_balance": 0.45, "key_clarity": 0.75})
    assert v == pytest.approx(math.tanh(0.4 * (0.5 - 0.25)))
    _, a = label_features(CENTRES | {"ioi_median": 0.125, "velocity_mean": 60.0})
    assert a == pytest.approx(math.tanh(0.5 * (1.0 - 0.5)))
    v, a = label_features(CENTRES | {"log_duration": -3.0})  # notes a quarter as long
    assert (v, a) == (pytest.approx(math.tanh(0.4 * 1.0)), pytest.approx(math.tanh(0.5 * 1.0)))
    v, a = label_features(CENTRES | {"articulation": 1.0})  # detached: brighter, livelier
    assert (v, a) == (pytest.approx(math.tanh(0.4 * 0.5)), pytest.approx(math.tanh(0.5 * 0.25)))
    # Notes all of one velocity say nothing of loudness: the velocity term counts as 0.
    _, loud = label_features(CENTRES | {"velocity_mean": 120.0})
    _, flat = label_features(CENTRES | {"velocity_mean": 120.0, "velocity_range": 0.0})
    assert (loud, flat) == (pytest.approx(math.tanh(0.5 * 1.0)), 0.0)
    # Unsaturated: four spreads of density is not yet the top bin, eight spreads are.
    _, a4 = label_features(CENTRES | {"note_density": 7.0 * 2**4})
    _, a8 = label_features(CENTRES | {"note_density": 7.0 * 2**8})
    assert a4 == pytest.approx(math.tanh(2.0)) and a4 < 0.97 < a8


def test_sustain_pedal_extends_the_sounding_duration():
    notes = [(i * 960, 240, 60 + i % 3, 64) for i in range(4)]  # 0.25 s notes every 1 s
    dry = extract_features(make_score(notes))
    pedalled = make_score(notes)
    for i in range(4):  # the pedal held from each onset for 0.75 s
        pedalled.tracks[0].pedals.append(Pedal(i * 960, 720))
    wet = extract_features(pedalled)
    assert dry["log_duration"] == pytest.approx(-2.0)
    assert dry["articulation"] == pytest.approx(0.25)
    assert wet["log_duration"] == pytest.approx(math.log2(0.75))
    assert wet["articulation"] == pytest.approx(0.75)
    assert wet["note_duration"] == dry["note_duration"] == pytest.approx(0.25)  # key up


def test_pedal_lifted_before_the_release_changes_nothing():
    notes = [(0, 480, 60, 64), (960, 480, 62, 64)]
    score = make_score(notes)
    score.tracks[0].pedals.append(Pedal(0, 240))  # up at 0.25 s, the key at 0.5 s
    assert extract_features(score) == extract_features(make_score(notes))


def test_log_duration_is_clipped():
    f = extract_features(make_score([(0, 1, 60, 64), (480, 480 * 40, 62, 64)]))  # 1 tick, 20 s
    assert f["log_duration"] == pytest.approx((math.log2(1 / 32) + math.log2(8.0)) / 2)


def test_local_mode_weighs_each_segment_key():
    bar = 4 * 480  # 2 s at 120 bpm: a segment (8 s) is 4 bars
    major = piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 240, 80, bars=4)
    minor = piece(C_MINOR_SCALE, C_MINOR_CHORDS, 240, 80, bars=4)
    both = major + [(t + 4 * bar, d, p, v) for t, d, p, v in minor]
    f = extract_features(make_score(both))
    mode_major = extract_features(make_score(major))["mode"]
    mode_minor = extract_features(make_score(minor))["mode"]
    assert mode_major > 0 > mode_minor
    assert f["local_mode"] == pytest.approx((mode_major + mode_minor) / 2)
    assert f["local_mode"] != pytest.approx(f["mode"])
    # local_major: how well each segment fits its best major key, averaged the same way.
    fit_major = extract_features(make_score(major))["major_corr"]
    fit_minor = extract_features(make_score(minor))["major_corr"]
    assert fit_major > 0.9 > fit_minor
    assert f["local_major"] == pytest.approx((fit_major + fit_minor) / 2)
    assert f["local_major"] != pytest.approx(f["major_corr"])


def test_triad_balance_counts_onsets_with_a_prior():
    chords = [(i * 480, 480, p, 64) for i in range(5) for p in (60, 64, 67)]  # 5 C major
    assert extract_features(make_score(chords))["triad_balance"] == pytest.approx(5 / 15)
    minor = [(i * 480, 480, p, 64) for i in range(5, 7) for p in (57, 60, 64)]  # 2 A minor
    assert extract_features(make_score(chords + minor))["triad_balance"] == pytest.approx(3 / 17)


def test_tempo_is_weighted_by_time_over_the_notes():
    score = make_score([(i * 480, 480, 60, 64) for i in range(8)], bpm=60)  # 4 beats at 60
    score.tempos.append(Tempo(4 * 480, 240.0))  # then 4 beats at 240: 4 s, then 1 s
    f = extract_features(score)
    assert f["tempo_bpm"] == pytest.approx((4 * 60 + 1 * 240) / 5, rel=1e-4)


def test_drum_tracks_count_only_through_their_onset_density():
    notes = piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 480, 60)  # 4 bars at 120 bpm: 8 s
    drums = [(t, 60, 42, 127) for t in range(0, 4 * 4 * 480, 60)]  # sixteenths: 16/s
    with_drums = extract_features(make_score(notes, drums=drums))
    without = extract_features(make_score(notes))
    assert without["drum_density"] == 0.0
    assert with_drums.pop("drum_density") == pytest.approx(16.0, rel=1e-3)
    without.pop("drum_density")
    assert with_drums == without  # every other feature ignores the drums
    with pytest.raises(LabelError) as err:
        extract_features(make_score([], drums=drums))
    assert err.value.reason == "no_notes"


def test_busy_drums_raise_arousal_and_a_file_without_drums_is_neutral():
    notes = piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 480, 60)  # 8 s
    kit = [42, 36]  # a hi-hat and a kick on one onset: one drum onset

    def drums(step: int) -> list[tuple[int, int, int, int]]:
        return [(t, 60, p, 100) for t in range(0, 4 * 4 * 480, step) for p in kit]

    v0, a0 = labels_of(make_score(notes))
    v4, a4 = labels_of(make_score(notes, drums=drums(240)))  # eighths at 120 bpm: 4/s
    v16, a16 = labels_of(make_score(notes, drums=drums(60)))  # sixteenths: 16/s
    _, a2 = labels_of(make_score(notes, drums=drums(480)))  # a hit a beat: 2/s
    assert extract_features(make_score(notes, drums=drums(240)))["drum_density"] == 4.0
    assert (v4, a4) == pytest.approx((v0, a0))  # the centre: as if there were no drums
    assert a16 > a4 > a2 and v16 == v4 == v0


def test_empty_score_raises_label_error():
    with pytest.raises(LabelError) as err:
        extract_features(Score(480))
    assert err.value.reason == "no_notes"


note_strategy = st.tuples(
    st.integers(0, 20_000), st.integers(0, 5_000), st.integers(0, 127), st.integers(1, 127)
)


@settings(max_examples=60, deadline=None)
@given(
    notes=st.lists(note_strategy, min_size=1, max_size=40),
    bpm=st.floats(10, 400),
)
def test_labels_stay_in_range_and_features_finite(notes, bpm):
    features = extract_features(make_score(notes, bpm=bpm))
    assert all(math.isfinite(v) for v in features.values())
    valence, arousal = label_features(features)
    assert -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0


# --------------------------------------------------------------------------- files
def test_label_file_rejects(tmp_path: Path):
    empty = write(tmp_path / "empty.mid", Score(480))
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"\x00\x01 not midi at all")
    for path, reason in [
        (empty, "no_notes"),
        (corrupt, "unreadable"),
        (tmp_path / "missing.mid", "unreadable"),
    ]:
        with pytest.raises(LabelError) as err:
            label_file(path)
        assert err.value.reason == reason
    big = write(tmp_path / "big.mid", make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 60, 80)))
    with pytest.raises(LabelError, match="too_large") as err:
        label_file(big, max_file_mb=1e-4)
    assert "--max-file-mb 0.0001" in err.value.detail  # the same reject detail as build's


def test_label_file_reads_mixed_case_extensions_as_build_does(tmp_path):
    # symusic goes by the extension: Score("x.Mid") raises "Unknown file format".
    lower = write(tmp_path / "a.mid", make_score(piece(C_MAJOR_SCALE, C_MAJOR_CHORDS, 60, 80)))
    want = label_file(lower)
    for name in ("b.Mid", "c.MIDI", "d.Midi"):
        (tmp_path / name).write_bytes(lower.read_bytes())
        got = label_file(tmp_path / name)
        assert (got.valence, got.arousal, got.features) == (
            want.valence,
            want.arousal,
            want.features,
        )


def test_label_folder_rows_rejects_and_columns(corpus: Path):
    df, rejects = label_folder(corpus, workers=1, progress=False)
    assert list(df.columns) == list(LABEL_COLUMNS)
    assert df["filename"].tolist() == ["fast.mid", "slow.mid", "sub/major.MID", "sub/minor.midi"]
    assert all(df[c].dtype == np.float64 for c in LABEL_COLUMNS[1:])
    assert rejects == [
        ("corrupt.mid", "unreadable", rejects[0][2]),
        ("empty.mid", "no_notes", "no non-drum notes"),
    ]
    row = df.set_index("filename")
    assert row.loc["fast.mid", "arousal"] > row.loc["slow.mid", "arousal"]
    assert row.loc["sub/major.MID", "valence"] > row.loc["sub/minor.midi", "valence"]
    assert df[["valence", "arousal"]].abs().le(1.0).all().all()


def test_label_folder_is_independent_of_workers(corpus: Path):
    one, rejects_one = label_folder(corpus, workers=1, progress=False, jitter=0.2, seed=3)
    two, rejects_two = label_folder(corpus, workers=2, progress=False, jitter=0.2, seed=3)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert rejects_one == rejects_two


def _crash_on_fast(root, name, *rest):
    """Stands in for the worker function: dies, as a native crash would, on fast.mid."""
    if name == "fast.mid":
        os._exit(3)
    return _label_one(root, name, *rest)


def test_label_folder_survives_a_dying_worker(corpus: Path, monkeypatch):
    expected, _ = label_folder(corpus, workers=1, progress=False)
    monkeypatch.setattr(varemi.labelling.heuristic, "_label_one", _crash_on_fast)
    df, rejects = label_folder(corpus, workers=2, progress=False)
    from varemi._base.workers import CRASHED_DETAIL

    assert ("fast.mid", "crashed", CRASHED_DETAIL) in rejects
    pd.testing.assert_frame_equal(
        df, expected[expected.filename != "fast.mid"].reset_index(drop=True), check_exact=True
    )


def test_label_folder_given_files_and_missing_ones(corpus: Path):
    df, rejects = label_folder(
        corpus, files=["sub/major.MID", "fast.mid", "nope.mid"], workers=1, progress=False
    )
    assert df["filename"].tolist() == ["fast.mid", "sub/major.MID"]
    assert [r[:2] for r in rejects] == [("nope.mid", "unreadable")]


def test_label_folder_empty_and_missing_folder(tmp_path: Path):
    df, rejects = label_folder(tmp_path, workers=1, progress=False)
    assert list(df.columns) == list(LABEL_COLUMNS) and len(df) == 0 and rejects == []
    with pytest.raises(FileNotFoundError):
        label_folder(tmp_path / "absent", workers=1, progress=False)


def test_jitter_is_off_by_default_and_deterministic(corpus: Path):
    plain = label_file(corpus / "fast.mid")
    assert label_file(corpus / "fast.mid", seed=99) == plain  # no jitter: seed is irrelevant
    a = label_file(corpus / "fast.mid", jitter=0.1, seed=1, name="fast.mid")
    b = label_file(corpus / "fast.mid", jitter=0.1, seed=1, name="fast.mid")
    c = label_file(corpus / "fast.mid", jitter=0.1, seed=2, name="fast.mid")
    d = label_file(corpus / "fast.mid", jitter=0.1, seed=1, name="other/fast.mid")
    assert a == b
    assert (a.valence, a.arousal) != (plain.valence, plain.arousal)
    assert (a.valence, a.arousal) != (c.valence, c.arousal)
    assert (a.valence, a.arousal) != (d.valence, d.arousal)
    wild = label_file(corpus / "fast.mid", jitter=100.0, seed=1)
    assert wild.valence in (-1.0, 1.0) and wild.arousal in (-1.0, 1.0)


def test_jitter_of_a_file_does_not_depend_on_the_other_files(corpus: Path):
    full, _ = label_folder(corpus, workers=1, progress=False, jitter=0.3, seed=5)
    alone, _ = label_folder(
        corpus, files=["slow.mid"], workers=1, progress=False, jitter=0.3, seed=5
    )
    pd.testing.assert_frame_equal(
        full[full.filename == "slow.mid"].reset_index(drop=True), alone, check_exact=True
    )


@pytest.mark.parametrize(
    "kwargs", [{"jitter": -0.1}, {"jitter": float("nan")}, {"seed": -1}, {"workers": 0}]
)
def test_bad_parameters_are_refused(corpus: Path, kwargs):
    with pytest.raises(LabelParameterError):
        label_folder(corpus, progress=False, **({"workers": 1} | kwargs))


# --------------------------------------------------------------------------- CSV out
def test_write_labels_csv_round_trips_floats_exactly(tmp_path: Path):
    awkward = [0.1 + 0.2, 1 / 3, -1e-17, np.nextafter(1.0, 0.0), -0.9999999999999999, 0.0]
    df = pd.DataFrame(
        {"filename": [f"f{i}.mid" for i in range(6)], "valence": awkward, "arousal": awkward[::-1]}
    )
    path = tmp_path / "labels.csv"
    write_labels_csv(df, path)
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    labels, rejects, unmatched = read_labels_csv(path, df["filename"].tolist())
    assert rejects == [] and unmatched == []
    assert labels == {
        f: (v, a) for f, v, a in zip(df.filename, df.valence, df.arousal, strict=True)
    }
    assert not list(tmp_path.glob(".*.tmp"))


def test_label_folder_output_reads_back_through_read_labels_csv(corpus: Path, tmp_path: Path):
    df, _ = label_folder(corpus, workers=1, progress=False)
    write_labels_csv(df, tmp_path / "labels.csv")
    labels, rejects, unmatched = read_labels_csv(tmp_path / "labels.csv", df.filename.tolist())
    assert rejects == [] and unmatched == []
    assert labels == {r.filename: (r.valence, r.arousal) for r in df.itertuples()}


# --------------------------------------------------------------------------- CSV in
def csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_labels_csv_matches_path_then_basename_then_stem(tmp_path: Path):
    files = ["a/x.mid", "b/x.mid", "c/y.mid", "d/w.mid", "z.midi", "q/r.mid"]
    path = csv_file(
        tmp_path,
        "Filename,VALENCE,Arousal,comment\n"
        "a/x.mid,0.1,0.1,exact path\n"
        "x.mid,0.2,0.2,basename\n"
        "y,0.3,0.3,stem\n"
        "w.mid,0.4,0.4,basename wins over stem\n"
        "w,0.5,0.5,shadowed\n"
        "z.midi,-1,1,\n"
        "ghost.mid,0,0,no such file\n",
    )
    labels, rejects, unmatched = read_labels_csv(path, files)
    assert labels == {
        "a/x.mid": (0.1, 0.1),
        "b/x.mid": (0.2, 0.2),
        "c/y.mid": (0.3, 0.3),
        "d/w.mid": (0.4, 0.4),
        "z.midi": (-1.0, 1.0),
    }
    assert rejects == [("q/r.mid", "unlabelled", "no row in the labels CSV")]
    assert unmatched == ["w", "ghost.mid"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1.5", "-1.0001", "abc", ""])
def test_read_labels_csv_rejects_bad_values(tmp_path: Path, value: str):
    path = csv_file(tmp_path, f"filename,valence,arousal\nbad.mid,0.5,{value}\ngood.mid,1,-1\n")
    labels, rejects, _ = read_labels_csv(path, ["bad.mid", "good.mid"])
    assert labels == {"good.mid": (1.0, -1.0)}
    assert [r[:2] for r in rejects] == [("bad.mid", "bad_label")]


def test_read_labels_csv_short_row_is_a_bad_label(tmp_path: Path):
    path = csv_file(tmp_path, "filename,valence,arousal\nshort.mid,0.5\n")
    labels, rejects, _ = read_labels_csv(path, ["short.mid"])
    assert labels == {} and [r[:2] for r in rejects] == [("short.mid", "bad_label")]


def test_read_labels_csv_duplicates(tmp_path: Path):
    path = csv_file(
        tmp_path,
        "filename,valence,arousal\n"
        "same.mid,0.5,0.5\nsame.mid,0.50,5e-1\n"
        "diff.mid,0.5,0.5\ndiff.mid,0.5,0.6\n",
    )
    labels, rejects, unmatched = read_labels_csv(path, ["diff.mid", "same.mid"])
    assert labels == {"same.mid": (0.5, 0.5)}
    assert rejects == [("diff.mid", "bad_label", "conflicting duplicate rows for 'diff.mid'")]
    assert unmatched == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("filename,valence\na.mid,0.1\n", "arousal"),
        ("name,valence,arousal\na.mid,0.1,0.1\n", "filename"),
        ("filename,valence,arousal,Valence\na.mid,0.1,0.1,0.2\n", "more than one"),
        ("", "empty"),
    ],
)
def test_read_labels_csv_refuses_bad_headers(tmp_path: Path, text: str, message: str):
    with pytest.raises(LabelsCSVError, match=message):
        read_labels_csv(csv_file(tmp_path, text), ["a.mid"])


def test_read_labels_csv_missing_or_unreadable_file(tmp_path: Path):
    with pytest.raises(LabelsCSVError, match="not found") as err:
        read_labels_csv(tmp_path / "absent.csv", [])
    assert isinstance(err.value, VaremiError)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"filename,valence,arousal\n\xff\xfe\x00\x81,1,1\n")
    with pytest.raises(LabelsCSVError, match="unreadable"):
        read_labels_csv(binary, [])
    with pytest.raises(LabelsCSVError):
        read_labels_csv(tmp_path, [])  # a folder


def test_read_labels_csv_accepts_bom_and_crlf(tmp_path: Path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfFilename,Valence,Arousal\r\nsong.mid,0.25,-0.75\r\n")
    labels, rejects, unmatched = read_labels_csv(path, ["dir/song.mid"])
    assert labels == {"dir/song.mid": (0.25, -0.75)} and rejects == [] and unmatched == []


# --------------------------------------------------------------------------- walk
def test_list_midi_files_extensions_nesting_and_order(tmp_path: Path):
    for name in ["b.mid", "B.MID", "a.Midi", "a/b.mid", "a/c/d.MiD", "x.txt", "y.mid.bak", "z.kar"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.mid").mkdir()  # a folder named like a MIDI file is walked, not listed
    (tmp_path / "folder.mid" / "in.mid").write_bytes(b"")
    expected = ["B.MID", "a.Midi", "a/b.mid", "a/c/d.MiD", "b.mid", "folder.mid/in.mid"]
    assert list_midi_files(tmp_path) == expected == sorted(expected)
    assert list_midi_files(str(tmp_path)) == expected


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_list_midi_files_survives_symlink_loops(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "song.mid").write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a/b/loop -> a
    os.symlink(tmp_path, tmp_path / "a" / "root")  # a/root -> the root itself
    os.symlink(tmp_path / "a" / "b", tmp_path / "z_link")  # a second way into a/b
    assert list_midi_files(tmp_path) == ["a/b/song.mid"]


def test_list_midi_files_follows_directory_symlinks(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.mid").write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked")
    assert list_midi_files(root) == ["linked/far.mid"]


def test_list_midi_files_bad_root(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        list_midi_files(tmp_path / "absent")
    (tmp_path / "file.mid").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        list_midi_files(tmp_path / "file.mid")


# --------------------------------------------------------------------------- real corpus
@pytest.mark.slow
@pytest.mark.skipif(not (VGMIDI / "human_labels.csv").is_file(), reason="../shared absent")
def test_vgmidi_auc_floors():
    spec = importlib.util.spec_from_file_location("label_auc", REPO / "scripts" / "label_auc.py")
    label_auc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(label_auc)
    assert label_auc.roc_auc([1, 2, 2, 3], [0, 0, 1, 1]) == 0.875
    predicted, rejects = label_folder(VGMIDI / "phrases", workers=2, progress=False)
    assert rejects == []
    result = label_auc.label_aucs(predicted, pd.read_csv(VGMIDI / "human_labels.csv"))
    assert result["files"] == 204
    assert result["valence"] >= 0.85
    assert result["arousal"] >= 0.9


# --------------------------------------------------------------------------- label range
def test_read_labels_csv_maps_a_label_range_linearly(tmp_path: Path):
    from varemi.labelling.label_csv import read_labels_csv

    csv_path = tmp_path / "l.csv"
    csv_path.write_text(
        "filename,valence,arousal\na.mid,1,9\nb.mid,5,3\nc.mid,9.5,5\nd.mid,0,5\n",
        encoding="utf-8",
    )
    table, rejects, _ = read_labels_csv(csv_path, ["a.mid", "b.mid", "c.mid", "d.mid"], (1, 9))
    assert table == {"a.mid": (-1.0, 1.0), "b.mid": (0.0, -0.5)}
    assert [(r[0], r[1]) for r in rejects] == [("c.mid", "bad_label"), ("d.mid", "bad_label")]
    assert "not finite in [1, 9]" in rejects[0][2]
    # Spotify-style 0..1 valence: 0.25 is a quarter of the way up.
    csv_path.write_text("filename,valence,arousal\na.mid,0.25,1\n", encoding="utf-8")
    assert read_labels_csv(csv_path, ["a.mid"], (0, 1))[0] == {"a.mid": (-0.5, 1.0)}
    # Without a range, 5 is out of [-1, 1].
    assert read_labels_csv(csv_path, ["a.mid"])[0] == {"a.mid": (0.25, 1.0)}


@pytest.mark.parametrize(
    "bad", [(1, 1), (9, 1), (float("nan"), 1), (0, float("inf")), ("a", 1), (1,)]
)
def test_bad_label_ranges_are_refused(tmp_path: Path, bad):
    from varemi.labelling.label_csv import LabelRangeError, check_label_range, read_labels_csv

    with pytest.raises(LabelRangeError, match="--label-range"):
        check_label_range(bad)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("filename,valence,arousal\n", encoding="utf-8")
    with pytest.raises(LabelRangeError):
        read_labels_csv(csv_path, [], bad)


# --------------------------------------------------------------------------- issue 18 probes
def test_read_labels_csv_matches_dot_slash_and_absolute_paths_under_the_root(tmp_path: Path):
    root = tmp_path / "midi"
    files = ["001.mid", "sub/002.mid", "sub/003.mid"]
    path = csv_file(
        tmp_path,
        "filename,valence,arousal\n"
        "./001.mid,0.5,-0.5\n"
        f"{root / 'sub' / '002.mid'},-1,1\n"
        "./sub/../sub/003.mid,1,1\n"
        f"{tmp_path / 'elsewhere' / '004.mid'},0,0\n",
    )
    labels, rejects, unmatched = read_labels_csv(path, files, root=root)
    assert labels == {"001.mid": (0.5, -0.5), "sub/002.mid": (-1.0, 1.0), "sub/003.mid": (1.0, 1.0)}
    assert rejects == []
    assert unmatched == [str(tmp_path / "elsewhere" / "004.mid")]  # as the user wrote it


@pytest.mark.parametrize("sep", [";", "\t"])
def test_read_labels_csv_names_a_wrong_separator(tmp_path: Path, sep: str):
    text = sep.join(["filename", "valence", "arousal"]) + "\n" + sep.join(["a.mid", "1", "1"])
    with pytest.raises(LabelsCSVError, match="separated by") as err:
        read_labels_csv(csv_file(tmp_path, text + "\n"), ["a.mid"])
    assert repr(sep) in str(err.value) and "comma" in str(err.value)


def test_read_labels_csv_reads_quadrants(tmp_path: Path):
    path = csv_file(
        tmp_path, "filename,quadrant\na.mid,Q1\nb.mid,2\nc.mid,q3\nd.mid,Q4\ne.mid,Q5\n"
    )
    files = ["a.mid", "b.mid", "c.mid", "d.mid", "e.mid"]
    labels, rejects, _ = read_labels_csv(path, files)
    assert labels == {
        "a.mid": (1.0, 1.0),
        "b.mid": (-1.0, 1.0),
        "c.mid": (-1.0, -1.0),
        "d.mid": (1.0, -1.0),
    }
    assert [r[:2] for r in rejects] == [("e.mid", "bad_label")] and "Q5" in rejects[0][2]
    with pytest.raises(LabelsCSVError, match="--label-range"):
        read_labels_csv(path, files, (1, 9))
    # valence and arousal win over a quadrant column (YM2413-MDB has all three)
    both = csv_file(tmp_path, "filename,valence,arousal,quadrant\na.mid,-1,1,Q1\n")
    assert read_labels_csv(both, ["a.mid"])[0] == {"a.mid": (-1.0, 1.0)}


def test_read_groups_matches_rows_like_labels(tmp_path: Path):
    from varemi.labelling.label_csv import read_groups

    root = tmp_path / "midi"
    path = csv_file(
        tmp_path,
        f"filename,Game,group\n./a/x.mid,g1,\ny.mid,g2,k\n{root / 'z.mid'},g3,k\nw.mid,,k\n",
    )
    files = ["a/x.mid", "b/y.mid", "z.mid", "w.mid"]
    assert read_groups(path, files, "game", root=root) == {
        "a/x.mid": "g1",
        "b/y.mid": "g2",
        "z.mid": "g3",
    }
    assert read_groups(path, files, "group", root=root) == {
        "b/y.mid": "k",
        "z.mid": "k",
        "w.mid": "k",
    }
    with pytest.raises(LabelsCSVError, match="'album'"):
        read_groups(path, files, "album")


def test_label_auc_reports_both_corpora_and_the_worst(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("label_auc", REPO / "scripts" / "label_auc.py")
    label_auc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(label_auc)
    rng = np.random.default_rng(0)
    results = {}
    for name, noise in (("easy", 0.3), ("hard", 1.5)):
        n = 200
        human = pd.DataFrame(
            {
                "filename": [f"{k}.mid" for k in range(n)],
                "valence": rng.choice([-1, 1], n),
                "arousal": rng.choice([-1, 1], n),
                "game": [f"g{k % 20}" for k in range(n)],
            }
        )
        predicted = human[["filename"]].assign(
            valence=human["valence"] + rng.normal(0, noise, n),
            arousal=human["arousal"] + rng.normal(0, noise, n),
        )
        merged = label_auc.merge_human(predicted, human)
        ci = label_auc.bootstrap(merged, 200)
        assert ci == label_auc.bootstrap(merged, 200)  # seeded
        figures = label_auc._figures(merged)
        assert ci["valence"][0] <= figures["valence"] <= ci["valence"][1]
        results[name] = (figures, ci)
    table = "\n".join(label_auc.human_table(results, goals=True))
    worst = next(line for line in table.splitlines() if line.startswith("| worst"))
    assert f"{results['hard'][0]['valence']:.3f} (hard)" in worst
    assert "goal (issue 18)" in table
