"""A build resumed through the token cache: workers serve the hits (``--workers 2``)."""

from __future__ import annotations

import helpers as h

KW = dict(window_size=16, stride=8, min_window_tokens=4, cache=True)


def test_half_cached_build_with_two_workers(tmp_path):
    midi = tmp_path / "midi"
    names = [f"c{k:02d}.mid" for k in range(10)]
    h.write_tiny_corpus(midi, names, notes=40)
    (midi / "bad.mid").write_bytes(b"not midi")
    h.build(midi, tmp_path / "ref", window_size=16, stride=8, min_window_tokens=4)

    # cache half the corpus, as a build killed half way leaves it
    half = tmp_path / "half"
    h.write_tiny_corpus(half, names[:5], notes=40)
    cache = tmp_path / "cache"
    h.build(half, tmp_path / "first", cache_dir=cache, workers=2, **KW)
    entries = sorted(cache.rglob("*.tok"))
    assert len(entries) == 5
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # one damaged entry

    h.build(midi, tmp_path / "resumed", cache_dir=cache, workers=2, **KW)
    c = h.info(tmp_path / "resumed")["cache"]
    assert (c.get("hit"), c.get("damaged"), c.get("miss")) == (4, 1, 6)  # bad.mid: a miss
    h.same_data(tmp_path / "ref", tmp_path / "resumed")
    assert (tmp_path / "ref" / "labels.csv").read_bytes() == (
        tmp_path / "resumed" / "labels.csv"
    ).read_bytes()
    assert h.rejects(tmp_path / "resumed") == {"bad.mid": "unreadable"}

    # one worker serves the same hits in the main process: the same record
    h.build(midi, tmp_path / "one", cache_dir=tmp_path / "cache1", workers=1, **KW)
    h.build(midi, tmp_path / "warm1", cache_dir=tmp_path / "cache1", workers=1, **KW)
    h.build(midi, tmp_path / "warm2", cache_dir=tmp_path / "cache1", workers=2, **KW)
    c1, c2 = h.info(tmp_path / "warm1")["cache"], h.info(tmp_path / "warm2")["cache"]
    assert {**c1, "dir": None} == {**c2, "dir": None} and c1["hit"] == 10
    h.same_data(tmp_path / "warm1", tmp_path / "warm2")
