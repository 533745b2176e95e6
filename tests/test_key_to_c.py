"""``build --key-to-c``: every file moved to a tonic of C before labels and tokens.

A D major piece becomes the same piece in C major (the same tokens and labels as the
piece written in C), a minor piece becomes C minor (Eb, Ab, Bb), a piece in C stays, and
drums keep their pitches. Pitch handling, augmented copies and the cache all see the
music in C; a build without the option is the build it always was.
"""

from __future__ import annotations

import helpers as h
import pytest

from varemi import cli
from varemi.corpus import cache
from varemi.music.key import to_c, tonic_shift

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]
A_MINOR = [57, 59, 60, 62, 64, 65, 67, 69]
SMALL = dict(window_size=64, stride=32, min_window_tokens=16, train_split=0.5)


def scale_piece(scale: list[int], shift: int = 0, repeats: int = 4):
    """A scale, its tonic held twice as long, ``repeats`` times, moved by ``shift``."""
    from symusic import Note, Track

    track = Track(name="piano", program=0)
    time = 0
    tonic = scale[0] % 12
    for k, pitch in enumerate(scale * repeats):
        duration = 960 if pitch % 12 == tonic else 480
        track.notes.append(Note(time, duration, pitch + shift, 60 + (k % 5) * 10))
        time += duration
    return track


def pitch_classes(score) -> set[int]:
    return {int(p) % 12 for t in score.tracks if not t.is_drum for p in t.notes.numpy()["pitch"]}


def test_a_d_major_piece_moves_down_two_semitones_to_c_major():
    s = h.score(scale_piece(C_MAJOR, 2))
    assert tonic_shift(s) == -2
    assert to_c(s) == -2
    assert [n.pitch for n in s.tracks[0].notes] == [n.pitch for n in scale_piece(C_MAJOR).notes]


def test_an_a_minor_piece_moves_up_three_semitones_to_c_minor():
    s = h.score(scale_piece(A_MINOR))
    assert to_c(s) == 3
    assert pitch_classes(s) == {0, 2, 3, 5, 7, 8, 10}  # C D Eb F G Ab Bb


def test_the_nearer_way_to_c():
    for shift, expected in ((5, -5), (6, -6), (7, 5), (11, 1)):  # F, F#: down; G, B: up
        s = h.score(scale_piece(C_MAJOR, shift - 12))
        assert tonic_shift(s) == expected, shift


def test_a_piece_in_c_and_an_empty_one_stay():
    s = h.score(scale_piece(C_MAJOR))
    before = [(n.time, n.pitch) for n in s.tracks[0].notes]
    assert to_c(s) == 0
    assert [(n.time, n.pitch) for n in s.tracks[0].notes] == before
    assert to_c(h.score()) == 0
    assert to_c(h.score(h.track([], name="empty"))) == 0


def test_drums_keep_their_pitches_and_do_not_vote():
    drums = h.track([36, 38, 42, 46] * 20, is_drum=True, name="drums", duration=2000)
    s = h.score(scale_piece(C_MAJOR, 2), drums)
    assert to_c(s) == -2  # the long drum notes (C, D, F#, A#) weigh nothing
    assert [n.pitch for n in s.tracks[1].notes] == [36, 38, 42, 46] * 20


def test_a_shift_past_the_midi_range_clips():
    s = h.score(scale_piece([p + 55 for p in C_MAJOR], repeats=1))  # G major up to 127
    assert to_c(s) == 5
    assert max(n.pitch for n in s.tracks[0].notes) == 127


def _one_file(tmp_path, name: str, track, **kw):
    midi = tmp_path / name / "midi"
    h.write_midi(midi / "song.mid", track)
    h.write_midi(midi / "other.mid", scale_piece(C_MAJOR, 0, repeats=3))
    h.build(midi, tmp_path / name / "out", **SMALL, **kw)
    return tmp_path / name / "out"


def _rows(out):
    rows = h.rows(out)
    return sorted(
        (r["source_file"], r["augmentation"], r["window_idx"], r["input_ids"], r["valence"])
        for s in ("train", "val")
        for r in rows[s]
    )


