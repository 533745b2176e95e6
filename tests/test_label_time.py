"""``build --label-time auto|beats|seconds``: labels in beats or with the file's tempo (issue 19).

The model's tokenizer has no tempo tokens: ``beats`` labels the music as the tokens hold
it (decoded: 120 qpm), ``seconds`` with the file's own tempo map, for files and windows;
``auto`` is the behaviour before the option (files in seconds, windows in beats). The
expected window labels in seconds are computed here from an independent oracle: where a
row's decoded notes lie in the file is found by matching their pitches against the
file's melody, never from the build's bar count.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import helpers as h
import numpy as np
import pytest
from symusic import Tempo

from varemi._base.errors import VaremiError
from varemi.corpus import cache
from varemi.dataset.verify import verify
from varemi.labelling.heuristic import label_score
from varemi.music.tokenizer import bar_start_table, decode_music
from varemi.pipeline.params import check_params, param_warnings

WINDOWS = dict(window_size=64, stride=48, min_window_tokens=16)
MELODY = h.melody(240, seed=7)
"""One note a quarter: note k at quarter k (random pitches: a window's place is unique)."""
CHANGE = 130
"""The quarter where the two-tempo file goes from 60 to 240 qpm (mid-bar: 130 = 32.5 bars)."""


def write_melody(path: Path, qpm: float, change_to: float | None = None) -> Path:
    s = h.score(h.track(MELODY, step=480, duration=360), qpm=qpm)
    if change_to is not None:
        s.tempos.append(Tempo(CHANGE * 480, qpm=change_to))
    path.parent.mkdir(parents=True, exist_ok=True)
    s.dump_midi(path)
    return path


def labels_by_row(out: Path) -> dict[tuple[str, int], tuple[float, float]]:
    rows = h.rows(out)
    return {
        (r["source_file"], r["window_idx"]): (r["valence"], r["arousal"])
        for s in ("train", "val")
        for r in rows[s]
    }


def file_label(out: Path, name: str) -> tuple[float, float]:
    for line in (out / "labels.csv").read_text().splitlines()[1:]:
        cells = line.split(",")
        if cells[0] == name:
            return float(cells[1]), float(cells[2])
    raise KeyError(name)


def test_file_labels_in_beats_ignore_the_tempo_in_seconds_follow_it(tmp_path):
    midi = tmp_path / "midi"
    for qpm in (60, 120, 240):
        write_melody(midi / f"q{qpm}.mid", qpm)
    for time in ("auto", "beats", "seconds"):
        h.build(midi, tmp_path / time, label_time=time, **WINDOWS)
    beats = {q: file_label(tmp_path / "beats", f"q{q}.mid") for q in (60, 120, 240)}
    seconds = {q: file_label(tmp_path / "seconds", f"q{q}.mid") for q in (60, 120, 240)}
    # the same tokens: the same labels in beats, those of the file's ids decoded
    assert beats[60] == beats[120] == beats[240]
    base = h.base_tokenizer()
    ids = h.music_ids(base, h.score(h.track(MELODY, step=480, duration=360)))
    want = label_score(decode_music(base, ids), "q60.mid")
    assert beats[60] == (want.valence, want.arousal)
    # in seconds the tempo counts: a quarter a second is calmer than four
    assert seconds[60][1] < seconds[120][1] < seconds[240][1]
    # rows carry their file's label in either time base
    for time, labels in (("beats", beats), ("seconds", seconds)):
        for (name, _), (v, a) in labels_by_row(tmp_path / time).items():
            q = int(name[1:].split(".")[0])
            assert (v, a) == (np.float32(labels[q][0]), np.float32(labels[q][1]))
    # the default is seconds for files: the very same dataset and labels.csv
    h.same_data(tmp_path / "auto", tmp_path / "seconds")
    assert (tmp_path / "auto" / "labels.csv").read_bytes() == (
        tmp_path / "seconds" / "labels.csv"
    ).read_bytes()
    for time, resolved in (("auto", "seconds"), ("beats", "beats"), ("seconds", "seconds")):
        info = h.info(tmp_path / time)
        assert info["params"]["label_time"] == time
        assert list(info["params"])[-3:] == ["label_time", "preset", "key_to_c"]
        assert (info["labels"]["time"], info["labels"]["file_time"]) == (resolved, resolved)
        assert verify(tmp_path / time).ok


def decoded_shift(notes: list[tuple[float, int]]) -> int:
    """Where a decoded window lies in the file, in quarters: the shift most notes agree on."""
    votes = Counter(
        k - round(q) for q, p in notes for k, m in enumerate(MELODY) if m == p and k >= round(q)
    )
    return votes.most_common(1)[0][0]


def expected_in_seconds(base, row: dict) -> tuple[float, float]:
    """A row's labels in seconds: its ids decoded, given the file's tempos from its place."""
    score = decode_music(base, row["input_ids"][2:])
    tpq = score.ticks_per_quarter
    notes = [(n.time / tpq, n.pitch) for n in score.tracks[0].notes]
    shift = decoded_shift(notes)
    assert shift % 4 == 0  # decoded bar 0 is a bar of the file
    if row["source_file"] == "change.mid" and shift < CHANGE:
        score.tempos = [Tempo(0, qpm=60), Tempo((CHANGE - shift) * tpq, qpm=240)]
    else:
        qpm = {"change.mid": 240, "q60.mid": 60, "q120.mid": 120}[row["source_file"]]
        score.tempos = [Tempo(0, qpm=qpm)]
    label = label_score(score, row["source_file"])
    return label.valence, label.arousal


@pytest.mark.parametrize("align", ["token", "bar"])
def test_window_labels_in_seconds_take_the_files_tempo_over_their_bars(tmp_path, align):
    midi = tmp_path / "midi"
    write_melody(midi / "change.mid", 60, change_to=240)
    write_melody(midi / "q60.mid", 60)
    write_melody(midi / "q120.mid", 120)
    kw = dict(label_scope="window", window_align=align, **WINDOWS)
    h.build(midi, tmp_path / "seconds", label_time="seconds", **kw)
    h.build(midi, tmp_path / "beats", label_time="beats", **kw)
    base = h.base_tokenizer()
    rows = [r for rs in h.rows(tmp_path / "seconds").values() for r in rs]
    assert len(rows) > 20
    for row in rows:
        v, a = expected_in_seconds(base, row)
        assert (row["valence"], row["arousal"]) == (np.float32(v), np.float32(a)), row
    opens_bar = bar_start_table(base)
    mid_bar = [r for r in rows if not opens_bar[r["input_ids"][2]]]
    assert bool(mid_bar) == (align == "token")  # token windows also start inside bars
    seconds, beats = labels_by_row(tmp_path / "seconds"), labels_by_row(tmp_path / "beats")
    assert seconds.keys() == beats.keys()
    for key in seconds:
        if key[0] == "q120.mid":  # the decoder's own tempo: nothing changes
            assert seconds[key] == beats[key], key
        else:  # 60 or 240 qpm: the tempo moves the arousal
            assert seconds[key][1] != beats[key][1], key
    # the windows of the two-tempo file before the change are calm, after it excited
    change = sorted((k[1], a) for k, (_, a) in seconds.items() if k[0] == "change.mid")
    assert change[0][1] < change[-1][1]
    info = h.info(tmp_path / "seconds")
    assert (info["labels"]["time"], info["labels"]["file_time"]) == ("seconds", "seconds")
    assert "tempo map" in info["labels"]["windows"]["how"]
    assert verify(tmp_path / "seconds").ok


def test_window_scope_auto_is_windows_in_beats_and_files_in_seconds(tmp_path):
    midi = tmp_path / "midi"
    write_melody(midi / "q60.mid", 60)
    kw = dict(label_scope="window", **WINDOWS)
    h.build(midi, tmp_path / "auto", **kw)
    h.build(midi, tmp_path / "beats", label_time="beats", **kw)
    h.build(midi, tmp_path / "seconds", label_time="seconds", **kw)
    assert labels_by_row(tmp_path / "auto") == labels_by_row(tmp_path / "beats")
    assert file_label(tmp_path / "auto", "q60.mid") == file_label(tmp_path / "seconds", "q60.mid")
    assert file_label(tmp_path / "auto", "q60.mid") != file_label(tmp_path / "beats", "q60.mid")
    labels = h.info(tmp_path / "auto")["labels"]
    assert (labels["time"], labels["file_time"]) == ("beats", "seconds")


def test_the_cache_never_serves_labels_of_another_time_base(tmp_path):
    midi = tmp_path / "midi"
    write_melody(midi / "q60.mid", 60)
    write_melody(midi / "change.mid", 60, change_to=240)
    shared = dict(cache=True, cache_dir=tmp_path / "cache", **WINDOWS)
    # file scope: the file label's key; window scope from auto: the same file labels (in
    # seconds, a hit) and tokens, only the windows' time base differs
    for scope, first, second in (("file", "seconds", "beats"), ("window", "auto", "seconds")):
        kw = dict(label_scope=scope, **shared)
        h.build(midi, tmp_path / f"{scope}-{first}", label_time=first, **kw)
        h.build(midi, tmp_path / f"{scope}-{second}", label_time=second, **kw)
        h.build(midi, tmp_path / f"{scope}-fresh", label_time=second, label_scope=scope,
                **WINDOWS)  # fmt: skip
        cached = labels_by_row(tmp_path / f"{scope}-{second}")
        assert cached == labels_by_row(tmp_path / f"{scope}-fresh"), scope
        assert cached != labels_by_row(tmp_path / f"{scope}-{first}"), scope
        info = h.info(tmp_path / f"{scope}-{second}")["cache"]
        assert info.get("hit" if scope == "file" else "miss", 0) == 0, (scope, info)
        # and the same request again is served from the cache, labels and all
        h.build(midi, tmp_path / f"{scope}-again", label_time=second, label_scope=scope,
                **shared)  # fmt: skip
        assert h.info(tmp_path / f"{scope}-again")["cache"]["hit"] == 2
        assert labels_by_row(tmp_path / f"{scope}-again") == cached


def test_cache_keys_of_the_default_are_those_before_the_option():
    token = cache.token_key("f" * 64, "k" * 64, "clamp", (21, 108), "merge", "native")
    v = cache.labeller_version()
    old = cache.cache_key("f" * 64, "labels", v, 0.0, 0, "")
    assert cache.label_key("f" * 64, v, 0.0, 0, "a.mid") == old
    assert cache.label_key("f" * 64, v, 0.0, 0, "a.mid", "", "seconds", token) == old
    beats = cache.label_key("f" * 64, v, 0.0, 0, "a.mid", "", "beats", token)
    assert beats != old
    other = cache.token_key("f" * 64, "k" * 64, "clamp", (21, 108), "first", "native")
    assert cache.label_key("f" * 64, v, 0.0, 0, "a.mid", "", "beats", other) != beats
    windows = (64, 48, 16, "token")
    default = cache.window_label_key(token, old, windows)
    assert cache.window_label_key(token, old, windows, "beats") == default
    assert cache.window_label_key(token, old, windows, "seconds") != default


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(label_time="bars"), "--label-time must be one of auto, beats, seconds, got 'bars'"),
        (dict(label_time="beats", labels="LABELS"), "a --labels CSV gives the labels"),
        (dict(label_time="seconds", labels="LABELS"), "a --labels CSV gives the labels"),
    ],
)
def test_refused_combinations_name_the_option(tmp_path, kw, words):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid"])
    if kw.get("labels") == "LABELS":
        kw = dict(kw, labels=h.write_labels(tmp_path / "l.csv", {"a.mid": (0.1, 0.2)}))
    with pytest.raises(VaremiError, match="--label-time") as e:
        check_params(h.params(midi, tmp_path / "out", **kw))
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VaremiError, match="--label-time"):
        h.build(midi, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_seconds_windows_refuse_a_tokenizer_whose_bars_vary(tmp_path):
    from miditok import REMI, TokenizerConfig

    tokenizer = tmp_path / "ts.json"
    REMI(TokenizerConfig(use_time_signatures=True)).save(tokenizer)
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid"])
    kw = dict(tokenizer=str(tokenizer), label_scope="window", **WINDOWS)
    with pytest.raises(VaremiError, match="time-signature tokens"):
        h.build(midi, tmp_path / "out", label_time="seconds", **kw)
    assert not (tmp_path / "out").exists()
    h.build(midi, tmp_path / "beats", label_time="beats", **kw)  # beats need no bars


def test_cli_takes_label_time_and_refuses_a_bad_value(tmp_path):
    midi = tmp_path / "midi"
    write_melody(midi / "q60.mid", 60)
    common = ["--midi-dir", midi, "--tokenizer", "builtin", "--no-cache", "--quiet"]
    common += ["--window-size", "64", "--stride", "48", "--min-window-tokens", "16"]
    res = h.run_cli("build", *common, "--out", tmp_path / "out", "--label-time", "beats")
    assert res.returncode == 0, res.stderr
    assert h.info(tmp_path / "out")["labels"]["time"] == "beats"
    res = h.run_cli("build", *common, "--out", tmp_path / "bad", "--label-time", "ticks")
    assert res.returncode != 0
    assert h.error_lines(res.stderr) == [
        "error: --label-time must be one of auto, beats, seconds, got 'ticks'"
    ]


def test_tempo_copies_with_labels_in_beats_are_warned_about(tmp_path):
    def warnings(**kw) -> list[str]:
        return [w for w in param_warnings(h.params(tmp_path, tmp_path / "o", **kw)) if "tempo" in w]

    assert warnings(augment_tempo="10", label_time="beats")
    assert warnings(augment_tempo="10", label_scope="window")  # auto: windows in beats
    assert not warnings(augment_tempo="10")  # auto, file scope: seconds
    assert not warnings(augment_tempo="10", label_scope="window", label_time="seconds")


def test_the_label_time_of_a_dataset_is_read_in_one_place():
    from varemi.dataset.info import label_time

    assert label_time({"labels": {"time": "beats", "scope": "file"}}) == "beats"
    # built before --label-time: auto's rule
    assert label_time({"labels": {"source": "heuristic", "scope": "file"}}) == "seconds"
    assert label_time({"labels": {"source": "heuristic", "scope": "window"}}) == "beats"
    assert label_time({"labels": {"source": "csv", "scope": "file"}}) is None
