"""The base tokenizer (MidiTok REMI + BPE) and its conditioning tokens (contract 1).

A *base* tokenizer is loaded from the Hugging Face hub (``Natooz/Maestro-REMI-bpe20k`` by
default), from a local ``tokenizer.json`` or folder, or from the small tokenizer shipped
with varemi (``builtin``: the Maestro-REMI-bpe20k configuration, BPE-trained on the demo
corpus). The dataset build adds the conditioning tokens to it and saves the result as
``out/tokenizer.json``; training code reads that file back with :func:`load_tokenizer` and
asks :func:`conditioning_ids` for the two prefix ids of a mood.

MidiTok 3.1 pitfalls handled here:

- a tokenizer saved before MidiTok 3.0.6 with ``pitch_range`` (21, 109) holds Pitch_21..108
  only, while 3.0.6+ reads the bound as inclusive: :func:`vocab_pitch_range` gives the
  range that really is in the vocabulary;
- after ``add_to_vocab`` on a BPE-trained tokenizer, ``decode_token_ids`` raises
  ``KeyError`` on the new ids (a save and reload fixes that, but decoding a sequence that
  holds them to a score still fails): :func:`ids_to_tokens` and :func:`decode_music` never
  hit it;
- ``use_time_signatures`` is on by default: :func:`maestro_config` passes every flag.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.options import DEFAULT_MODEL
from varemi.core.conditioning import (
    conditioning_token_strings,
    is_conditioning_token,
)

if TYPE_CHECKING:
    from miditok import REMI, TokenizerConfig
    from symusic import Score

SPECIAL_TOKENS = ("PAD", "MASK", "BOS", "EOS", "SEP")
"""The special tokens of the Maestro-REMI-bpe20k configuration (``PAD_None`` ...)."""
DEFAULT_TOKENIZER = DEFAULT_MODEL
"""The hub model whose tokenizer varemi builds datasets for."""

BUILTIN = "builtin"
"""``--tokenizer builtin``: the tokenizer shipped with varemi (no download)."""

TOKENIZER_FILE = "tokenizer.json"
DATASET_INFO_FILE = "dataset_info.json"
BUILTIN_FILE = "builtin_tokenizer.json"
HUB_TIMEOUT_S = 10.0
"""Seconds to wait for the hub before reporting it unreachable (no retries)."""

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class TokenizerError(VaremiError):
    """A tokenizer file that cannot be used: unreadable, not REMI, or already extended."""


class TokenizerUnavailableError(TokenizerError):
    """A hub tokenizer that cannot be downloaded (offline, unreachable or not found)."""


class DecodeError(VaremiError):
    """Token ids that MidiTok cannot decode to a score."""


class TokenizerMismatchError(TokenizerError):
    """A dataset's ``tokenizer.json`` whose conditioning ids differ from ``dataset_info.json``."""


@dataclass
class BaseTokenizer:
    """A loaded base tokenizer (without conditioning tokens) and where it came from.

    Attributes:
        tokenizer: The MidiTok REMI tokenizer.
        source: What was asked for: the hub id, the path given, or ``"builtin"``.
        path: The ``tokenizer.json`` file that was loaded.
        sha256: Hex SHA-256 of that file's bytes.
        base_vocab_size: ``len(tokenizer)`` before any conditioning token is added.
        pitch_range: ``(low, high)`` inclusive pitches of the vocabulary's Pitch tokens.
    """

    tokenizer: REMI
    source: str
    path: Path
    sha256: str
    base_vocab_size: int
    pitch_range: tuple[int, int]


MAESTRO_CONFIG: dict = {
    "pitch_range": (21, 108),
    "beat_res": {(0, 1): 8, (1, 2): 4, (2, 4): 2, (4, 8): 1},
    "num_velocities": 16,
    "special_tokens": ["PAD", "MASK", "BOS", "EOS", "SEP"],
    "encode_ids_split": "bar",
    "use_velocities": True,
    "use_chords": False,
    "use_rests": False,
    "use_tempos": False,
    "use_time_signatures": False,
    "use_key_signatures": False,
    "use_sustain_pedals": False,
    "use_pitch_bends": False,
    "use_control_changes": False,
    "use_programs": False,
    "use_pitch_intervals": False,
    "use_pitchdrum_tokens": False,
    "remove_duplicated_notes": False,
    "sustain_pedal_duration": False,
    "program_changes": False,
}
"""Keyword arguments of :func:`maestro_config`: every flag of the configuration."""


