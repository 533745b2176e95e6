"""MidiTok's BPE step, natively: base token ids to exactly the ids ``tokenizer.encode`` gives.

MidiTok 3.1 (``MusicTokenizer.encode_token_ids``) encodes a sequence of base ids with its
trained model in three steps, all reproduced here:

1. **Bytes.** Every base id becomes one character, ``tokenizer._vocab_base_id_to_byte``
   (``chr(id + 33)`` unless given otherwise).
2. **Split.** With ``config.encode_ids_split == "bar"`` (the default) the sequence is cut
   per bar, with ``"beat"`` per beat, with ``"no"`` not at all
   (``TokSequence.split_per_bars``/``split_per_beats``). MidiTok cuts where the *time* of
   the events reaches the next bar or beat tick of the score; for REMI without time
   signatures or rests that is exactly: before every ``Bar_*`` token but the first
   one, and (``"beat"``) before every token that reaches a later beat than all tokens
   before it (``Position_p`` lies in beat ``p // max_num_pos_per_beat`` of its bar).
   :func:`split_offsets` computes these cuts from the base ids alone.
3. **Model.** The chunks go to the Hugging Face tokenizer ``tokenizer._model`` as one
   pre-tokenized input: its added tokens (MidiTok's special tokens, tokens added with
   ``add_to_vocab``) split each chunk and become their own ids; its ``Metaspace``
   pre-tokenizer (when trained with a split) puts ``▁`` before every remaining piece;
   its BPE model maps each character to its vocabulary id (dropping unknown ones) and
   merges pairs lowest rank first, leftmost first. The native ``BpeModel``
   (``crates/varemi-core/src/bpe.rs``) does this on ids, caching each distinct chunk.

:meth:`NativeBPE.from_tokenizer` refuses, with :class:`~varemi._base.errors.UnsupportedConfig`,
every tokenizer whose pipeline holds anything else (dropout, an unknown token, a
normalizer, a post-processor, multi-character added tokens, time signatures, rests...).
Equality with MidiTok is tested on random sequences against the Hugging Face model and
on real corpora with the Maestro-REMI-bpe20k configuration, split per bar, per beat and
not at all (``tests/test_bpe.py``); other REMI options (programs, chords, tempos,
pedals) keep the ``Bar`` invariant the split relies on but are not tested.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from varemi import _native
from varemi._base.errors import UnknownTokenIdError, UnsupportedConfig

if TYPE_CHECKING:
    from miditok import MusicTokenizer

SPLITS = ("bar", "beat", "no")
"""The values of MidiTok's ``config.encode_ids_split``."""

_METASPACE_DEFAULT_REPLACEMENT = "\u2581"


