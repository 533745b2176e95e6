import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from miditok import REMI, TokSequence  # noqa: E402
from miditok.utils import merge_tracks  # noqa: E402
from symusic import Score  # noqa: E402

from varemi._base.errors import BinsError, VaremiError
from varemi.dataset import vocabulary
from varemi.dataset.info import DatasetInfoError
from varemi.music import tokenizer as vt
from varemi.music.demo import DEMO_PIECES, make_score

BINS9 = [f"[VAL={v:+d}]" for v in range(-4, 5)] + [f"[ARO={a:+d}]" for a in range(-4, 5)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def score() -> Score:
    s = make_score(next(p for p in DEMO_PIECES if p.two_hands))
    merge_tracks(s)
    return s


@pytest.fixture()
def builtin_copy(tmp_path) -> Path:
    path = tmp_path / "base" / "tokenizer.json"
    path.parent.mkdir()
    shutil.copyfile(vt.builtin_tokenizer_path(), path)
    return path


def as_json(obj):
    return json.loads(json.dumps(obj))


def encode_ids(tok: REMI, score: Score) -> list[int]:
    seqs = tok.encode(score)
    assert len(seqs) == 1
    return list(seqs[0].ids)


# ----------------------------------------------------------------- configuration and builtin


def test_maestro_config_flags():
    c = vt.maestro_config()
    assert tuple(c.pitch_range) == (21, 108)
    assert c.beat_res == {(0, 1): 8, (1, 2): 4, (2, 4): 2, (4, 8): 1}
    assert c.num_velocities == 16
    assert list(c.special_tokens) == ["PAD_None", "MASK_None", "BOS_None", "EOS_None", "SEP_None"]
    for flag in (
        "use_chords",
        "use_rests",
        "use_tempos",
        "use_programs",
        "use_time_signatures",
        "use_sustain_pedals",
        "use_pitch_bends",
        "use_control_changes",
        "use_key_signatures",
        "use_pitch_intervals",
    ):
        assert getattr(c, flag) is False, flag
    assert c.use_velocities is True


def test_builtin_tokenizer_matches_maestro_config():
    base = vt.load_base_tokenizer(vt.BUILTIN)
    tok = base.tokenizer
    assert isinstance(tok, REMI)
    assert base.source == "builtin"
    assert base.path == vt.builtin_tokenizer_path()
    assert base.path.stat().st_size < 1_000_000
    assert tok.is_trained
    assert base.base_vocab_size == len(tok) == 1000
    assert base.pitch_range == vt.vocab_pitch_range(tok) == (21, 108)
    pitches = sorted(int(t[6:]) for t in tok.vocab if t.startswith("Pitch_"))
    assert pitches == list(range(21, 109))
    fresh = REMI(vt.maestro_config())
    assert as_json(tok.config.to_dict(True)) == as_json(fresh.config.to_dict(True))
    assert tok.vocab == fresh.vocab  # the base vocabulary
    kinds = {t.split("_")[0] for t in tok.vocab}
    assert kinds == {
        "PAD",
        "MASK",
        "BOS",
        "EOS",
        "SEP",
        "Bar",
        "Position",
        "Pitch",
        "Velocity",
        "Duration",
    }
    assert sum(t.startswith("Velocity_") for t in tok.vocab) == 16


def test_builtin_sha256_is_of_the_file():
    import hashlib

    base = vt.load_base_tokenizer("builtin")
    assert base.sha256 == hashlib.sha256(base.path.read_bytes()).hexdigest()


def test_builtin_tokenizer_is_up_to_date(tmp_path):
    """The packaged file is what scripts/make_builtin_tokenizer.py builds today."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_builtin_tokenizer", ROOT / "scripts" / "make_builtin_tokenizer.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = json.loads(script.build(tmp_path / "t.json").read_text())
    packaged = json.loads(vt.builtin_tokenizer_path().read_text())
    for d in (fresh, packaged):
        for key in ("miditok_version", "symusic_version", "hf_tokenizers_version"):
            d.pop(key, None)
    assert fresh == packaged


# ----------------------------------------------------------------- conditioning tokens


def test_add_conditioning_tokens_bins9():
    tok = vt.load_base_tokenizer("builtin").tokenizer
    base = len(tok)
    ids = vt.add_conditioning_tokens(tok, 9)
    assert list(ids) == BINS9
    assert list(ids.values()) == list(range(base, base + 18))
    assert len(tok) == base + 18
    assert all(tok.vocab[name] == i for name, i in ids.items())


def test_add_conditioning_tokens_untrained_and_bins1():
    tok = REMI(vt.maestro_config())
    base = len(tok)
    ids = vt.add_conditioning_tokens(tok, 1)
    assert ids == {"[VAL=+0]": base, "[ARO=+0]": base + 1}


def test_add_conditioning_tokens_refuses_bad_bins_and_twice():
    tok = vt.load_base_tokenizer("builtin").tokenizer
    with pytest.raises(BinsError):
        vt.add_conditioning_tokens(tok, 4)
    vt.add_conditioning_tokens(tok, 3)
    with pytest.raises(vt.TokenizerError, match="already"):
        vt.add_conditioning_tokens(tok, 3)


def test_conditioning_tokens_do_not_change_encoding(score):
    tok = vt.load_base_tokenizer("builtin").tokenizer
    before = encode_ids(tok, score)
    vt.add_conditioning_tokens(tok, 9)
    assert encode_ids(tok, score) == before
    assert max(before) < 1000


def test_save_reload_keeps_ids_and_bpe(tmp_path, score):
    base = vt.load_base_tokenizer("builtin").tokenizer
    base_ids = encode_ids(base, score)
    tok = vt.load_base_tokenizer("builtin").tokenizer
    ids = vt.add_conditioning_tokens(tok, 9)
    path = vt.save_tokenizer(tok, tmp_path / "out")
    assert path == tmp_path / "out" / "tokenizer.json"
    again = REMI(params=path)
    assert again.is_trained and len(again) == 1018
    assert {name: again.vocab[name] for name in BINS9} == ids
    assert encode_ids(again, score) == base_ids
    # after a reload, MidiTok's own BPE decoding knows the new tokens
    seq = TokSequence(ids=[ids["[VAL=+2]"], ids["[ARO=-4]"], *base_ids[:10]], are_ids_encoded=True)
    again.decode_token_ids(seq)
    assert seq.tokens[:2] == ["[VAL=+2]", "[ARO=-4]"]
    # a file path is written as given
    assert vt.save_tokenizer(tok, tmp_path / "x.json") == tmp_path / "x.json"


def test_decode_music_ignores_conditioning_tokens(score):
    tok = vt.load_base_tokenizer("builtin").tokenizer
    ids = vt.add_conditioning_tokens(tok, 9)
    music = encode_ids(tok, score)
    decoded = vt.decode_music(tok, [ids["[VAL=+1]"], ids["[ARO=+3]"], *music])
    assert decoded.note_num() == score.note_num()


# ----------------------------------------------------------------- ids_to_tokens


def test_ids_to_tokens_expands_bpe_and_shows_conditioning(score):
    tok = vt.load_base_tokenizer("builtin").tokenizer
    seq = tok.encode(score)[0]
    base_tokens = list(seq.tokens)
    assert any(i >= len(tok.vocab) for i in seq.ids)  # there are BPE ids
    ids = vt.add_conditioning_tokens(tok, 9)  # in memory: MidiTok's decoding would KeyError
    prefix = [ids["[VAL=+2]"], ids["[ARO=-1]"]]
    out = vt.ids_to_tokens(tok, np.array(prefix + list(seq.ids), dtype=np.int32))
    assert out == ["[VAL=+2]", "[ARO=-1]", *base_tokens]
    assert vt.ids_to_tokens(tok, [5, 99999, -1]) == ["Bar_None", "<unk:99999>", "<unk:-1>"]
    assert vt.ids_to_tokens(tok, []) == []


def test_ids_to_tokens_untrained():
    tok = REMI(vt.maestro_config())
    ids = vt.add_conditioning_tokens(tok, 3)
    assert vt.ids_to_tokens(tok, [0, ids["[ARO=+1]"], len(tok)]) == [
        "PAD_None",
        "[ARO=+1]",
        f"<unk:{len(tok)}>",
    ]


# ----------------------------------------------------------------- load_base_tokenizer


def test_load_folder_and_json_path(builtin_copy):
    by_folder = vt.load_base_tokenizer(builtin_copy.parent)
    by_file = vt.load_base_tokenizer(str(builtin_copy))
    builtin = vt.load_base_tokenizer("builtin")
    assert by_folder.path == by_file.path == builtin_copy
    assert by_folder.source == str(builtin_copy.parent)
    assert by_file.source == str(builtin_copy)
    assert by_folder.sha256 == by_file.sha256 == builtin.sha256
    assert by_folder.tokenizer.vocab == builtin.tokenizer.vocab


def test_load_refuses_missing_and_wrong_files(tmp_path, builtin_copy):
    with pytest.raises(vt.TokenizerError, match="does not exist"):
        vt.load_base_tokenizer(str(tmp_path / "nope.json"))
    with pytest.raises(vt.TokenizerError, match="no tokenizer.json"):
        vt.load_base_tokenizer(tmp_path)
    with pytest.raises(vt.TokenizerError, match="neither an existing file or folder nor a hub"):
        vt.load_base_tokenizer("no such file")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(vt.TokenizerError, match="not a JSON"):
        vt.load_base_tokenizer(tmp_path / "bad.json")
    (tmp_path / "hf.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(vt.TokenizerError, match="not a MidiTok"):
        vt.load_base_tokenizer(tmp_path / "hf.json")
    params = json.loads(builtin_copy.read_text())
    params["tokenization"] = "TSD"
    (tmp_path / "tsd.json").write_text(json.dumps(params))
    with pytest.raises(vt.TokenizerError, match="TSD tokenizer; varemi needs a REMI"):
        vt.load_base_tokenizer(tmp_path / "tsd.json")


def test_load_refuses_extended_tokenizer(tmp_path):
    tok = vt.load_base_tokenizer("builtin").tokenizer
    vt.add_conditioning_tokens(tok, 9)
    path = vt.save_tokenizer(tok, tmp_path / "ext.json")
    with pytest.raises(vt.TokenizerError, match="already holds conditioning tokens"):
        vt.load_base_tokenizer(path)


def test_vocab_pitch_range_of_old_style_file(builtin_copy):
    """pitch_range (21, 109) in the config, Pitch_21..108 in the vocabulary."""
    params = json.loads(builtin_copy.read_text())
    params["config"]["pitch_range"] = [21, 109]
    builtin_copy.write_text(json.dumps(params))
    base = vt.load_base_tokenizer(builtin_copy)
    assert tuple(base.tokenizer.config.pitch_range) == (21, 109)
    assert vt.vocab_pitch_range(base.tokenizer) == base.pitch_range == (21, 108)


def test_vocab_pitch_range_other_ranges():
    cfg = vt.maestro_config()
    cfg.pitch_range = (40, 90)
    assert vt.vocab_pitch_range(REMI(cfg)) == (40, 90)


# ----------------------------------------------------------------- the hub, offline


@pytest.fixture()
def empty_hub_cache(monkeypatch, tmp_path):
    """No model is in the hub cache, whatever this machine has downloaded before."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def _unavailable(spec: str) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(vt.TokenizerUnavailableError) as info:
        vt.load_base_tokenizer(spec)
    return str(info.value), time.perf_counter() - start


def test_hub_offline_env_fails_fast(monkeypatch, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _unavailable(vt.DEFAULT_TOKENIZER)
    assert seconds < 2
    assert "\n" not in message
    assert "HF_HUB_OFFLINE" in message
    assert "--tokenizer PATH" in message and "--tokenizer builtin" in message
    assert isinstance(vt.TokenizerUnavailableError("x"), VaremiError)


def test_hub_unreachable_fails_fast(monkeypatch, empty_hub_cache):
    """Without HF_HUB_OFFLINE, a bogus id on a machine with no network: quick, one line."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    message, seconds = _unavailable("varemi-tests/no-such-model-x7q")
    assert seconds < 15  # hf_hub_download alone retries for ~25 s
    assert "\n" not in message
    assert "--tokenizer PATH" in message and "--tokenizer builtin" in message
    assert "could not be reached" in message or "has no tokenizer.json" in message


def test_hub_silent_server_times_out(monkeypatch, empty_hub_cache):
    """A hub that accepts connections and never answers: the short timeout applies."""
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        monkeypatch.setattr(
            hc,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            f"http://127.0.0.1:{port}/{{repo_id}}/resolve/{{revision}}/{{filename}}",
        )
        monkeypatch.setattr(vt, "HUB_TIMEOUT_S", 1.0)
        message, seconds = _unavailable("varemi-tests/silent")
    assert seconds < 5
    assert "could not be reached" in message


def test_hub_not_found_and_cache(monkeypatch, builtin_copy):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def not_found(*args, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # needs no response
        Exception.__init__(error, "404 Repository Not Found")
        raise error

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", not_found)
    message, _ = _unavailable("varemi-tests/missing")
    assert "has no tokenizer.json" in message and "\n" not in message

    # unreachable hub, but the file is in the local cache: use it
    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to host")

    def download(repo_id, filename, local_files_only=False, **kwargs):
        if not local_files_only:
            raise AssertionError("must not download when the metadata request failed")
        return str(builtin_copy)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    base = vt.load_base_tokenizer("varemi-tests/cached")
    assert base.path == builtin_copy and base.source == "varemi-tests/cached"

    # offline with the file cached: use it without any request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert vt.load_base_tokenizer("varemi-tests/cached").path == builtin_copy

    def nothing_cached(*args, **kwargs):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", nothing_cached)
    _unavailable("varemi-tests/cached")


# ----------------------------------------------------------------- a dataset's tokenizer


def write_dataset(out: Path, bins: int = 9) -> dict[str, int]:
    tok = vt.load_base_tokenizer("builtin").tokenizer
    ids = vt.add_conditioning_tokens(tok, bins)
    vt.save_tokenizer(tok, out / "tokenizer.json")
    info = {
        "format_version": 1,
        "tokenizer": {"source": "builtin", "base_vocab_size": 1000, "vocab_size": len(tok)},
        "conditioning_tokens": ids,
        "params": {"bins": bins},
    }
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return ids


def test_load_tokenizer_and_conditioning_ids(tmp_path):
    ids = write_dataset(tmp_path)
    tok = vocabulary.load_tokenizer(tmp_path)
    assert len(tok) == 1018
    assert {name: tok.vocab[name] for name in BINS9} == ids
    assert vocabulary.conditioning_ids(tmp_path, 0, 0) == (1004, 1013)
    assert vocabulary.conditioning_ids(str(tmp_path), -4, 4) == (1000, 1017)
    assert vocabulary.conditioning_ids(tmp_path, np.int8(2), np.int64(-3)) == (1006, 1010)
    for bad in ((5, 0), (0, -5), (True, 0), (0.0, 0), ("1", 0)):
        with pytest.raises(BinsError):
            vocabulary.conditioning_ids(tmp_path, *bad)


def test_conditioning_ids_bins3(tmp_path):
    write_dataset(tmp_path, bins=3)
    assert vocabulary.conditioning_ids(tmp_path, -1, 1) == (1000, 1005)
    with pytest.raises(BinsError, match=r"-1\.\.1"):
        vocabulary.conditioning_ids(tmp_path, 2, 0)


def test_load_tokenizer_mismatch(tmp_path):
    ids = write_dataset(tmp_path)
    info_path = tmp_path / "dataset_info.json"
    info = json.loads(info_path.read_text())

    info["conditioning_tokens"] = {name: i + 1 for name, i in ids.items()}
    info_path.write_text(json.dumps(info))
    with pytest.raises(vt.TokenizerMismatchError, match="does not belong"):
        vocabulary.load_tokenizer(tmp_path)

    info["conditioning_tokens"] = dict(reversed(list(ids.items())))
    info_path.write_text(json.dumps(info))
    with pytest.raises(vt.TokenizerMismatchError, match="in that order"):
        vocabulary.load_tokenizer(tmp_path)

    info["conditioning_tokens"] = ["[VAL=-4]"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetInfoError, match="object from token string"):
        vocabulary.load_tokenizer(tmp_path)

    info_path.unlink()
    with pytest.raises(DatasetInfoError, match="not a varemi dataset"):
        vocabulary.load_tokenizer(tmp_path)
    with pytest.raises(DatasetInfoError):
        vocabulary.conditioning_ids(tmp_path, 0, 0)


def test_load_tokenizer_other_tokenizer(tmp_path):
    """A tokenizer.json from another dataset (conditioning tokens missing)."""
    write_dataset(tmp_path)
    shutil.copyfile(vt.builtin_tokenizer_path(), tmp_path / "tokenizer.json")
    with pytest.raises(vt.TokenizerMismatchError, match="has id None"):
        vocabulary.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(vt.TokenizerError, match="no tokenizer.json"):
        vocabulary.load_tokenizer(tmp_path)


def test_public_api_from_package(tmp_path):
    import varemi

    write_dataset(tmp_path)
    assert varemi.conditioning_ids(tmp_path, 1, -1) == (1005, 1012)
    assert len(varemi.load_tokenizer(tmp_path)) == 1018


_NO_TORCH_PROBE = """
import sys
from varemi.music import tokenizer as vocab
tok = vocab.load_base_tokenizer("builtin").tokenizer
print("torch" in sys.modules, type(tok).__name__)
import torch, miditok.pytorch_data  # both still import when asked for
print(torch.tensor([1]).sum().item(), miditok.pytorch_data.DataCollator.__name__)
"""


def test_loading_a_tokenizer_does_not_import_torch():
    """MidiTok imports torch for its optional pytorch_data module; varemi hides it (about
    1 s and 500 MiB per build process) and torch still imports afterwards."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: nothing to hide")
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_PROBE], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "REMI", "1", "DataCollator"]
