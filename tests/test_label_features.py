"""The native label features (crates/varemi-core/src/labels.rs) against their numpy twin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLEMENTATIONS, load_impl
from helpers import subprocess_env
from hypothesis import given
from hypothesis import strategies as st
from symusic import Note, Pedal, Score, Tempo, Track

from varemi import _native
from varemi._base.errors import LabelInputError, VaremiError
from varemi.core import reference
from varemi.core.label_features import FEATURE_NAMES, NoteArrays
from varemi.labelling.heuristic import note_arrays

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"


def assert_twins_agree(arrays: NoteArrays) -> np.ndarray:
    native = _native.label_features(*arrays)
    python = reference.label_features(*arrays)
    assert native.dtype == python.dtype == np.float64
    assert native.shape == python.shape == (len(FEATURE_NAMES),)
    np.testing.assert_allclose(native, python, rtol=1e-9, atol=1e-12)
    # Counts and the discrete features are exact.
    for name in ("duration_s", "n_notes", "note_density", "onset_rate", "ioi_median",
                 "note_duration", "articulation", "triad_balance", "velocity_range"):  # fmt: skip
        i = FEATURE_NAMES.index(name)
        assert native[i] == python[i], name
    return native


# Times on a coarse grid (many exact ties, chords, onsets 30 ms apart) or free.
times = st.one_of(st.integers(0, 400).map(lambda k: k * 0.015), st.floats(0, 30, allow_nan=False))
notes = st.tuples(times, st.floats(0, 4, allow_nan=False), st.integers(0, 127), st.integers(1, 127))
pedals = st.tuples(times, st.floats(0, 3, allow_nan=False))


@st.composite
def note_array_sets(draw) -> NoteArrays:
    n_tracks = draw(st.integers(1, 3))
    tracks = [draw(st.lists(notes, min_size=int(i == 0), max_size=40)) for i in range(n_tracks)]
    track_pedals = [draw(st.lists(pedals, max_size=6)) for _ in range(n_tracks)]
    tempos = draw(st.lists(st.tuples(times, st.floats(20, 300)), max_size=4))
    flat = [n for t in tracks for n in t]
    flat_pedals = [p for t in track_pedals for p in t]

    def offsets(groups):
        return np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int64)

    return NoteArrays(
        time=np.array([n[0] for n in flat], dtype=np.float64),
        duration=np.array([n[1] for n in flat], dtype=np.float64),
        pitch=np.array([n[2] for n in flat], dtype=np.int64),
        velocity=np.array([n[3] for n in flat], dtype=np.float64),
        note_tracks=offsets(tracks),
        pedal_time=np.array([p[0] for p in flat_pedals], dtype=np.float64),
        pedal_duration=np.array([p[1] for p in flat_pedals], dtype=np.float64),
        pedal_tracks=offsets(track_pedals),
        tempo_time=np.array([t[0] for t in tempos], dtype=np.float64),
        tempo_qpm=np.array([t[1] for t in tempos], dtype=np.float64),
    )


@given(note_array_sets())
def test_native_equals_twin_on_random_note_arrays(arrays: NoteArrays):
    assert_twins_agree(arrays)


def test_native_equals_twin_on_chords_pedals_and_tempo_changes():
    score = Score(480)
    score.tempos.append(Tempo(0, 90.0))
    score.tempos.append(Tempo(4 * 480, 150.0))
    track = Track("piano", 0, False)
    for bar, root in enumerate([48, 53, 55, 48, 57, 52]):
        for p in (root, root + 4, root + 7, root + 12):
            track.notes.append(Note(bar * 1920, 240, p, 50 + 10 * bar))
        track.pedals.append(Pedal(bar * 1920, 1800))
    score.tracks.append(track)
    a = note_arrays(score)
    f = dict(zip(FEATURE_NAMES, assert_twins_agree(a), strict=True))
    assert f["triad_balance"] == pytest.approx(6 / 16)  # six major onsets, no minor
    assert f["articulation"] == pytest.approx(1800 / 1920)  # held by the pedal


def real_files() -> list[Path]:
    files = sorted((CORPORA / "vgmidi" / "phrases").glob("*.mid"))
    files += sorted((CORPORA / "pop909").glob("*.mid"))[:60]
    files += sorted((CORPORA / "miditok_tests" / "MIDIs_one_track").glob("Maestro_*.mid"))
    files += sorted((CORPORA / "miditok_tests" / "MIDIs_multitrack").glob("*.mid"))
    return files


@pytest.mark.skipif(not (CORPORA / "vgmidi").is_dir(), reason="../shared absent")
def test_native_equals_twin_on_the_real_corpora():
    from varemi.labelling.heuristic import LabelError

    checked = 0
    for path in real_files():
        try:
            arrays = note_arrays(Score(str(path)))
        except LabelError:
            continue
        assert_twins_agree(arrays)
        checked += 1
    assert checked >= 270


def one_note(**changes) -> list[np.ndarray]:
    a = NoteArrays(
        time=np.array([0.0]),
        duration=np.array([1.0]),
        pitch=np.array([60], dtype=np.int64),
        velocity=np.array([64.0]),
        note_tracks=np.array([0, 1], dtype=np.int64),
        pedal_time=np.array([]),
        pedal_duration=np.array([]),
        pedal_tracks=np.array([0, 0], dtype=np.int64),
        tempo_time=np.array([]),
        tempo_qpm=np.array([]),
    )
    return list(a._replace(**changes))


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time": np.array([]), "duration": np.array([]), "pitch": np.array([], dtype=np.int64),
          "velocity": np.array([]), "note_tracks": np.array([0], dtype=np.int64),
          "pedal_tracks": np.array([0], dtype=np.int64)}, "at least one note"),
        ({"duration": np.array([1.0, 2.0])}, "time, duration, pitch and velocity"),
        ({"pedal_time": np.array([0.0])}, "pedal_time and pedal_duration"),
        ({"tempo_qpm": np.array([120.0])}, "tempo_time and tempo_qpm"),
        ({"note_tracks": np.array([0, 2], dtype=np.int64)}, "note_tracks must start at 0"),
        ({"note_tracks": np.array([1, 1], dtype=np.int64)}, "note_tracks must start at 0"),
        ({"pedal_tracks": np.array([0, 1], dtype=np.int64)}, "pedal_tracks must start at 0"),
        ({"pedal_tracks": np.array([0, 0, 0], dtype=np.int64)}, "note_tracks and pedal_tracks"),
    ],
)  # fmt: skip
def test_bad_note_arrays_raise_the_same_error(name, changes, message):
    impl = load_impl(name)
    with pytest.raises(LabelInputError, match=message) as err:
        impl.label_features(*one_note(**changes))
    assert isinstance(err.value, VaremiError)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_wrong_dtype_is_a_type_error(name):
    impl = load_impl(name)
    with pytest.raises(TypeError, match="pitch must be a 1-D numpy array of int64"):
        impl.label_features(*one_note(pitch=np.array([60], dtype=np.int32)))


@pytest.mark.parametrize(("switch", "expected"), [("1", "python True"), ("0", "native False")])
def test_pure_python_switch_uses_the_twin(switch, expected):
    code = (
        "import numpy as np, symusic\n"
        "from varemi.core import kernels, reference\n"
        "from varemi.labelling import heuristic as labels\n"
        "calls = []\n"
        "twin = reference.label_features\n"
        "reference.label_features = lambda *a: calls.append(1) or twin(*a)\n"
        "s = symusic.Score(480); t = symusic.Track('p', 0, False)\n"
        "t.notes.append(symusic.Note(0, 480, 60, 64)); s.tracks.append(t)\n"
        "labels.extract_features(s)\n"
        "print(kernels.IMPLEMENTATION, calls == [1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(VAREMI_PURE_PYTHON=switch),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == expected