def split_offsets(
    base_ids: npt.ArrayLike,
    split: str,
    bar_mask: npt.NDArray[np.bool_],
    position_beat: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Where MidiTok cuts a REMI sequence of base ids before BPE (per bar, beat, or not).

    MidiTok's ``TokSequence._split_per_ticks`` starts a chunk at the first event whose
    time reaches each bar (or beat) tick after the first (tick 0). In a REMI sequence
    (no time signatures, no rests) the bar ticks are reached by the ``Bar`` tokens, so
    a chunk starts at every ``Bar`` token but the first one (wherever it is); a beat
    tick is reached by the first token whose beat is later than that of every token
    before it (tokens before the first ``Bar``/``Position`` are at time 0). Empty
    chunks (beats without events) are left out: they encode to nothing.

    Args:
        base_ids: 1-D integer base ids (before BPE).
        split: ``"bar"``, ``"beat"`` or ``"no"``.
        bar_mask: Boolean per base id: True for ``Bar_*`` tokens (``Bar_End`` excluded).
        position_beat: Per base id: the beat within the bar of a ``Position_p`` token
            (``p // max_num_pos_per_beat``), -1 for every other token. Needed for
            ``"beat"`` only.

    Returns:
        int64 chunk offsets: ``[0, ..., len(base_ids)]``, strictly increasing inside
        (``[0]`` for an empty sequence), chunk ``k`` being ``base_ids[o[k]:o[k+1]]``.

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`, or ``"beat"`` without
            ``position_beat``.
        UnknownTokenIdError: an id outside ``bar_mask``.
    """
    ids = np.asarray(base_ids)
    n = len(ids)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    if split == "no":
        return np.array([0, n], dtype=np.int64)
    _check_range(ids, len(bar_mask))
    is_bar = bar_mask[ids]
    if split == "bar":
        starts = np.flatnonzero(is_bar)[1:]
    else:
        if position_beat is None:
            raise ValueError('split "beat" needs position_beat')
        # Beat of each token within its bar: that of the last Bar (0) or Position token
        # at or before it; bar = Bar tokens so far, minus one. Tokens before the first
        # Bar or Position are at time 0: bar 0, beat 0.
        bar = np.maximum(np.cumsum(is_bar, dtype=np.int64) - 1, 0)
        event_beat = np.where(is_bar, 0, position_beat[ids])
        last = np.maximum.accumulate(np.where(event_beat >= 0, np.arange(n), -1))
        beat = np.where(last >= 0, event_beat[np.maximum(last, 0)], 0)
        span = int(position_beat.max(initial=0)) + 1
        key = bar * span + beat
        running = np.maximum.accumulate(key)
        starts = np.flatnonzero(key[1:] > running[:-1]) + 1
    return np.concatenate(([0], starts, [n])).astype(np.int64)


def _check_range(ids: np.ndarray, size: int) -> None:
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"base ids must be integers, got {ids.dtype}")
    if len(ids) == 0:
        return
    bad = np.flatnonzero((ids < 0) | (ids >= size))
    if len(bad):
        i = int(bad[0])
        raise UnknownTokenIdError(
            f"base id {int(ids[i])} at index {i} is not in the tokenizer's base vocabulary"
        )


class NativeBPE:
    """MidiTok's BPE step for one tokenizer, native; build it with :meth:`from_tokenizer`.

    Attributes:
        split: The tokenizer's ``encode_ids_split`` (``"bar"``, ``"beat"`` or ``"no"``).
        trained: False for an untrained tokenizer: :meth:`encode` returns its input.
    """

    def __init__(
        self,
        model: _native.BpeModel | None,
        split: str,
        bar_mask: npt.NDArray[np.bool_],
        position_beat: npt.NDArray[np.int64] | None,
        base_vocab_size: int,
    ) -> None:
        """Use :meth:`from_tokenizer`; the arguments are its results."""
        self._model = model
        self.split = split
        self._bar_mask = bar_mask
        self._position_beat = position_beat
        self._base_vocab_size = base_vocab_size
        self.trained = model is not None

    @classmethod
    def from_tokenizer(cls, tokenizer: MusicTokenizer) -> NativeBPE:
        """Read a MidiTok tokenizer's model, merges and split, and build the native encoder.

        Args:
            tokenizer: A MidiTok 3.1 tokenizer (REMI for the ``"bar"`` and ``"beat"``
                splits), BPE-trained or not.

        Returns:
            The encoder; for an untrained tokenizer, one whose :meth:`encode` returns
            the base ids unchanged (MidiTok does not encode them either).

        Raises:
            UnsupportedConfig: The tokenizer's BPE step holds something this encoder
                does not reproduce exactly (see the module docstring).
        """
        if getattr(tokenizer, "is_multi_voc", False):
            raise UnsupportedConfig("multi-vocabulary tokenizers are not supported")
        vocab_base: dict[str, int] = dict(tokenizer.vocab)
        size = max(vocab_base.values(), default=-1) + 1
        split = tokenizer.config.encode_ids_split
        if not tokenizer.is_trained:
            return cls(None, split, np.zeros(size, dtype=bool), None, size)
        if split not in SPLITS:
            raise UnsupportedConfig(f"encode_ids_split {split!r} is not one of {SPLITS}")
        bar_mask, position_beat = _split_tables(tokenizer, vocab_base, size, split)
        spec = json.loads(tokenizer._model.to_str())  # noqa: SLF001 - MidiTok keeps it private
        replacement = _check_pipeline(spec)
        model = spec["model"]
        vocab: dict[str, int] = model["vocab"]
        added = _added_tokens(spec)
        id_to_byte: dict[int, str] = tokenizer._vocab_base_id_to_byte  # noqa: SLF001
        symbols = np.full(size, -1, dtype=np.int64)
        is_added = np.zeros(size, dtype=bool)
        for base_id, byte in id_to_byte.items():
            if not isinstance(byte, str) or len(byte) != 1:
                raise UnsupportedConfig(f"base id {base_id} maps to {byte!r}, not one character")
            if byte == " " or byte == replacement:
                raise UnsupportedConfig(
                    f"base id {base_id} maps to {byte!r}, which the pre-tokenizer rewrites"
                )
            if not 0 <= base_id < size:
                raise UnsupportedConfig(f"base id {base_id} is outside the base vocabulary")
            if byte in added:
                symbols[base_id], is_added[base_id] = added[byte], True
            elif byte in vocab:
                symbols[base_id] = vocab[byte]
            else:
                symbols[base_id] = -2  # the model drops a character it does not know
        prefix = vocab.get(replacement) if replacement is not None else None
        left, right, new = _merges(model)
        native = _native.BpeModel(symbols, is_added, prefix, left, right, new)
        return cls(native, split, bar_mask, position_beat, size)

    def split_offsets(self, base_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The chunk offsets MidiTok would cut ``base_ids`` at (see :func:`split_offsets`).

        Args:
            base_ids: 1-D integer base ids.

        Returns:
            int64 offsets from 0 to ``len(base_ids)``.

        Raises:
            UnknownTokenIdError: an id outside the base vocabulary.
        """
        return split_offsets(base_ids, self.split, self._bar_mask, self._position_beat)

    def encode(self, base_ids: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """Encode one sequence of base ids as ``tokenizer.encode(score).ids`` would.

        Args:
            base_ids: 1-D integer base ids of one sequence, as
                ``tokenizer.encode(score, encode_ids=False)`` gives them.

        Returns:
            int32 ids after BPE (a copy of the input for an untrained tokenizer).

        Raises:
            TypeError: ``base_ids`` is not a 1-D integer array.
            UnknownTokenIdError: an id outside the base vocabulary (MidiTok raises
                ``KeyError`` there).
        """
        ids = np.asarray(base_ids)
        if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError(f"base_ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        if self._model is None:
            return ids.astype(np.int32)
        if ids.dtype != np.int32:  # check before the cast, which would wrap
            _check_range(ids.astype(np.int64, copy=False), self._base_vocab_size)
        ids32 = np.ascontiguousarray(ids, dtype=np.int32)
        return self._model.encode(ids32, self.split_offsets(ids32))


def _split_tables(
    tokenizer: MusicTokenizer, vocab_base: dict[str, int], size: int, split: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64] | None]:
    """The Bar mask and Position beats of a REMI tokenizer whose splits we reproduce."""
    bar_mask = np.zeros(size, dtype=bool)
    if split == "no":
        return bar_mask, None
    config = tokenizer.config
    if type(tokenizer).__name__ != "REMI":
        raise UnsupportedConfig(
            f"encode_ids_split={split!r} is reproduced for REMI only, not "
            f"{type(tokenizer).__name__}"
        )
    if config.use_time_signatures:
        raise UnsupportedConfig("REMI with time signatures: bars are not all 4/4")
    if config.use_rests:
        raise UnsupportedConfig("REMI with rests: a rest crosses bars without Bar tokens")
    params = config.additional_params
    if params.get("use_bar_end_tokens") or params.get("max_bar_embedding") is not None:
        raise UnsupportedConfig("REMI with Bar_End tokens or bar embeddings")
    for token, i in vocab_base.items():
        if token.startswith("Bar_"):
            bar_mask[i] = True
    if split == "bar":
        return bar_mask, None
    per_beat = config.max_num_pos_per_beat
    position_beat = np.full(size, -1, dtype=np.int64)
    for token, i in vocab_base.items():
        if token.startswith("Position_"):
            position_beat[i] = int(token.split("_", 1)[1]) // per_beat
    return bar_mask, position_beat


def _check_pipeline(spec: dict[str, Any]) -> str | None:
    """Refuse every part of the HF tokenizer we do not reproduce; return the Metaspace char."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise UnsupportedConfig(f"the tokenizer's model is {model.get('type')!r}, not BPE")
    if model.get("dropout") not in (None, 0.0):
        raise UnsupportedConfig(f"BPE dropout {model['dropout']} is random")
    if model.get("unk_token") is not None:
        raise UnsupportedConfig("BPE with an unk_token")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key) not in (None, ""):
            raise UnsupportedConfig(f"BPE with {key}={model[key]!r}")
    for key in ("byte_fallback", "ignore_merges"):
        if model.get(key):
            raise UnsupportedConfig(f"BPE with {key}=True")
    for key in ("normalizer", "post_processor", "truncation", "padding"):
        if spec.get(key) is not None:
            raise UnsupportedConfig(f"the tokenizer has a {key}")
    pre = spec.get("pre_tokenizer")
    if pre is None:
        return None
    if pre.get("type") != "Metaspace":
        raise UnsupportedConfig(f"pre-tokenizer {pre.get('type')!r}")
    scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
    if scheme != "always" or not pre.get("split", True):
        raise UnsupportedConfig(
            f"Metaspace with prepend_scheme={scheme!r}, split={pre.get('split')}"
        )
    replacement = pre.get("replacement", _METASPACE_DEFAULT_REPLACEMENT)
    if not isinstance(replacement, str) or len(replacement) != 1:
        raise UnsupportedConfig(f"Metaspace replacement {replacement!r}")
    return replacement


def _added_tokens(spec: dict[str, Any]) -> dict[str, int]:
    """Added tokens (content to id); only single characters matched anywhere are covered."""
    added: dict[str, int] = {}
    for token in spec.get("added_tokens") or []:
        content = token["content"]
        if len(content) != 1:
            raise UnsupportedConfig(f"added token {content!r} is not one character")
        if token.get("single_word") or token.get("lstrip") or token.get("rstrip"):
            raise UnsupportedConfig(f"added token {content!r} with single_word/lstrip/rstrip")
        added[content] = int(token["id"])
    return added


def _merges(model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merges as (left, right, new) id arrays in rank order, as tokenizers reads them."""
    vocab: dict[str, int] = model["vocab"]
    left, right, new = [], [], []
    for rank, merge in enumerate(model.get("merges") or []):
        if isinstance(merge, str):
            parts = merge.split(" ")
            if len(parts) != 2:
                raise UnsupportedConfig(f"merge {rank} {merge!r} is not two tokens")
            a, b = parts
        else:
            a, b = merge
        try:
            left.append(vocab[a])
            right.append(vocab[b])
            new.append(vocab[a + b])
        except KeyError as e:
            raise UnsupportedConfig(f"merge {rank} ({a!r}, {b!r}) is not in the vocabulary") from e
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return as_array(left), as_array(right), as_array(new)
