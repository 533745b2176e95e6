"""Every cache key covers everything its value depends on (issue 17).

Two defects on the way here: window labels were keyed by the file's label key alone
(no tokenizer, pitch policy or range, track mode or encoder), so a build that changed
only ``--pitch-range`` reused another build's window labels, or crashed on a window
count that no longer matched; and the token key hashed the Rust sources but none of
the Python stages (augmentation, the encoder, file reading), while the label key
hashed the whole labels module, CSV parsing included.
"""

from __future__ import annotations

from pathlib import Path

import helpers as h
import pytest
from symusic import Note, Track

from varemi.corpus import cache

WINDOWS = dict(window_size=64, stride=64, min_window_tokens=16)


def write_wide_piece(path: Path) -> Path:
    """Two tracks over a wide range: pitch range and track mode change the tokens."""
    low = Track(name="bass", program=32)
    high = Track(name="piano", program=0)
    for k in range(160):
        low.notes.append(Note(k * 240, 240, 28 + (k * 5) % 24, 40 + (k % 4) * 20))
        high.notes.append(Note(k * 120, 120, 60 + (k * 7) % 36, 50 + (k % 5) * 15))
    path.parent.mkdir(parents=True, exist_ok=True)
    h.score(low, high).dump_midi(path)
    return path


def labels_of(out: Path) -> list[tuple]:
    rows = h.rows(out)
    return [
        (r["source_file"], r["window_idx"], r["valence"], r["arousal"], len(r["input_ids"]))
        for s in ("train", "val")
        for r in rows[s]
    ]


@pytest.mark.parametrize(
    "change",
    [
        dict(pitch_range=(21, 88)),
        dict(pitch_range=(60, 64)),  # fewer windows than the first build: crashed before
        dict(tracks="first"),
        dict(pitch_policy="fold"),
    ],
    ids=["pitch-range-21-88", "pitch-range-60-64", "tracks-first", "pitch-policy-fold"],
)
def test_window_labels_are_not_reused_across_token_settings(tmp_path, change):
    midi = tmp_path / "midi"
    write_wide_piece(midi / "wide.mid")
    write_wide_piece(midi / "other.mid")
    shared = tmp_path / "cache"
    common = dict(label_scope="window", **WINDOWS)
    h.build(midi, tmp_path / "first", cache=True, cache_dir=shared, **common)
    h.build(midi, tmp_path / "cached", cache=True, cache_dir=shared, **common, **change)
    h.build(midi, tmp_path / "fresh", cache=False, **common, **change)
    assert labels_of(tmp_path / "cached") == labels_of(tmp_path / "fresh")
    h.same_data(tmp_path / "cached", tmp_path / "fresh")


def test_window_label_key_names_tokens_labels_and_windows():
    base = dict(token_key="t" * 64, label_key="l" * 64, windows=(64, 64, 16))
    key = cache.window_label_key(**base)
    assert cache.window_label_key(**{**base, "token_key": "u" * 64}) != key
    assert cache.window_label_key(**{**base, "label_key": "m" * 64}) != key
    assert cache.window_label_key(**{**base, "windows": (64, 32, 16)}) != key


def _with_source(monkeypatch, rel: str, extra: bytes):
    """Pretend the package file ``rel`` holds other code: every key is recomputed."""
    real = Path.read_bytes
    target = cache.PACKAGE / rel

    def read_bytes(self):
        data = real(self)
        return data + extra if self == target else data

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    cache.source_hash.cache_clear()
    cache.encoder_version.cache_clear()


def _keys():
    token = cache.token_key("f" * 64, "k" * 64, "clamp", (21, 108), "merge", "native", "t+2")
    labeller = cache.labeller_version()
    return {
        "token": token,
        "label": cache.label_key("f" * 64, labeller, 0.0, 0, "a.mid"),
        "window": cache.window_label_key(token, "l" * 64, (64, 64, 16)),
        "fingerprint": cache.fingerprint_key(token),
    }


@pytest.mark.parametrize(
    ("rel", "changed"),
    [
        ("music/augment.py", {"token", "label", "window", "fingerprint"}),
        ("music/encoder/__init__.py", {"token", "window", "fingerprint"}),
        ("music/files.py", {"token", "label", "window", "fingerprint"}),
        ("labelling/heuristic.py", {"label"}),
        ("labelling/fitted.py", {"label"}),
        ("core/label_features.py", {"label"}),
        ("music/tokenizer.py", {"window"}),
        ("music/timing.py", set()),  # window labels in seconds only (--label-time seconds)
        ("music/fingerprint.py", {"fingerprint"}),
        ("labelling/label_csv.py", set()),  # CSV parsing never costs a cached value
        ("dataset/verify.py", set()),
    ],
)
def test_keys_change_with_exactly_the_sources_of_their_stages(monkeypatch, rel, changed):
    before = _keys()
    _with_source(monkeypatch, rel, b"\n# another version of this stage\n")
    try:
        after = _keys()
    finally:
        monkeypatch.undo()
        cache.source_hash.cache_clear()
        cache.encoder_version.cache_clear()
    assert {k for k in before if before[k] != after[k]} == changed


def test_every_listed_source_exists():
    for sources in (
        cache.TOKEN_SOURCES,
        cache.LABEL_SOURCES,
        cache.WINDOW_LABEL_SOURCES,
        cache.FINGERPRINT_SOURCES,
    ):
        for rel in sources:
            assert (cache.PACKAGE / rel).is_file(), rel
