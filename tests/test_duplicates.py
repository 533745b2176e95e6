"""Duplicate detection and groups: leakage-proof splits (format 2, contract 6)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varemi.corpus import grouping
from varemi.labelling import heuristic
from varemi.music import fingerprint

# --------------------------------------------------------------------------- fingerprints
notes = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(30, 90), st.integers(1, 960)),
    min_size=1,
    max_size=60,
)


def fp_of(triples, tpq=480, shift=0, scale=1):
    a = np.array(triples, dtype=np.int64).reshape(-1, 3)
    return fingerprint.fingerprint_notes(
        a[:, 0] * scale, a[:, 1] + shift, a[:, 2] * scale, tpq * scale
    )


@settings(max_examples=60, deadline=None)
@given(notes, st.integers(-12, 12), st.sampled_from([1, 2, 4]), st.randoms())
def test_exact_hash_ignores_note_order_and_resolution_transposed_ignores_shift(
    triples, shift, scale, rnd
):
    shuffled = list(triples)
    rnd.shuffle(shuffled)
    base = fp_of(triples)
    same = fp_of(shuffled, scale=scale)  # the same music at another ticks-per-quarter
    assert same.exact == base.exact and same.transposed == base.transposed
    assert np.array_equal(same.minhash, base.minhash)
    moved = fp_of(shuffled, shift=shift)
    assert moved.transposed == base.transposed
    assert (moved.exact == base.exact) == (shift == 0)


def test_a_changed_note_changes_the_exact_hashes():
    triples = [(i * 240, 60 + i % 7, 240) for i in range(40)]
    other = list(triples)
    other[10] = (other[10][0], other[10][1] + 1, 240)
    a, b = fp_of(triples), fp_of(other)
    assert a.exact != b.exact and a.transposed != b.transposed
    later = [(t + 240, p, du) for t, p, du in triples]  # the same notes a beat later
    assert fp_of(later).exact != a.exact and fp_of(later).transposed == a.transposed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=80),
    st.integers(1, 6),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), max_size=8),
)
def test_native_minhash_equals_its_python_twin(pitches, n, perms):
    from varemi import _native as native

    p = np.array(pitches, dtype=np.int64)
    a = np.array([x for x, _ in perms], dtype=np.uint64)
    b = np.array([y for _, y in perms], dtype=np.uint64)
    want = fingerprint._pitch_minhash_py(p, n, a, b)
    got = native.pitch_minhash(p, n, a, b)
    assert got.dtype == np.uint32 and np.array_equal(got, want)


def test_native_minhash_refuses_wrong_dtypes():
    from varemi import _native as native

    a = np.ones(4, dtype=np.uint64)
    with pytest.raises(TypeError):
        native.pitch_minhash(np.zeros(5, dtype=np.int32), 4, a, a)
    with pytest.raises(TypeError):
        native.pitch_minhash(np.zeros(5, dtype=np.int64), 4, a.astype(np.int64), a)


def _same_fingerprint(a: fingerprint.Fingerprint, b: fingerprint.Fingerprint) -> bool:
    return (a.exact, a.transposed, a.notes) == (b.exact, b.transposed, b.notes) and (
        a.minhash.dtype == b.minhash.dtype and np.array_equal(a.minhash, b.minhash)
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(0, 127), st.integers(0, 2**20)),
        max_size=80,
    ),
    st.sampled_from([1, 3, 96, 480, 1000, 32767]),
)
def test_native_fingerprint_equals_its_python_twin(triples, tpq):
    """Any notes (ties in every key, negative ticks, ticks that round half to even)."""
    if fingerprint._NATIVE is None:
        pytest.skip("VAREMI_PURE_PYTHON=1: the native kernel is not used")
    a = np.array(triples, dtype=np.int64).reshape(-1, 3)
    t, p, du = a[:, 0].astype(np.int32), a[:, 1].astype(np.int8), a[:, 2].astype(np.int32)
    assert _same_fingerprint(
        fingerprint.fingerprint_notes(t, p, du, tpq),
        fingerprint._fingerprint_notes_py(t, p, du, tpq),
    )


@pytest.mark.slow
def test_native_fingerprint_equals_its_twin_on_the_shared_corpora():
    from miditok.utils import merge_tracks
    from symusic import Score

    if fingerprint._NATIVE is None:
        pytest.skip("VAREMI_PURE_PYTHON=1: the native kernel is not used")
    corpora = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
    files = sorted(p for p in corpora.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        pytest.skip("../shared/corpora absent")
    checked = 0
    for path in files:
        try:
            score = Score(str(path))
        except Exception:
            continue  # the corrupt files of `odd`
        score.tracks = [t for t in score.tracks if not t.is_drum]
        if len(score.tracks) > 1:
            merge_tracks(score)
        if not score.tracks:
            continue
        n = score.tracks[0].notes.numpy()
        args = (n["time"], n["pitch"], n["duration"], score.ticks_per_quarter)
        assert _same_fingerprint(
            fingerprint.fingerprint_notes(*args), fingerprint._fingerprint_notes_py(*args)
        ), path
        checked += 1
    assert checked > 1000


def test_native_fingerprint_refuses_arrays_of_different_lengths():
    from varemi import _native as native

    x = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="one value per note"):
        native.fingerprint_notes(
            x,
            x[:2],
            x,
            480,
            fingerprint.RESOLUTION,
            fingerprint.NGRAM,
            fingerprint._PERM_A,
            fingerprint._PERM_B,
        )


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(1)
    common = rng.integers(0, 2**63, size=600, dtype=np.uint64)
    a = np.concatenate([common, rng.integers(0, 2**63, size=200, dtype=np.uint64)])
    b = np.concatenate([common, rng.integers(0, 2**63, size=200, dtype=np.uint64)])
    s = fingerprint.similarity(fingerprint.minhash(a), fingerprint.minhash(b))
    assert abs(s - 600 / 1000) < 0.15  # 128 permutations: standard error ~0.04
    assert fingerprint.similarity(fingerprint.minhash(a), fingerprint.minhash(a[::-1])) == 1.0
    assert (fingerprint.minhash(np.zeros(0, np.uint64)) == 2**32 - 1).all()


def test_fingerprint_json_round_trip_and_version():
    fp = fp_of([(0, 60, 10), (10, 62, 10)])
    back = fingerprint.Fingerprint.from_json(fp.to_json())
    assert back.exact == fp.exact and back.notes == 2
    assert np.array_equal(back.minhash, fp.minhash)
    assert fingerprint.Fingerprint.from_json({**fp.to_json(), "version": -1}) is None
    assert fingerprint.Fingerprint.from_json({"version": fingerprint.FINGERPRINT_VERSION}) is None


# --------------------------------------------------------------------------- grouping
def melody(seed, n=120):
    rng = np.random.default_rng(seed)
    return [(i * 240, int(p), 240) for i, p in enumerate(rng.integers(40, 90, size=n))]


def index_of(files: dict[str, list]) -> grouping.DuplicateIndex:
    idx = grouping.DuplicateIndex()
    for name in sorted(files):
        idx.add(name, fp_of(files[name]))
    return idx


def _brute_force_near(sigs, banded, threshold):
    """Every pair of banded files sharing a band, at or above the threshold (the spec)."""
    out = []
    for i in range(len(sigs)):
        for j in range(i):
            if not (banded[i] and banded[j]):
                continue
            bands = sigs[i].reshape(grouping.BANDS, grouping.ROWS) == sigs[j].reshape(
                grouping.BANDS, grouping.ROWS
            )
            sim = fingerprint.similarity(sigs[i], sigs[j])
            if bands.all(axis=1).any() and sim >= threshold:
                out.append((j, i, "near", sim))
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.5, 0.9]))
def test_near_matches_are_every_pair_sharing_a_band(n, seed, threshold):
    rng = np.random.default_rng(seed)
    base = rng.integers(
        0, 8, size=(4, fingerprint.NUM_PERM), dtype=np.uint32
    )  # few values: shared bands
    idx = grouping.DuplicateIndex(threshold)
    sigs, banded = [], []
    for k in range(n):
        sig = base[k % 4].copy()
        flip = rng.random(fingerprint.NUM_PERM) < rng.random()
        sig[flip] = rng.integers(0, 2**32, size=int(flip.sum()), dtype=np.uint32)
        notes = int(rng.choice([0, 5, 100]))
        idx.add(f"f{k:03d}.mid", fingerprint.Fingerprint(f"e{k}", f"t{k}", sig, notes))
        sigs.append(sig)
        banded.append(notes >= fingerprint.MIN_NOTES)
    assert idx.near_edges() == _brute_force_near(sigs, banded, threshold)


def test_the_index_holds_under_a_kilobyte_and_a_half_per_file():
    """A dict of LSH buckets held about 6 KB per distinct file (0.9 GB at 150,000 files)."""
    import tracemalloc

    rng = np.random.default_rng(7)
    fps = [
        fingerprint.Fingerprint(
            f"{k:016x}", f"{k + 1:016x}", rng.integers(0, 2**32, 128, np.uint32), 500
        )
        for k in range(4000)
    ]
    names = [f"folder/piece-{k:06d}.mid" for k in range(4000)]
    tracemalloc.start()
    try:
        idx = grouping.DuplicateIndex()
        for name, fp in zip(names, fps, strict=True):
            idx.add(name, fp)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / len(fps) < 1536, f"{held / len(fps):.0f} B a file"
    assert idx.grouping().summary["files_with_a_duplicate"] == 0


def planted():
    m = melody(1)
    edited = list(m)
    edited[30] = (edited[30][0], edited[30][1] + 2, 240)
    return {
        "b/song.mid": m,
        "a/copy.mid": m,
        "c/up.mid": [(t, p + 5, du) for t, p, du in m],
        "d/edited.mid": edited[:110],
        "e/other.mid": melody(2),
        "f/third.mid": melody(3),
    }


def test_groups_of_exact_transposed_and_near_duplicates():
    g = index_of(planted()).grouping()
    members = ["a/copy.mid", "b/song.mid", "c/up.mid", "d/edited.mid"]
    assert g.key == {f: "a/copy.mid" for f in members}  # the first file by path is the key
    kinds = {r[0]: r[2] for r in g.rows}
    assert kinds == {
        "a/copy.mid": "exact",
        "b/song.mid": "exact",
        "c/up.mid": "transposed",
        "d/edited.mid": "near",
    }
    near = next(r for r in g.rows if r[0] == "d/edited.mid")
    assert grouping.NEAR_THRESHOLD <= near[3] < 1.0
    assert g.summary["groups"] == 1 and g.summary["files_in_groups"] == 4
    assert g.drop == {}


def test_drop_keeps_the_first_copy_by_path():
    g = index_of(planted()).grouping(mode="drop")
    assert sorted(g.drop) == ["b/song.mid", "c/up.mid", "d/edited.mid"]
    assert {v[0] for v in g.drop.values()} == {"a/copy.mid"}
    assert g.key == {}  # what is left of the group is one file: it keeps its own path


def test_user_groups_join_detected_ones_and_name_the_key():
    users = {"e/other.mid": "piece-9", "f/third.mid": "piece-9", "c/up.mid": "piece-1"}
    g = index_of(planted()).grouping(users)
    assert g.key["e/other.mid"] == g.key["f/third.mid"] == "piece-9"
    # a user name wins over the first path: the detected group holds c/up.mid
    assert g.key["a/copy.mid"] == g.key["d/edited.mid"] == "piece-1"


def test_distinct_music_forms_no_group():
    g = index_of({f"{k}.mid": melody(10 + k) for k in range(30)}).grouping()
    assert g.key == {} and g.rows == []


def test_read_groups_csv(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("filename,group\na.mid,x\nsub\\b.mid,x\nmissing.mid,y\n", encoding="utf-8")
    assert grouping.read_groups_csv(path, ["a.mid", "sub/b.mid", "c.mid"]) == {
        "a.mid": "x",
        "sub/b.mid": "x",
    }
    for text, message in [
        ("name,group\na.mid,x\n", "needs the columns filename,group"),
        ("filename,group\na.mid,\n", "line 2: empty group"),
        ("filename,group\na.mid,x\na.mid,y\n", "line 3: a.mid listed twice"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(grouping.GroupsError, match=message):
            grouping.read_groups_csv(path, ["a.mid"])


def test_parent_groups():
    assert grouping.parent_groups(["a.mid", "x/b.mid", "x/y/c.mid"]) == {
        "x/b.mid": "x/",
        "x/y/c.mid": "x/y/",
    }


def test_check_options(tmp_path):
    with pytest.raises(grouping.GroupsError, match="--dedup must be one of"):
        grouping.check_options("maybe", None, None)
    with pytest.raises(grouping.GroupsError, match="--group-by must be one of"):
        grouping.check_options("group", None, "grandparent")
    with pytest.raises(grouping.GroupsError, match="cannot be used together"):
        grouping.check_options("group", tmp_path, "parent")
    with pytest.raises(grouping.GroupsError, match="is not a file"):
        grouping.check_options("group", tmp_path / "none.csv", None)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- builds

import helpers as h  # noqa: E402

from varemi.dataset.verify import verify  # noqa: E402

WINDOWS = dict(window_size=32, stride=16, min_window_tokens=8)
MEMBERS = ["a/copy.mid", "b/song.mid", "c/up.mid", "d/edited.mid"]


def write_planted(midi: Path) -> None:
    """One piece four times (an exact copy with another tempo and velocity, a transposed
    copy, an edited and shortened copy) and six distinct pieces."""
    m = h.melody(160, seed=5)
    edited = list(m)
    edited[40] += 1
    edited[90] = 60
    h.write_midi(midi / "b/song.mid", h.track(m))
    h.write_midi(midi / "a/copy.mid", h.track(m, velocity=40), qpm=97)
    h.write_midi(midi / "c/up.mid", h.track([p + 4 for p in m]))
    h.write_midi(midi / "d/edited.mid", h.track(edited[:150]))
    for k in range(6):
        h.write_midi(midi / f"other/{k}.mid", h.track(h.melody(160, seed=50 + k)))


def spanning_seed(names, train_split=0.5) -> int:
    """A seed under which ``names``, split by their own paths, land in both splits."""
    return next(s for s in range(1000) if len({h.split_of(n, s, train_split) for n in names}) == 2)


@pytest.fixture(scope="module")
def planted_midi(tmp_path_factory) -> Path:
    midi = tmp_path_factory.mktemp("planted") / "midi"
    write_planted(midi)
    return midi


def split_per_file(out: Path) -> dict[str, str]:
    return {r["source_file"]: s for s, rs in h.rows(out).items() for r in rs}


def test_planted_duplicates_split_as_one_group(planted_midi, tmp_path):
    seed = spanning_seed(MEMBERS)
    kw = dict(WINDOWS, seed=seed, train_split=0.5)
    off = split_per_file(h.build(planted_midi, tmp_path / "off", dedup="off", **kw).out)
    assert {off[f] for f in MEMBERS} == {"train", "val"}  # the leak this feature stops
    res = h.build(planted_midi, tmp_path / "group", **kw)
    got = split_per_file(res.out)
    assert len(got) == 10
    assert {got[f] for f in MEMBERS} == {h.split_of("a/copy.mid", seed, 0.5)}
    for f, s in got.items():  # the others keep their own key: the same split as with off
        if f not in MEMBERS:
            assert s == off[f] == h.split_of(f, seed, 0.5), f
    rows = read_csv(res.out / "duplicates.csv")
    assert [(r["source_file"], r["group"], r["kind"]) for r in rows] == [
        ("a/copy.mid", "a/copy.mid", "exact"),
        ("b/song.mid", "a/copy.mid", "exact"),
        ("c/up.mid", "a/copy.mid", "transposed"),
        ("d/edited.mid", "a/copy.mid", "near"),
    ]
    groups = res.info["groups"]
    assert groups["dedup"] == "group" and groups["groups"] == 1
    assert groups["files_in_groups"] == 4 and groups["largest_group"] == 4
    assert res.info["format_version"] == 3
    rep = verify(res.out)
    assert rep.ok, rep.failures
    assert verify(tmp_path / "off").ok


def test_verify_catches_a_group_across_splits(planted_midi, tmp_path):
    seed = spanning_seed(MEMBERS)
    out = h.build(planted_midi, tmp_path / "out", seed=seed, train_split=0.5, **WINDOWS).out
    # claim that the data was built with another group key for one member
    text = (out / "duplicates.csv").read_text(encoding="utf-8")
    wrong = next(
        f for f in MEMBERS if h.split_of(f, seed, 0.5) != h.split_of(MEMBERS[0], seed, 0.5)
    )
    (out / "duplicates.csv").write_text(
        text.replace(f"{wrong},a/copy.mid,", f"{wrong},{wrong},"), encoding="utf-8"
    )
    failures = "\n".join(verify(out).failures)
    assert "FAIL group_in_both_splits" not in failures  # the data itself is one split
    assert "FAIL split_rule" in failures and wrong in failures
    # files of one group in both splits: verify names the group
    (out / "duplicates.csv").write_text(text, encoding="utf-8")
    (out / "duplicates.csv").write_text(
        text + "other/0.mid,a/copy.mid,user,1.0\nother/1.mid,a/copy.mid,user,1.0\n"
        "other/2.mid,a/copy.mid,user,1.0\nother/3.mid,a/copy.mid,user,1.0\n"
        "other/4.mid,a/copy.mid,user,1.0\nother/5.mid,a/copy.mid,user,1.0\n",
        encoding="utf-8",
    )
    failures = "\n".join(verify(out).failures)
    assert "FAIL group_in_both_splits: 1 groups, e.g. a/copy.mid" in failures
    (out / "duplicates.csv").unlink()
    assert "FAIL duplicates_csv" in "\n".join(verify(out).failures)


def test_drop_rejects_the_copies_naming_the_kept_file(planted_midi, tmp_path):
    res = h.build(planted_midi, tmp_path / "out", dedup="drop", **WINDOWS)
    assert set(split_per_file(res.out)) == {"a/copy.mid"} | {f"other/{k}.mid" for k in range(6)}
    with open(res.out / "rejects.csv", newline="", encoding="utf-8") as f:
        rejects = {r["source_file"]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}
    assert rejects == {
        "b/song.mid": ("duplicate", "exact duplicate of a/copy.mid (similarity 1.000)"),
        "c/up.mid": ("duplicate", "transposed duplicate of a/copy.mid (similarity 1.000)"),
        "d/edited.mid": ("duplicate", rejects["d/edited.mid"][1]),
    }
    assert rejects["d/edited.mid"][1].startswith("near duplicate of a/copy.mid (similarity 0.")
    c = res.info["counts"]
    assert c["rejected_by_reason"] == {"duplicate": 3} and c["files_kept"] == 7
    labelled = {r["filename"] for r in read_csv(res.out / "labels.csv")}
    assert labelled == set(split_per_file(res.out))
    assert verify(res.out).ok


def test_label_rows_stream_to_disk_and_drop_leaves_out_the_dropped_rows(
    planted_midi, tmp_path, monkeypatch
):
    from varemi.dataset.export import SplitWriter

    off = h.build(planted_midi, tmp_path / "off", dedup="off", **WINDOWS).out
    spooled = []
    finish = SplitWriter.finish

    def peek(self, split_dir):  # after every file was tokenised, before labels.csv
        spooled.append((split_dir.parent / "_labels.csv").read_text(encoding="utf-8"))
        finish(self, split_dir)

    monkeypatch.setattr(SplitWriter, "finish", peek)
    res = h.build(planted_midi, tmp_path / "drop", dedup="drop", **WINDOWS)
    off_lines = (off / "labels.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    # the rows went to the spool file as they came (the dropped copies too), not to memory
    assert spooled[0] == "".join(off_lines[1:])
    dropped = {"b/song.mid", "c/up.mid", "d/edited.mid"}
    kept = [off_lines[0]] + [x for x in off_lines[1:] if x.split(",")[0] not in dropped]
    assert (res.out / "labels.csv").read_text(encoding="utf-8") == "".join(kept)
    assert not (res.out / "_labels.csv").exists()


def test_fingerprints_come_from_the_cache(planted_midi, tmp_path):
    kw = dict(WINDOWS, cache=True, cache_dir=tmp_path / "cache")
    first = h.build(planted_midi, tmp_path / "a", **kw)
    second = h.build(planted_midi, tmp_path / "b", **kw)
    assert first.info["cache"].get("miss") == 10 and second.info["cache"].get("hit") == 10
    assert (first.out / "duplicates.csv").read_bytes() == (
        second.out / "duplicates.csv"
    ).read_bytes()
    h.same_data(first.out, second.out)


def test_group_by_parent_and_groups_csv(tmp_path):
    midi = tmp_path / "midi"
    names = [f"piece{p}/take{t}.mid" for p in range(4) for t in range(3)] + ["solo.mid"]
    for k, name in enumerate(names):
        h.write_midi(midi / name, h.track(h.melody(60, seed=200 + k)))
    seed = spanning_seed(names[:3])
    kw = dict(WINDOWS, seed=seed, train_split=0.5)
    out = h.build(midi, tmp_path / "parent", group_by="parent", **kw).out
    got = split_per_file(out)
    for p in range(4):
        assert {got[f"piece{p}/take{t}.mid"] for t in range(3)} == {
            h.split_of(f"piece{p}/", seed, 0.5)
        }
    assert got["solo.mid"] == h.split_of("solo.mid", seed, 0.5)
    assert h.info(out)["groups"]["user_groups"] == "--group-by parent"
    assert verify(out).ok
    # two group names that hash to different splits (an empty train fails verify)
    candidates = [f"group{j}" for j in range(64)]
    pair = [
        next(g for g in candidates if h.split_of(g, seed, 0.5) == split)
        for split in ("train", "val")
    ]
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text(
        "filename,group\n" + "".join(f"{n},{pair[k % 2]}\n" for k, n in enumerate(names)),
        encoding="utf-8",
    )
    for dedup in ("group", "off"):
        out = h.build(midi, tmp_path / f"csv-{dedup}", groups=csv_path, dedup=dedup, **kw).out
        got = split_per_file(out)
        for k, n in enumerate(names):
            assert got[n] == h.split_of(pair[k % 2], seed, 0.5), n
        rows = read_csv(out / "duplicates.csv")
        assert {r["source_file"]: r["group"] for r in rows} == {
            n: pair[k % 2] for k, n in enumerate(names)
        }
        assert verify(out).ok


@pytest.mark.parametrize(
    "args,message",
    [
        (("--dedup", "maybe"), "argument --dedup: invalid choice: 'maybe'"),
        (("--group-by", "grandparent"), "argument --group-by: invalid choice: 'grandparent'"),
        (("--groups", "nowhere.csv"), "error: --groups nowhere.csv is not a file"),
        (("--groups", "{csv}", "--group-by", "parent"), "cannot be used together"),
        (("--groups", "{bad}"), "needs the columns filename,group"),
    ],
)
def test_bad_group_options_are_refused_before_any_work(planted_midi, tmp_path, args, message):
    (tmp_path / "g.csv").write_text("filename,group\n", encoding="utf-8")
    (tmp_path / "bad.csv").write_text("file,piece\n", encoding="utf-8")
    args = [a.format(csv=tmp_path / "g.csv", bad=tmp_path / "bad.csv") for a in args]
    res = h.run_cli(
        "build", "--midi-dir", planted_midi, "--out", tmp_path / "out", "--tokenizer", "builtin",
        "--no-cache", "--quiet", *args, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert message in res.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.varemi-tmp-*"))


# --------------------------------------------------------------------------- augmentation
def test_parse_offsets():
    from varemi.music.augment import AugmentError, names, parse_offsets

    assert parse_offsets("-3..3", "--augment-transpose", 24) == (-3, -2, -1, 1, 2, 3)
    assert parse_offsets("2,-2,2,0", "--augment-transpose", 24) == (-2, 2)
    assert parse_offsets(None, "--augment-transpose", 24) == ()
    assert names((-1, 2), (4,)) == ("t+2", "t-1", "v+4")  # Python string order
    for text, message in [
        ("3..-3", "the range is empty"),
        ("up", "expected A..B or a comma list"),
        ("-30..0", "within -24..24, got -30"),
    ]:
        with pytest.raises(AugmentError, match=message):
            parse_offsets(text, "--augment-transpose", 24)


def test_augmented_copies_stay_with_their_source(planted_midi, tmp_path):
    from varemi.music.augment import apply

    seed = spanning_seed(MEMBERS)
    kw = dict(WINDOWS, seed=seed, train_split=0.5, cache=True, cache_dir=tmp_path / "cache")
    res = h.build(
        planted_midi, tmp_path / "aug", augment_transpose="-1..2", augment_velocity="-4,4", **kw
    )
    plain = h.build(planted_midi, tmp_path / "plain", **kw)
    copies = ["", "t+1", "t+2", "t-1", "v+4", "v-4"]
    aug_rows, plain_rows = h.rows(res.out), h.rows(plain.out)
    for s in ("train", "val"):
        keys = [(r["source_file"], r["augmentation"], r["window_idx"]) for r in aug_rows[s]]
        assert keys == sorted(keys)
        files = {r["source_file"] for r in aug_rows[s]}
        assert files == {
            r["source_file"] for r in plain_rows[s]
        }  # every copy in its source's split
        for f in files:
            assert {r["augmentation"] for r in aug_rows[s] if r["source_file"] == f} == set(copies)
        originals = [r for r in aug_rows[s] if r["augmentation"] == ""]
        assert originals == [{**r} for r in plain_rows[s]]  # the originals are unchanged
    # a copy is the tokenisation of the shifted music, labelled from it
    tok = h.base_tokenizer()
    from symusic import Score

    score = Score(str(planted_midi / "other/0.mid"))
    apply(score, "t+2")
    split = "val" if h.split_of("other/0.mid", seed, 0.5) == "val" else "train"
    ids = h.music_ids(tok, score)
    first = next(
        r
        for r in aug_rows[split]
        if r["source_file"] == "other/0.mid" and r["augmentation"] == "t+2"
    )
    assert first["input_ids"][2:] == ids[: WINDOWS["window_size"]]
    from varemi.labelling.heuristic import label_score

    original = label_score(Score(str(planted_midi / "other/0.mid")), "other/0.mid")
    assert label_score(score, "other/0.mid").valence != original.valence  # t+2: higher
    for aug in ("t+2", "v+4", "v-4"):  # each copy is labelled from its own music
        shifted = Score(str(planted_midi / "other/0.mid"))
        apply(shifted, aug)
        want = label_score(shifted, "other/0.mid")
        row = next(
            r
            for r in aug_rows[split]
            if r["source_file"] == "other/0.mid" and r["augmentation"] == aug
        )
        assert (row["valence"], row["arousal"]) == (
            pytest.approx(want.valence, abs=1e-6),
            pytest.approx(want.arousal, abs=1e-6),
        )
    assert res.info["counts"]["files"] == plain.info["counts"]["files"]
    # BPE can merge a copy's tokens differently: about (not exactly) six times the windows
    assert res.info["counts"]["examples"]["train"] > 5 * plain.info["counts"]["examples"]["train"]
    rep = verify(res.out)
    assert rep.ok, rep.failures
    again = h.build(
        planted_midi, tmp_path / "again", augment_transpose="-1..2", augment_velocity="-4,4", **kw
    )
    assert again.info["cache"] == {"dir": str(tmp_path / "cache"), "hit": 60}
    h.same_data(res.out, again.out)


def test_tempo_copies_keep_the_tokens_and_move_arousal(planted_midi, tmp_path):
    from symusic import Score

    from varemi.music.augment import apply

    res = h.build(planted_midi, tmp_path / "q", augment_tempo="-20,20", dedup="off", **WINDOWS)
    rows = [r for s in ("train", "val") for r in h.rows(res.out)[s]]
    by = {(r["source_file"], r["augmentation"], r["window_idx"]): r for r in rows}
    name = "other/0.mid"
    original, fast, slow = (by[(name, a, 0)] for a in ("", "q+20", "q-20"))
    # the music ids are the same (time is in beats); only the conditioning tokens may move
    assert fast["input_ids"][2:] == original["input_ids"][2:] == slow["input_ids"][2:]
    assert slow["arousal"] < original["arousal"] < fast["arousal"]
    score = Score(str(planted_midi / name))
    apply(score, "q+20")
    assert [t.qpm for t in score.tempos] == pytest.approx(
        [t.qpm * 1.2 for t in Score(str(planted_midi / name)).tempos] or [144.0]
    )
    want = heuristic.label_score(score, name)
    assert fast["arousal"] == pytest.approx(want.arousal, abs=1e-6)
    assert {r["augmentation"] for r in rows} == {"", "q+20", "q-20"}
    assert verify(res.out).ok


def test_bad_augment_values_are_refused_before_any_work(planted_midi, tmp_path):
    res = h.run_cli(
        "build", "--midi-dir", planted_midi, "--out", tmp_path / "out", "--tokenizer", "builtin",
        "--no-cache", "--quiet", "--augment-transpose=-3..x",
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert h.error_lines(res.stderr) == [
        "error: --augment-transpose '-3..x': expected A..B or a comma list of integers "
        "(e.g. -3..3 or -2,2)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kw", [dict(binning="quantile", dedup="off"), dict(dedup="drop"), dict(workers=2)]
)
def test_augmentation_with_quantile_bins_drop_and_workers(planted_midi, tmp_path, kw):
    res = h.build(planted_midi, tmp_path / "out", augment_transpose="1", **WINDOWS, **kw)
    rows = [r for rs in h.rows(res.out).values() for r in rs]
    copies = {(r["source_file"], r["augmentation"]) for r in rows}
    files = {f for f, _ in copies}
    assert copies == {(f, a) for f in files for a in ("", "t+1")}
    assert len(files) == (7 if kw.get("dedup") == "drop" else 10)
    rep = verify(res.out)
    assert rep.ok, rep.failures
