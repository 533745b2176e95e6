from pathlib import Path

import numpy as np
import pytest
from symusic import Score  # noqa: E402

from varemi.music.demo import DEMO_PIECES, write_demo_corpus

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR_HARMONIC = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor plus the raised leading tone


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    paths = write_demo_corpus(folder)
    return {p.relative_to(folder).as_posix(): p for p in paths}


@pytest.fixture(scope="module")
def scores(corpus) -> dict[str, Score]:
    return {rel: Score(path) for rel, path in corpus.items()}


def notes_of(score: Score) -> dict[str, np.ndarray]:
    """Every note of every track as arrays: time, duration, pitch, velocity."""
    return {
        key: np.concatenate([t.notes.numpy()[key] for t in score.tracks])
        for key in ("time", "duration", "pitch", "velocity")
    }


def test_deterministic_byte_for_byte(tmp_path, corpus):
    again = write_demo_corpus(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in again] == list(corpus)
    for rel, path in corpus.items():
        assert (tmp_path / rel).read_bytes() == path.read_bytes(), rel


def test_paths_and_size(corpus):
    assert 16 <= len(corpus) <= 24
    assert list(corpus) == [p.path for p in DEMO_PIECES]
    assert len(set(corpus)) == len(corpus)
    assert any("/" in rel for rel in corpus) and any("/" not in rel for rel in corpus)
    assert all(rel.endswith(".mid") for rel in corpus)
    assert sum(p.stat().st_size for p in corpus.values()) < 400_000


def test_pitches_in_piano_range(scores):
    for rel, score in scores.items():
        pitch = notes_of(score)["pitch"]
        assert pitch.min() >= 21 and pitch.max() <= 108, rel


def test_files_match_descriptions(scores):
    for piece in DEMO_PIECES:
        score = scores[piece.path]
        assert score.ticks_per_quarter == 480
        assert len(score.tracks) == (2 if piece.two_hands else 1)
        assert all(t.program == 0 and not t.is_drum for t in score.tracks)
        assert [round(t.qpm, 3) for t in score.tempos] == [piece.tempo]
        ts = score.time_signatures
        assert [(t.numerator, t.denominator) for t in ts] == [(piece.beats_per_bar, 4)]
        assert score.end() == piece.bars * piece.beats_per_bar * 480
        # in key: every pitch class belongs to the mode's scale on the tonic
        scale = MAJOR if piece.mode == "major" else MINOR_HARMONIC
        classes = set(((notes_of(score)["pitch"] - piece.tonic) % 12).tolist())
        assert classes <= set(scale), piece.path
        assert -1 <= piece.valence <= 1 and -1 <= piece.arousal <= 1


def test_piece_names_say_what_they_are():
    for piece in DEMO_PIECES:
        words = set(Path(piece.path).stem.split("_"))
        assert {piece.mode, piece.dynamics, piece.register} <= words, piece.path
        assert ("fast" in words) == (piece.density == "dense" and piece.tempo >= 130), piece.path


# Krumhansl-Kessler key profiles (tonic first)
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def find_key(score: Score) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler key finding on the duration-weighted pitch-class histogram."""
    notes = notes_of(score)
    histogram = np.zeros(12)
    np.add.at(histogram, notes["pitch"] % 12, notes["duration"])
    candidates = [
        (float(np.corrcoef(np.roll(profile, tonic), histogram)[0, 1]), tonic, mode)
        for tonic in range(12)
        for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR))
    ]
    r, tonic, mode = max(candidates)
    return tonic, mode, r


def test_clear_tonal_harmony(scores):
    """A standard key-finding algorithm recovers every piece's key and mode."""
    for piece in DEMO_PIECES:
        tonic, mode, r = find_key(scores[piece.path])
        assert (tonic, mode) == (piece.tonic, piece.mode), piece.path
        assert r > 0.8, piece.path


def test_features_span_the_plane(scores):
    grid = {(p.mode, p.density, p.dynamics, p.register) for p in DEMO_PIECES}
    for mode in ("major", "minor"):
        for density in ("sparse", "dense"):
            for dynamics in ("soft", "loud"):
                for register in ("low", "high"):
                    assert (mode, density, dynamics, register) in grid
    assert {p.beats_per_bar for p in DEMO_PIECES} == {3, 4}
    assert 3 <= sum(p.two_hands for p in DEMO_PIECES) < len(DEMO_PIECES)
    valences = [p.valence for p in DEMO_PIECES]
    arousals = [p.arousal for p in DEMO_PIECES]
    assert min(valences) < -0.5 and max(valences) > 0.5
    assert min(arousals) < -0.5 and max(arousals) > 0.5


def test_measured_features_follow_descriptions(scores):
    def mean_of(select, feature):
        values = [feature(scores[p.path], p) for p in DEMO_PIECES if select(p)]
        return sum(values) / len(values)

    def velocity(score, _):
        return notes_of(score)["velocity"].mean()

    def pitch(score, _):
        return notes_of(score)["pitch"].mean()

    def notes_per_second(score, piece):
        seconds = score.end() / 480 * 60 / piece.tempo
        return len(notes_of(score)["pitch"]) / seconds

    assert mean_of(lambda p: p.dynamics == "loud", velocity) > 2 * mean_of(
        lambda p: p.dynamics == "soft", velocity
    )
    assert mean_of(lambda p: p.register == "high", pitch) > 12 + mean_of(
        lambda p: p.register == "low", pitch
    )
    slow = [notes_per_second(scores[p.path], p) for p in DEMO_PIECES if p.density == "sparse"]
    fast = [notes_per_second(scores[p.path], p) for p in DEMO_PIECES if p.density == "dense"]
    assert min(fast) > 2 * max(slow)
    assert max(p.tempo for p in DEMO_PIECES if p.density == "sparse") < 90
    assert min(p.tempo for p in DEMO_PIECES if p.density == "dense" and p.beats_per_bar == 4) > 125


def test_pieces_give_several_windows(scores):
    from miditok.utils import merge_tracks

    from varemi.music.tokenizer import load_base_tokenizer

    tok = load_base_tokenizer("builtin").tokenizer
    total = 0
    for rel, score in scores.items():
        score = score.copy()
        if len(score.tracks) > 1:
            merge_tracks(score)
        seqs = tok.encode(score)
        assert len(seqs) == 1
        n = len(seqs[0].ids)
        assert n >= 1024 + 512, (rel, n)  # at least three windows of 1024 with stride 512
        total += n
    assert total > 30_000