def import_miditok():
    """MidiTok, imported (the first time) without PyTorch.

    MidiTok's optional ``pytorch_data`` module imports torch whenever it is installed
    (the ``train`` extra): about 1 s and over 500 MiB of memory in every build process,
    for classes varemi never uses. Hiding torch while MidiTok first imports makes
    MidiTok skip that module (it catches the ImportError); torch itself imports as
    usual afterwards (``finetune``), and so does ``miditok.pytorch_data`` if asked for.
    Where torch is already imported, MidiTok imports as it always does.

    Returns:
        The ``miditok`` module.
    """
    if "miditok" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails
        try:
            import miditok
        finally:
            del sys.modules["torch"]
    import miditok

    return miditok


def maestro_config() -> TokenizerConfig:
    """The configuration of ``Natooz/Maestro-REMI-bpe20k``, every flag given explicitly.

    REMI with pitches 21..108 (inclusive), 8/4/2/1 positions per beat over 0-1/1-2/2-4/4-8
    beats, 16 velocities, the special tokens PAD, MASK, BOS, EOS and SEP, and no chord,
    rest, tempo, program, time-signature, key-signature, sustain-pedal, pitch-bend,
    control-change, pitch-interval or drum-pitch tokens. BPE splits sequences per bar
    (``encode_ids_split="bar"``), the MidiTok 3 default, which is also what MidiTok 3.1
    applies to a tokenizer file saved before that option existed.

    Returns:
        A fresh :class:`miditok.TokenizerConfig`.
    """
    return import_miditok().TokenizerConfig(**copy.deepcopy(MAESTRO_CONFIG))


def vocab_pitch_range(tokenizer: REMI) -> tuple[int, int]:
    """The lowest and highest pitch that have a ``Pitch_N`` token in the vocabulary.

    This can differ from ``tokenizer.config.pitch_range``: a tokenizer saved before
    MidiTok 3.0.6 with ``pitch_range`` (21, 109) has Pitch_21..Pitch_108 only.

    Args:
        tokenizer: A MidiTok tokenizer.

    Returns:
        ``(low, high)``, both inclusive.

    Raises:
        TokenizerError: The vocabulary has no Pitch tokens.
    """
    pitches = [int(token[6:]) for token in tokenizer.vocab if token.startswith("Pitch_")]
    if not pitches:
        raise TokenizerError("the tokenizer has no Pitch_N tokens")
    return min(pitches), max(pitches)


def builtin_tokenizer_path() -> Path:
    """Path of the tokenizer shipped with varemi (``data/builtin_tokenizer.json``).

    Returns:
        The file's path inside the installed package.
    """
    return Path(str(resources.files("varemi") / "data" / BUILTIN_FILE))


def load_base_tokenizer(spec: str | Path = DEFAULT_TOKENIZER) -> BaseTokenizer:
    """Load a base REMI tokenizer from the hub, a local file or folder, or ``builtin``.

    Args:
        spec: ``"builtin"``; a folder holding ``tokenizer.json``; a tokenizer JSON file;
            or a Hugging Face hub model id whose ``tokenizer.json`` is downloaded (or
            taken from the local hub cache).

    Returns:
        The tokenizer with its source, file, SHA-256 and base vocabulary size.

    Raises:
        TokenizerUnavailableError: The hub cannot be reached, is switched off
            (``HF_HUB_OFFLINE``) or does not have the model, and it is not cached.
        TokenizerError: The file is missing, unreadable, not a MidiTok REMI tokenizer, or
            already holds conditioning tokens.
    """
    spec = str(spec)
    if spec == BUILTIN:
        path = builtin_tokenizer_path()
        if not path.is_file():
            raise TokenizerError(f"the builtin tokenizer is missing from the package: {path}")
    else:
        local = Path(spec).expanduser()
        if local.is_dir():
            path = local / TOKENIZER_FILE
            if not path.is_file():
                raise TokenizerError(f"tokenizer folder {spec!r} has no {TOKENIZER_FILE}")
        elif local.is_file():
            path = local
        elif _looks_like_path(spec):
            raise TokenizerError(f"tokenizer file or folder {spec!r} does not exist")
        else:
            path = _download_from_hub(spec)
    tokenizer = read_remi(path)
    if any(is_conditioning_token(token) for token in tokenizer.vocab):
        raise TokenizerError(
            f"tokenizer {spec!r} already holds conditioning tokens (a dataset's "
            "out/tokenizer.json?): pass the base tokenizer"
        )
    return BaseTokenizer(
        tokenizer=tokenizer,
        source=spec,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        base_vocab_size=len(tokenizer),
        pitch_range=vocab_pitch_range(tokenizer),
    )