@pytest.mark.parametrize("scope", ["file", "window"])
def test_a_d_major_file_builds_to_the_tokens_and_labels_of_the_same_piece_in_c(tmp_path, scope):
    in_c = _one_file(tmp_path, "c", scale_piece(C_MAJOR), label_scope=scope)
    in_d = _one_file(tmp_path, "d", scale_piece(C_MAJOR, 2), label_scope=scope, key_to_c=True)
    plain = _one_file(tmp_path, "plain", scale_piece(C_MAJOR, 2), label_scope=scope)
    assert _rows(in_d) == _rows(in_c)
    assert (in_d / "labels.csv").read_bytes() == (in_c / "labels.csv").read_bytes()
    assert _rows(plain) != _rows(in_c)
    assert h.info(in_d)["params"]["key_to_c"] is True
    assert h.info(in_c)["params"]["key_to_c"] is False


def test_pitch_policy_applies_after_the_shift(tmp_path):
    b_major = [p - 1 for p in C_MAJOR]  # B3..B4: up one semitone, then the range applies
    top = dict(pitch_range=(21, 71), pitch_policy="drop")
    moved = _one_file(tmp_path, "b", scale_piece(b_major), key_to_c=True, **top)
    in_c = _one_file(tmp_path, "c", scale_piece(C_MAJOR), **top)
    kept = _one_file(tmp_path, "kept", scale_piece(b_major), **top)
    assert _rows(moved) == _rows(in_c)  # B4 became C5 (72) and was dropped, as in C
    assert _rows(kept) != _rows(in_c)


def test_augmented_copies_are_made_from_the_piece_in_c(tmp_path):
    copies = _one_file(
        tmp_path, "copies", scale_piece(C_MAJOR, 2), key_to_c=True, augment_transpose="2"
    )
    d = _one_file(tmp_path, "d", scale_piece(C_MAJOR, 2))
    copy = [r[2:4] for r in _rows(copies) if r[0] == "song.mid" and r[1] == "t+2"]
    assert copy and copy == [r[2:4] for r in _rows(d) if r[0] == "song.mid"]  # C, then +2: D


def test_the_option_changes_token_and_label_keys_and_only_with_it():
    args = ("f" * 64, "k" * 64, "clamp", (21, 108), "merge", "native")
    recipe = cache.cache_key(
        *args, cache.encoder_version(), cache.source_hash(cache.TOKEN_SOURCES)
    )  # the token key's recipe before --key-to-c
    assert cache.token_key(*args) == cache.token_key(*args, "", False) == recipe
    assert cache.token_key(*args, "", True) != recipe
    assert cache.token_key(*args, "t+2", True) != cache.token_key(*args, "t+2")
    v = cache.labeller_version()
    label = cache.label_key("f" * 64, v, 0.0, 0, "a.mid")
    assert label == cache.cache_key("f" * 64, "labels", v, 0.0, 0, "")
    assert cache.label_key("f" * 64, v, 0.0, 0, "a.mid", "", "seconds", "", False) == label
    assert cache.label_key("f" * 64, v, 0.0, 0, "a.mid", "", "seconds", "", True) != label


def test_a_shared_cache_never_serves_one_build_to_the_other(tmp_path):
    shared = dict(cache=True, cache_dir=tmp_path / "cache", label_scope="window")
    plain = _one_file(tmp_path, "plain", scale_piece(C_MAJOR, 2), **shared)
    moved = _one_file(tmp_path, "moved", scale_piece(C_MAJOR, 2), key_to_c=True, **shared)
    again = _one_file(tmp_path, "again", scale_piece(C_MAJOR, 2), **shared)
    fresh = _one_file(
        tmp_path, "fresh", scale_piece(C_MAJOR, 2), key_to_c=True, label_scope="window"
    )
    assert _rows(moved) == _rows(fresh) != _rows(plain) == _rows(again)


def test_the_flag_is_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["build", "--help"])
    assert "--key-to-c" in capsys.readouterr().out


def test_the_command_line_builds_with_it_and_verify_passes(tmp_path):
    midi, out = tmp_path / "midi", tmp_path / "out"
    names = [f"{k}.mid" for k in range(20)]
    train = next(n for n in names if h.split_of(n, train_split=0.5) == "train")
    val = next(n for n in names if h.split_of(n, train_split=0.5) == "val")
    h.write_midi(midi / train, scale_piece(C_MAJOR, 2))
    h.write_midi(midi / val, scale_piece(A_MINOR))
    args = ["--window-size", "64", "--stride", "32", "--min-window-tokens", "16"]
    res = h.run_cli(
        "build", "--midi-dir", midi, "--out", out, "--tokenizer", "builtin", "--key-to-c",
        "--no-cache", "--workers", "1", "--quiet", "--train-split", "0.5", *args,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert h.info(out)["params"]["key_to_c"] is True
    res = h.run_cli("verify", out)
    assert res.returncode == 0, res.stdout + res.stderr
