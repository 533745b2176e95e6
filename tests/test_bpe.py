"""varemi.music.encoder.bpe.NativeBPE: MidiTok's BPE step, native, equal to MidiTok id for id.

Three levels:
- hypothesis: random base-id sequences (rich in learned tokens, special tokens and
  conditioning tokens), cut at random or at MidiTok's offsets, against the Hugging Face
  model MidiTok calls (``tokenizer._model.encode_batch(..., is_pretokenized=True)``);
- edge cases and refusals (empty, no Bar, unknown ids, bad dtypes, UnsupportedConfig);
- the real corpora (slow): ``NativeBPE.encode(base) == tokenizer.encode(score).ids`` for
  every sequence of every file, with the builtin tokenizer and two tokenizers trained
  here, split per bar, per beat and not at all.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import miditok
import numpy as np
import pytest
import symusic
from hypothesis import given
from hypothesis import strategies as st

from varemi._base.errors import OffsetsError, UnknownTokenIdError, UnsupportedConfig, VaremiError
from varemi.music.encoder.bpe import NativeBPE, split_offsets
from varemi.music.tokenizer import add_conditioning_tokens, builtin_tokenizer_path, maestro_config

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
CORPUS_DIRS = ("pop909", "vgmidi/phrases", "miditok_tests")


def load_builtin(split: str = "bar"):
    tokenizer = miditok.REMI(params=builtin_tokenizer_path())
    tokenizer.config.encode_ids_split = split
    return tokenizer


def hf_encode(tokenizer, base_ids, offsets) -> list[int]:
    """What MidiTok's model gives for base ids cut at ``offsets`` (encode_token_ids' call)."""
    to_byte = tokenizer._vocab_base_id_to_byte
    words = [
        "".join(to_byte[int(i)] for i in base_ids[a:b])
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    return tokenizer._model.encode_batch([words], is_pretokenized=True)[0].ids


def miditok_bpe(tokenizer, seq) -> list[int]:
    """``tokenizer.encode_token_ids`` on a fresh copy of a base sequence."""
    fresh = replace(seq, ids=list(seq.ids), bytes="", are_ids_encoded=False)
    tokenizer.encode_token_ids(fresh)
    return list(fresh.ids)


def learned_pieces(tokenizer) -> list[list[int]]:
    """Base-id expansions of every learned token: sequences that trigger merges."""
    vocab = tokenizer.vocab
    pieces = []
    for tokens in tokenizer._vocab_learned_bytes_to_tokens.values():
        if tokens and all(t in vocab for t in tokens):
            pieces.append([vocab[t] for t in tokens])
    return pieces


def sequences(tokenizer, extra_ids=()):
    """Random base sequences: runs of learned tokens, single base ids, Bars, specials."""
    base_ids = sorted(set(tokenizer.vocab.values()) | set(extra_ids))
    pieces = learned_pieces(tokenizer)
    element = st.one_of(
        st.sampled_from(pieces).map(list),
        st.sampled_from(base_ids).map(lambda i: [i]),
        st.just([tokenizer.vocab["Bar_None"]]),
        st.sampled_from(list(tokenizer.special_tokens_ids)).map(lambda i: [i]),
    )
    return st.lists(element, max_size=40).map(
        lambda parts: np.array([i for p in parts for i in p], dtype=np.int32)
    )


BUILTIN = load_builtin()
BUILTIN_NATIVE = NativeBPE.from_tokenizer(BUILTIN)


# --------------------------------------------------------------------------- hypothesis
@given(base=sequences(BUILTIN), data=st.data())
def test_random_chunks_equal_the_hf_model(base, data):
    cuts = data.draw(st.lists(st.integers(0, len(base)), max_size=8))
    offsets = np.array(sorted([0, len(base), *cuts]), dtype=np.int64)
    got = BUILTIN_NATIVE._model.encode(base, offsets)
    assert got.dtype == np.int32
    assert got.tolist() == hf_encode(BUILTIN, base, offsets)


@pytest.mark.parametrize("split", ["bar", "beat", "no"])
@given(base=sequences(BUILTIN))
def test_random_sequences_equal_the_hf_model(split, base):
    native = NativeBPE.from_tokenizer(load_builtin(split)) if split != "bar" else BUILTIN_NATIVE
    offsets = native.split_offsets(base)
    assert offsets[0] == 0 and offsets[-1] == len(base)
    assert np.all(np.diff(offsets) > 0)
    assert native.encode(base).tolist() == hf_encode(BUILTIN, base, offsets)


def test_random_sequences_with_conditioning_tokens():
    tokenizer = load_builtin()
    add_conditioning_tokens(tokenizer, 9)
    native = NativeBPE.from_tokenizer(tokenizer)
    conditioning = range(1000, 1018)

    @given(base=sequences(tokenizer, conditioning))
    def check(base):
        expected = hf_encode(tokenizer, base, native.split_offsets(base))
        assert native.encode(base).tolist() == expected

    check()
    assert native.encode(np.array([1000, 1017], dtype=np.int32)).tolist() == [1000, 1017]


def test_bar_offsets_start_a_chunk_at_every_bar_but_the_first():
    bar, pos0, pitch = (BUILTIN.vocab[t] for t in ("Bar_None", "Position_0", "Pitch_60"))
    ids = np.array([bar, pos0, pitch, bar, bar, pos0, pitch, bar], dtype=np.int32)
    assert BUILTIN_NATIVE.split_offsets(ids).tolist() == [0, 3, 4, 7, 8]
    # Tokens before the first Bar (attribute controls, in MidiTok) stay in its chunk.
    ids = np.array([pos0, pitch, bar, pitch, bar], dtype=np.int32)
    assert BUILTIN_NATIVE.split_offsets(ids).tolist() == [0, 4, 5]


def test_beat_offsets_follow_positions():
    v = BUILTIN.vocab
    bar, pitch = v["Bar_None"], v["Pitch_60"]
    pos = {p: v[f"Position_{p}"] for p in (0, 3, 8, 9, 24)}
    # 8 positions per beat: Position_0/3 in beat 0, 8/9 in beat 1, 24 in beat 3.
    ids = [bar, pos[0], pitch, pos[3], pitch, pos[8], pitch, pos[9], pitch, pos[24], pitch, bar]
    offsets = split_offsets(
        np.array(ids),
        "beat",
        BUILTIN_NATIVE._bar_mask,
        NativeBPE.from_tokenizer(load_builtin("beat"))._position_beat,
    )
    assert offsets.tolist() == [0, 5, 9, 11, 12]


# --------------------------------------------------------------------------- edge cases
def test_empty_sequence():
    for split in ("bar", "beat", "no"):
        native = NativeBPE.from_tokenizer(load_builtin(split))
        assert native.split_offsets(np.array([], dtype=np.int32)).tolist() == [0]
        out = native.encode(np.array([], dtype=np.int32))
        assert out.dtype == np.int32 and out.tolist() == []
    assert hf_encode(BUILTIN, [], [0, 0]) == []
    assert BUILTIN_NATIVE.encode([]).tolist() == []


def test_sequence_without_bar():
    v = BUILTIN.vocab
    ids = np.array([v["Position_0"], v["Pitch_60"], v["Velocity_63"], v["Duration_1.0.4"]] * 3)
    assert BUILTIN_NATIVE.split_offsets(ids).tolist() == [0, len(ids)]
    assert BUILTIN_NATIVE.encode(ids).tolist() == hf_encode(BUILTIN, ids, [0, len(ids)])


def test_special_tokens_split_chunks():
    v = BUILTIN.vocab
    bar, pos0, bos, eos = v["Bar_None"], v["Position_0"], v["BOS_None"], v["EOS_None"]
    ids = np.array([bos, bar, pos0, eos], dtype=np.int32)
    assert BUILTIN_NATIVE.encode(ids).tolist() == hf_encode(BUILTIN, ids, [0, 4])


@pytest.mark.parametrize("bad", [-1, 162, 1000, 2**31 - 1])
def test_unknown_ids_raise(bad):
    v = BUILTIN.vocab
    ids = np.array([v["Bar_None"], bad], dtype=np.int64)
    with pytest.raises(UnknownTokenIdError, match=f"base id {bad} at index 1"):
        BUILTIN_NATIVE.encode(ids)
    with pytest.raises(UnknownTokenIdError):
        BUILTIN_NATIVE._model.encode(ids.astype(np.int32), np.array([0, 2], dtype=np.int64))
    seq = miditok.TokSequence(ids=ids.tolist(), tokens=["Bar_None", "?"])
    with pytest.raises(KeyError):  # what MidiTok itself does with it
        BUILTIN.encode_token_ids(seq)
    with pytest.raises(UnknownTokenIdError):
        BUILTIN_NATIVE.encode(np.array([2**40], dtype=np.int64))
    assert issubclass(UnknownTokenIdError, VaremiError)


def test_bad_arrays_raise_type_error():
    model = BUILTIN_NATIVE._model
    ok_offsets = np.array([0, 1], dtype=np.int64)
    for bad in (np.array([5], dtype=np.int64), np.array([5.0]), [5]):
        with pytest.raises(TypeError, match="base_ids"):
            model.encode(bad, ok_offsets)
    with pytest.raises(TypeError, match="split_offsets"):
        model.encode(np.array([5], dtype=np.int32), np.array([0, 1], dtype=np.int32))
    with pytest.raises(TypeError):
        model.encode(np.zeros((2, 2), dtype=np.int32), ok_offsets)
    with pytest.raises(TypeError):
        BUILTIN_NATIVE.encode(np.array([5.0, 6.0]))
    with pytest.raises(TypeError):
        BUILTIN_NATIVE.encode(np.zeros((2, 2), dtype=np.int32))


@pytest.mark.parametrize("offsets", [[], [1, 2], [0, 1], [0, 3], [0, 2, 1, 2]])
def test_bad_offsets_raise(offsets):
    with pytest.raises(OffsetsError):
        BUILTIN_NATIVE._model.encode(
            np.array([5, 5], dtype=np.int32), np.array(offsets, dtype=np.int64)
        )


def test_threads_share_one_model():
    tokenizer = load_builtin()
    native = NativeBPE.from_tokenizer(tokenizer)
    rng = np.random.default_rng(0)
    pieces = learned_pieces(tokenizer)
    seqs = [
        np.array([i for k in rng.integers(0, len(pieces), 300) for i in pieces[k]], dtype=np.int32)
        for _ in range(8)
    ]
    expected = [NativeBPE.from_tokenizer(tokenizer).encode(s).tolist() for s in seqs]
    results: dict[int, list[int]] = {}

    def work(k: int) -> None:
        for _ in range(20):
            results[k] = native.encode(seqs[k]).tolist()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[k] for k in range(8)] == expected
    assert native._model.cache_size > 0
    native._model.clear_cache()
    assert native._model.cache_size == 0


def test_untrained_tokenizer_is_identity():
    tokenizer = miditok.REMI(maestro_config())
    native = NativeBPE.from_tokenizer(tokenizer)
    assert not native.trained
    ids = np.array([5, 6, 7], dtype=np.int64)
    out = native.encode(ids)
    assert out.dtype == np.int32 and out.tolist() == [5, 6, 7]


def with_model_json(tokenizer, edit):
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer._model.to_str())
    edit(spec)
    tokenizer._model = Tokenizer.from_str(json.dumps(spec))
    return tokenizer


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s["model"].update(dropout=0.1), "dropout"),
        (lambda s: s["model"].update(unk_token="!"), "unk_token"),
        (lambda s: s["model"].update(ignore_merges=True), "ignore_merges"),
        # (a continuing_subword_prefix makes tokenizers itself abort on these merges)
        (lambda s: s["model"].update(end_of_word_suffix="</w>"), "end_of_word_suffix"),
        (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer"),
        (
            lambda s: s["pre_tokenizer"].update(prepend_scheme="first"),
            "prepend_scheme",
        ),
        (lambda s: s.update(normalizer={"type": "Lowercase"}), "normalizer"),
    ],
)
def test_unsupported_models_raise(edit, match):
    tokenizer = with_model_json(load_builtin(), edit)
    with pytest.raises(UnsupportedConfig, match=match) as info:
        NativeBPE.from_tokenizer(tokenizer)
    assert isinstance(info.value, VaremiError) and info.value.reason


def test_unsupported_tokenizers_raise():
    tokenizer = load_builtin()
    tokenizer._model.add_tokens(["ab"])
    with pytest.raises(UnsupportedConfig, match="one character"):
        NativeBPE.from_tokenizer(tokenizer)

    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    tokenizer = load_builtin()
    tokenizer._model = Tokenizer(WordPiece({"!": 0, "&": 1}, unk_token="!"))
    with pytest.raises(UnsupportedConfig, match="not BPE"):
        NativeBPE.from_tokenizer(tokenizer)

    tokenizer = load_builtin()
    tokenizer.config.use_time_signatures = True
    with pytest.raises(UnsupportedConfig, match="time signatures"):
        NativeBPE.from_tokenizer(tokenizer)
    tokenizer.config.encode_ids_split = "no"  # no bars to find: fine
    NativeBPE.from_tokenizer(tokenizer)

    tokenizer = load_builtin()
    tokenizer.config.use_rests = True
    with pytest.raises(UnsupportedConfig, match="rests"):
        NativeBPE.from_tokenizer(tokenizer)


# --------------------------------------------------------------------------- corpora
corpora = pytest.mark.skipif(not CORPORA.is_dir(), reason="../shared/corpora absent")


def midi_files(folder: str) -> list[Path]:
    root = CORPORA / folder
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi"))


def read_scores(folder: str) -> list[tuple[str, object]]:
    scores = []
    for path in midi_files(folder):
        try:
            scores.append((path.name, symusic.Score(path)))
        except Exception:  # noqa: S112 - corrupt test files: MidiTok cannot read them either
            continue
    return scores


@pytest.fixture(scope="module")
def trained_tokenizers():
    """Two BPE tokenizers trained here: per bar (600 ids) and unsplit (450 ids)."""
    if not CORPORA.is_dir():
        pytest.skip("../shared/corpora absent")
    files = midi_files("pop909")[:6]
    out = {}
    for split, size in (("bar", 600), ("no", 450)):
        config = maestro_config()
        config.encode_ids_split = split
        tokenizer = miditok.REMI(config)
        tokenizer.train(vocab_size=size, model="BPE", files_paths=files)
        assert len(tokenizer) == size
        out[split] = tokenizer
    return out


@pytest.fixture(scope="module", params=CORPUS_DIRS)
def corpus(request):
    """(name, [(file, score, [base TokSequence per track])]) for one corpus."""
    if not (CORPORA / request.param).is_dir():
        pytest.skip(f"../shared/corpora/{request.param} absent")
    tokenizer = load_builtin()
    entries = []
    for name, score in read_scores(request.param):
        try:
            base = tokenizer.encode(score.copy(), encode_ids=False)
        except Exception:  # noqa: S112 - a file MidiTok cannot tokenize is no BPE case
            continue
        entries.append((name, score, base if isinstance(base, list) else [base]))
    assert entries
    return request.param, entries


@pytest.mark.slow
@corpora
def test_corpus_equals_tokenizer_encode(corpus):
    """The contract itself: base ids -> NativeBPE == tokenizer.encode(score).ids."""
    _, entries = corpus
    tokenizer = load_builtin()
    native = NativeBPE.from_tokenizer(tokenizer)
    mismatches, n = [], 0
    for name, score, base in entries:
        full = tokenizer.encode(score.copy())
        full = full if isinstance(full, list) else [full]
        assert len(full) == len(base)
        for b, f in zip(base, full, strict=True):
            n += 1
            if native.encode(np.array(b.ids, dtype=np.int32)).tolist() != list(f.ids):
                mismatches.append(name)
    assert n > 0 and mismatches == []


@pytest.mark.slow
@corpora
@pytest.mark.parametrize(
    "variant", ["builtin-bar", "builtin-beat", "builtin-no", "trained-bar", "trained-no"]
)
def test_corpus_equals_encode_token_ids(corpus, trained_tokenizers, variant):
    """Every tokenizer and split: NativeBPE == tokenizer.encode_token_ids(base sequence).

    ``tokenizer.encode(score)`` is exactly ``encode(score, encode_ids=False)`` followed
    by ``encode_token_ids`` on the same sequences, so this is the same contract without
    tokenizing every file once more per variant.
    """
    _, entries = corpus
    which, split = variant.split("-")
    if which == "builtin":
        tokenizer = load_builtin(split)
    else:
        tokenizer = trained_tokenizers[split]
        assert tokenizer.vocab == BUILTIN.vocab  # same base vocabulary: same base ids
    native = NativeBPE.from_tokenizer(tokenizer)
    merged_ids = {i for token, i in tokenizer._model.get_vocab().items() if len(token) > 1}
    mismatches, n, merged = [], 0, 0
    for name, _, base in entries:
        for seq in base:
            n += 1
            expected = miditok_bpe(tokenizer, seq)
            got = native.encode(np.array(seq.ids, dtype=np.int32)).tolist()
            merged += sum(i in merged_ids for i in got)
            if got != expected:
                mismatches.append(name)
    assert n > 0 and mismatches == []
    assert merged > 0  # the merges did something
