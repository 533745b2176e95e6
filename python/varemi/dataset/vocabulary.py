"""A dataset's vocabulary: its tokenizer with the conditioning tokens, and a mood's ids.

:func:`load_tokenizer` and :func:`conditioning_ids` are public (``varemi.load_tokenizer``,
``varemi.conditioning_ids``); both check the dataset's ``dataset_info.json`` against its
tokenizer, so a tokenizer of another dataset is refused rather than misread.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING

from varemi._base.errors import BinsError, ConditioningError
from varemi.core.conditioning import bin_token_ids, conditioning_token_strings
from varemi.dataset.info import INFO_FILE, bins_of, half_width, read_dataset_info
from varemi.music.tokenizer import (
    TOKENIZER_FILE,
    TokenizerError,
    TokenizerMismatchError,
    add_conditioning_tokens,
    read_remi,
)

if TYPE_CHECKING:
    from miditok import REMI


def load_tokenizer(out: str | Path) -> REMI:
    """Load a dataset's tokenizer (``out/tokenizer.json``, conditioning tokens included).

    Checks that its conditioning tokens have exactly the ids recorded under
    ``conditioning_tokens`` in ``out/dataset_info.json``, and that those are the
    tokens of contract 1 in vocabulary order.

    Args:
        out: The dataset folder written by ``varemi build``.

    Returns:
        The MidiTok REMI tokenizer, ready to encode and decode.

    Raises:
        TokenizerMismatchError: ``dataset_info.json`` is missing or malformed, or its
            conditioning ids differ from the tokenizer's.
        TokenizerError: ``tokenizer.json`` is missing or not a REMI tokenizer.
    """
    out = Path(out)
    info = read_dataset_info(out, "dataset")
    recorded: dict[str, int] = info["conditioning_tokens"]
    path = out / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"{out} has no {TOKENIZER_FILE}")
    tokenizer = read_remi(path)

    expected_names = conditioning_token_strings(bins_of(info))
    if not tokenizer.is_trained and not any(n in tokenizer.vocab for n in expected_names):
        add_conditioning_tokens(tokenizer, bins_of(info))  # not saved by MidiTok
    if list(recorded) != expected_names:
        raise TokenizerMismatchError(
            f"{out / INFO_FILE}: conditioning_tokens are {list(recorded)[:4]}..., "
            f"expected {expected_names[0]}..{expected_names[-1]} in that order"
        )
    ids = list(recorded.values())
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise TokenizerMismatchError(
            f"{out / INFO_FILE}: conditioning ids {ids} are not consecutive"
        )
    for name, recorded_id in recorded.items():
        actual = tokenizer.vocab.get(name)
        if actual != recorded_id:
            raise TokenizerMismatchError(
                f"{path}: token {name} has id {actual}, but {INFO_FILE} records "
                f"{recorded_id}: the tokenizer does not belong to this dataset"
            )
    return tokenizer


def conditioning_ids(out: str | Path, valence_bin: int, arousal_bin: int) -> tuple[int, int]:
    """The two prefix ids (valence token, arousal token) for a mood, from a dataset.

    Args:
        out: The dataset folder (its ``dataset_info.json`` is read).
        valence_bin: Valence bin in ``-h..h`` (``h = (bins - 1) / 2``).
        arousal_bin: Arousal bin in ``-h..h``.

    Returns:
        ``(valence_token_id, arousal_token_id)``.

    Raises:
        BinsError: A bin is not an integer in ``-h..h``.
        TokenizerMismatchError: ``dataset_info.json`` is missing or malformed.
    """
    out = Path(out)
    info = read_dataset_info(out, "dataset")
    h = half_width(info)
    for name, value in (("valence_bin", valence_bin), ("arousal_bin", arousal_bin)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or abs(value) > h:
            raise BinsError(f"{name} must be an integer in {-h}..{h}, got {value!r}")
    try:
        val, aro = bin_token_ids(info["conditioning_tokens"], valence_bin, arousal_bin)
    except ConditioningError as e:
        raise TokenizerMismatchError(f"{out / INFO_FILE}: {e}") from None
    return int(val), int(aro)
