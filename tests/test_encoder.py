"""--encoder: the native REMI + BPE encoder, its fallback to MidiTok, and its refusals."""

from __future__ import annotations

import helpers as h
import pytest
from miditok import REMI

from varemi._base.errors import UnsupportedConfig
from varemi.music.encoder import TokenEncoder
from varemi.music.tokenizer import maestro_config


def tempo_tokenizer(tmp_path):
    """A REMI tokenizer with tempo tokens: a configuration the native encoder refuses."""
    config = maestro_config()
    config.use_tempos = True
    path = tmp_path / "tempo_tokenizer.json"
    REMI(config).save(path)
    return path


def test_builtin_tokenizer_is_encoded_natively():
    enc = TokenEncoder(h.base_tokenizer(), "auto")
    assert enc.name == "native" and enc.reason is None


def test_native_ids_equal_miditok_ids_on_generated_scores():
    tok = h.base_tokenizer()
    native, miditok = TokenEncoder(tok, "native"), TokenEncoder(tok, "miditok")
    for seed in range(5):
        s = h.score(h.track(h.melody(120, seed=seed)), h.track(h.melody(60, seed=seed + 9)))
        want = miditok.encode(s.copy())
        got = native.encode(s.copy())
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
        assert len(want) == 2 and all(len(w) > 0 for w in want)


def test_unsupported_tokenizer_falls_back_under_auto_and_is_refused_under_native(tmp_path):
    tok = REMI(params=tempo_tokenizer(tmp_path))
    enc = TokenEncoder(tok, "auto")
    assert enc.name == "miditok" and "tempo" in enc.reason
    with pytest.raises(UnsupportedConfig, match="--encoder native"):
        TokenEncoder(tok, "native")


def test_build_says_it_fell_back_and_records_it(tmp_path):
    midi = tmp_path / "midi"
    h.write_tiny_corpus(midi, ["a.mid", "b.mid"], notes=40)
    tok = tempo_tokenizer(tmp_path)
    out = tmp_path / "out"
    res = h.run_cli("build", "--midi-dir", midi, "--out", out, "--tokenizer", tok,
                    "--no-cache", "--window-size", "16", "--stride", "8",
                    "--min-window-tokens", "4")  # fmt: skip
    assert res.returncode == 0, res.stderr
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note: using MidiTok")]
    assert len(notes) == 1 and "tempo" in notes[0]
    assert h.info(out)["encoder"]["used"] == "miditok"
    assert h.info(out)["encoder"]["fallback"]
    # an untrained tokenizer does not save added tokens: the dataset still verifies
    verified = h.run_cli("verify", out)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    if h.CHECKER.is_file():  # ../shared is absent from a user's clone
        res = h.run_checker(out, midi, "--window", "16", "--stride", "8",
                            "--min-window-tokens", "4", tokenizer=tok)  # fmt: skip
        assert h.checker_passed(res), res.stdout + res.stderr
    refused = h.run_cli("build", "--midi-dir", midi, "--out", tmp_path / "o2", "--tokenizer", tok,
                        "--no-cache", "--encoder", "native")  # fmt: skip
    assert refused.returncode == 2 and "--encoder native" in refused.stderr
    assert not (tmp_path / "o2").exists()


def test_native_and_miditok_builds_are_identical_on_the_demo(tmp_path):
    from varemi.music.demo import write_demo_corpus

    midi = tmp_path / "midi"
    write_demo_corpus(midi)
    outs = {}
    for enc in ("native", "miditok"):
        outs[enc] = tmp_path / enc
        h.build(midi, outs[enc], encoder=enc, workers=1)
        assert h.info(outs[enc])["encoder"]["used"] == enc
    h.same_data(outs["native"], outs["miditok"])