def _looks_like_path(spec: str) -> bool:
    """Whether a spec that names no existing file is meant as a path, not a hub id."""
    return (
        spec.endswith(".json")
        or spec.startswith((".", "/", "~"))
        or "\\" in spec
        or spec.count("/") > 1
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().upper() for name in _OFFLINE_ENV)
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags) or bool(
        getattr(constants, "HF_HUB_OFFLINE", False)
    )


def _download_from_hub(repo_id: str) -> Path:
    """Download (or take from the hub cache) a model's ``tokenizer.json``.

    One metadata request with a short timeout comes first: ``hf_hub_download`` alone
    retries a failed connection with back-off for about 25 seconds before giving up.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise TokenizerError(
            f"--tokenizer {repo_id!r} is neither an existing file or folder nor a hub model id"
        ) from None
    hint = (
        f"pass --tokenizer PATH (a local {TOKENIZER_FILE} or a folder holding one) "
        f"or --tokenizer {BUILTIN}"
    )

    def cached() -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, TOKENIZER_FILE, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            return None

    if _hub_offline():
        path = cached()
        if path is None:
            raise TokenizerUnavailableError(
                f"cannot load tokenizer {repo_id!r}: the Hugging Face hub is switched off "
                f"(HF_HUB_OFFLINE) and the model is not in the local cache; {hint}"
            )
        return path
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, TOKENIZER_FILE), timeout=HUB_TIMEOUT_S)
        return Path(hf_hub_download(repo_id, TOKENIZER_FILE, etag_timeout=HUB_TIMEOUT_S))
    except LocalEntryNotFoundError as error:  # a subclass of EntryNotFoundError
        reason = _one_line(error)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise TokenizerUnavailableError(
            f"cannot load tokenizer {repo_id!r}: the Hugging Face hub has no {TOKENIZER_FILE} "
            f"for it (not found, private or gated: {type(error).__name__}); {hint}"
        ) from None
    except Exception as error:  # connection refused, DNS failure, timeout, HTTP error
        reason = _one_line(error)
    path = cached()
    if path is None:
        raise TokenizerUnavailableError(
            f"cannot load tokenizer {repo_id!r}: the Hugging Face hub could not be reached "
            f"({reason}); {hint}"
        )
    return path


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def read_remi(path: Path) -> REMI:
    """Load a MidiTok tokenizer file, checking first that it is one, and a REMI one."""
    REMI = import_miditok().REMI  # noqa: N806 (the class)

    try:
        params = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(f"{path} is not a JSON tokenizer file ({_one_line(error)})") from None
    if not isinstance(params, dict) or "tokenization" not in params:
        raise TokenizerError(f"{path} is not a MidiTok tokenizer file (no 'tokenization' key)")
    if params["tokenization"] != "REMI":
        raise TokenizerError(
            f"{path} is a {params['tokenization']} tokenizer; varemi needs a REMI tokenizer"
        )
    try:
        return REMI(params=path)
    except Exception as error:  # MidiTok raises anything on a damaged file
        raise TokenizerError(f"cannot load tokenizer file {path}: {_one_line(error)}") from None


def add_conditioning_tokens(tokenizer: REMI, bins: int = 9) -> dict[str, int]:
    """Add the conditioning tokens (contract 1) to a base tokenizer, in place.

    The ``2 * bins`` tokens of :func:`varemi.core.conditioning.conditioning_token_strings` are
    added with MidiTok's ``add_to_vocab`` in that order, so their ids are
    ``base .. base + 2 * bins - 1`` where ``base = len(tokenizer)`` before adding.

    Args:
        tokenizer: A base tokenizer (without conditioning tokens).
        bins: Bins per axis (odd).

    Returns:
        Token string to id, in vocabulary order.

    Raises:
        BinsError: ``bins`` is not a positive odd integer.
        TokenizerError: The tokenizer already holds conditioning tokens, or MidiTok gave
            the new tokens other ids than expected.
    """
    names = conditioning_token_strings(bins)
    if any(is_conditioning_token(token) for token in tokenizer.vocab):
        raise TokenizerError("the tokenizer already holds conditioning tokens")
    base = len(tokenizer)
    for name in names:
        tokenizer.add_to_vocab(name)
    ids = {name: int(tokenizer.vocab[name]) for name in names}
    expected = list(range(base, base + len(names)))
    if list(ids.values()) != expected or len(tokenizer) != base + len(names):
        raise TokenizerError(
            f"conditioning tokens got ids {list(ids.values())}, expected {base}..{expected[-1]}"
        )
    return ids


def save_tokenizer(tokenizer: REMI, path: str | Path) -> Path:
    """Save a tokenizer (with its conditioning tokens) and check that it reloads the same.

    Args:
        tokenizer: The tokenizer to save.
        path: The JSON file to write, or a folder (an existing one, or a path without a
            suffix) to write ``tokenizer.json`` into.

    Returns:
        The file written.

    Raises:
        TokenizerError: The reloaded tokenizer differs (vocabulary, length or BPE model).
    """
    REMI = import_miditok().REMI  # noqa: N806 (the class)

    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    reloaded = REMI(params=path)
    vocab = tokenizer.vocab
    if not tokenizer.is_trained:
        # MidiTok rebuilds an untrained tokenizer's vocabulary from its configuration, so
        # added tokens are not saved; load_tokenizer adds the conditioning tokens back.
        vocab = {k: v for k, v in vocab.items() if not is_conditioning_token(k)}
        added = len(tokenizer) - len(vocab)
        if reloaded.vocab == vocab and len(reloaded) + added == len(tokenizer):
            return path
    if (
        reloaded.vocab != vocab
        or len(reloaded) != len(tokenizer)
        or reloaded.is_trained != tokenizer.is_trained
    ):
        raise TokenizerError(f"{path} does not reload as the tokenizer that was saved")
    return path


def ids_to_tokens(tokenizer: REMI, ids: Iterable[int]) -> list[str]:
    """Token strings for ids that may hold conditioning tokens and BPE ids; never raises.

    Conditioning ids are shown as their strings (``"[VAL=+2]"``), each BPE id is expanded
    to the base tokens it stands for (so the result can be longer than ``ids``), and an id
    the tokenizer does not know is shown as ``"<unk:N>"``. This works on a tokenizer just
    extended in memory, where MidiTok's own ``decode_token_ids`` raises ``KeyError``.

    Args:
        tokenizer: A REMI tokenizer, BPE-trained or not, with or without conditioning
            tokens.
        ids: Token ids (ints or numpy integers).

    Returns:
        The token strings.
    """
    expand = _expander(tokenizer)
    tokens: list[str] = []
    for raw in ids:
        tokens.extend(expand(int(raw)))
    return tokens


def _expander(tokenizer: REMI):
    """A function from one id to the token strings it stands for (:func:`ids_to_tokens`)."""
    id_to_token = {i: token for token, i in tokenizer.vocab.items()}
    model = tokenizer._model  # noqa: SLF001 - MidiTok 3.1 keeps the BPE model private
    learned = tokenizer._vocab_learned_bytes_to_tokens  # noqa: SLF001
    byte_to_token = tokenizer._vocab_base_byte_to_token  # noqa: SLF001

    def expand(i: int) -> list[str]:
        if i in id_to_token:  # a base token or an added (conditioning) token
            return [id_to_token[i]]
        key = model.id_to_token(i) if model is not None and i >= 0 else None
        if key is not None and key in learned:
            return list(learned[key])
        if key is not None and key and all(ch in byte_to_token for ch in key):
            return [byte_to_token[ch] for ch in key]
        return [f"<unk:{i}>"]

    return expand


def bar_start_table(tokenizer: REMI) -> np.ndarray:
    """Which ids start a bar: the first base token they stand for is ``Bar_None``.

    With BPE split per bar (``encode_ids_split`` ``bar``, MidiTok 3's default) every bar
    begins a new id, so these ids are exactly the bar starts of an encoded piece; with
    ``beat`` too. With ``no`` a merge may hold a bar in its middle: such a bar is not
    found, and ``--window-align bar`` starts the window at the next id that begins one.

    Args:
        tokenizer: A REMI tokenizer (BPE-trained or not; conditioning tokens or not).

    Returns:
        bool array, one entry per id (``len(tokenizer)``, at least the base vocabulary).
    """
    expand = _expander(tokenizer)
    size = max(len(tokenizer), len(tokenizer.vocab))
    return np.array([expand(i)[:1] == ["Bar_None"] for i in range(size)], dtype=bool)


def bar_count_table(tokenizer: REMI) -> np.ndarray:
    """How many ``Bar_None`` tokens each id stands for (a BPE id may hold several).

    With :func:`bar_start_table` it places a window of a file's ids among the file's
    bars (``build --label-time seconds``): the bars before a window are the Bar tokens
    of the ids before it.

    Args:
        tokenizer: A REMI tokenizer (BPE-trained or not; conditioning tokens or not).

    Returns:
        int64 array, one entry per id (as :func:`bar_start_table`).
    """
    expand = _expander(tokenizer)
    size = max(len(tokenizer), len(tokenizer.vocab))
    return np.array([expand(i).count("Bar_None") for i in range(size)], dtype=np.int64)


def bar_quarters(tokenizer: REMI) -> float | None:
    """Quarter notes per bar in the tokenizer's bars, or None when they can vary.

    A tokenizer without time-signature tokens writes every piece in MidiTok's default
    time signature (4/4: 4 quarters a bar), whatever the file's own; with them, bars
    follow the file's time signatures.

    Args:
        tokenizer: A MidiTok tokenizer.

    Returns:
        Quarters per bar, or None with ``use_time_signatures``.
    """
    if tokenizer.config.use_time_signatures:
        return None
    numerator, denominator = import_miditok().constants.TIME_SIGNATURE
    return 4.0 * numerator / denominator


def encode_ids_split(path: str | Path) -> str | None:
    """The ``encode_ids_split`` a tokenizer file states, or None when it states none.

    MidiTok 2.x files (the hub model's may be one) lack the key; MidiTok 3 then assumes
    ``bar``.

    Args:
        path: A ``tokenizer.json``.

    Returns:
        ``"bar"``, ``"beat"``, ``"no"``, or None.
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError, AttributeError):
        return None
    value = config.get("encode_ids_split") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def decode_music(tokenizer: REMI, ids: Iterable[int]) -> Score:
    """Decode token ids to a score: the one decoder (examples, windows, generations).

    Conditioning tokens, the special tokens (PAD, MASK, BOS, EOS, SEP) and ids unknown to
    the tokenizer are dropped before MidiTok decodes (it fails on them); BPE ids are
    expanded.

    Args:
        tokenizer: The dataset's tokenizer (conditioning tokens included) or the base one.
        ids: Token ids, e.g. an example's ``input_ids``.

    Returns:
        The decoded :class:`symusic.Score`.

    Raises:
        DecodeError: MidiTok cannot decode the ids (a sequence it cannot read).
    """
    TokSequence = import_miditok().TokSequence  # noqa: N806 (the class)
    specials = {f"{k}_None" for k in SPECIAL_TOKENS}
    tokens = [
        t
        for t in ids_to_tokens(tokenizer, (int(i) for i in ids))
        if not is_conditioning_token(t) and t not in specials and not t.startswith("<unk:")
    ]
    seq = TokSequence(tokens=tokens)
    try:
        tokenizer.complete_sequence(seq)
        return tokenizer.decode([seq])
    except Exception as error:  # noqa: BLE001 - MidiTok raises anything on ids it cannot read
        raise DecodeError(f"MidiTok cannot decode these ids: {_one_line(error)}") from error
