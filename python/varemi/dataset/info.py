"""``dataset_info.json``: the format version, and reading it in one place.

Every reader of a dataset's ``dataset_info.json`` (``verify``, the tokenizer loader,
``finetune``, ``generate``, ``evaluate``, the demo, the output-folder guard) goes
through :func:`read_dataset_info`, and every derived fact (the number of bins, the half
width, the prefix length) comes from the accessors here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from varemi._base.errors import VaremiError
from varemi._base.fileio import read_json
from varemi.core.conditioning import check_bins

FORMAT_VERSION = 3
"""The dataset format ``build`` writes (docs/contracts.md, "Format versions")."""

INFO_FILE = "dataset_info.json"
"""The name of a dataset's metadata file."""


class DatasetInfoError(VaremiError):
    """A folder is not a varemi dataset, or its ``dataset_info.json`` is malformed."""


def read_dataset_info(folder: str | Path, what: str = "DATA") -> dict[str, Any]:
    """A dataset's ``dataset_info.json``, checked, or one clear error.

    Args:
        folder: The dataset folder.
        what: How the user named the folder (for the message: ``DATA``, ``--data``).

    Returns:
        The parsed object; ``conditioning_tokens`` is a non-empty mapping from token
        string to int id, and ``params`` and ``tokenizer`` are objects when present.

    Raises:
        DatasetInfoError: no readable ``dataset_info.json``, or a malformed one.
    """
    path = Path(folder) / INFO_FILE
    try:
        info = read_json(path)
    except FileNotFoundError:
        raise DatasetInfoError(
            f"{what} {folder} is not a varemi dataset (no {INFO_FILE}): "
            "build one with python -m varemi build"
        ) from None
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetInfoError(f"cannot read {path}: {reason}") from None
    if not isinstance(info, dict):
        raise DatasetInfoError(f"{path}: not a JSON object")
    tokens = info.get("conditioning_tokens")
    if (
        not isinstance(tokens, dict)
        or not tokens
        or not all(isinstance(k, str) and type(v) is int for k, v in tokens.items())
    ):
        raise DatasetInfoError(
            f"{path}: 'conditioning_tokens' must be an object from token string to id"
        )
    for key in ("params", "tokenizer"):
        if key in info and not isinstance(info[key], dict):
            raise DatasetInfoError(f"{path}: '{key}' must be an object")
    return info


def is_varemi_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset that varemi built (its ``dataset_info.json``).

    Args:
        folder: A folder.

    Returns:
        True when ``folder/dataset_info.json`` parses and names a varemi version and a
        format version.
    """
    try:
        info = read_json(Path(folder) / INFO_FILE)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "varemi_version" in info and "format_version" in info


def bins_of(info: dict[str, Any]) -> int:
    """The number of bins per axis of a dataset (``--bins``).

    Args:
        info: A dataset's info (:func:`read_dataset_info`).

    Returns:
        ``params.bins``, or, for an info without it, half the conditioning tokens.
    """
    params = info.get("params") or {}
    if "bins" in params:
        return int(params["bins"])
    return len(info["conditioning_tokens"]) // 2


def half_width(info: dict[str, Any]) -> int:
    """The largest bin ``h`` of a dataset: bins run ``-h..h``.

    Args:
        info: A dataset's info.

    Returns:
        ``(bins - 1) // 2``.
    """
    return check_bins(bins_of(info))


def prefix_length(info: dict[str, Any]) -> int:
    """How many ids precede the music in every example: 3 with ``--bos``, else 2.

    Args:
        info: A dataset's info.

    Returns:
        The prefix length.
    """
    return 3 if (info.get("params") or {}).get("bos") else 2


def bins_carried(info: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """The valence and the arousal bins that some example of a dataset carries.

    From ``histograms.examples_by_bin`` (examples of the train and val splits per
    ``"v,a"`` pair), or, in an info without it, the per-axis histograms
    ``histograms.valence_bin`` and ``arousal_bin`` (what the rows carry).

    Args:
        info: A dataset's info.

    Returns:
        ``(valence_bins, arousal_bins)``, each sorted, bins with a count above zero; None
        when the info records no histogram.
    """
    hist = info.get("histograms")
    if not isinstance(hist, dict):
        return None
    pairs = hist.get("examples_by_bin")
    try:
        if isinstance(pairs, dict) and pairs:
            carried = [tuple(int(b) for b in k.split(",")) for k, n in pairs.items() if n > 0]
            return sorted({v for v, _ in carried}), sorted({a for _, a in carried})
        axes = [hist.get("valence_bin"), hist.get("arousal_bin")]
        if all(isinstance(x, dict) and x for x in axes):
            vb, ab = (sorted(int(b) for b, n in x.items() if n > 0) for x in axes)
            return vb, ab
    except (ValueError, TypeError):
        return None
    return None


def label_time(info: dict[str, Any]) -> str | None:
    """The time base of the labels a dataset's rows carry: ``beats``, ``seconds`` or None.

    ``labels.time`` as ``build --label-time`` recorded it; a dataset built before the
    option had computed labels in seconds with file scope and in beats with window scope
    (``--label-time auto``). None for labels from a CSV (their time base is unknown).

    Args:
        info: The dataset's ``dataset_info.json``.

    Returns:
        ``beats``, ``seconds`` or None.
    """
    labels = info.get("labels") or {}
    if labels.get("time"):
        return str(labels["time"])
    if labels.get("source") == "csv":
        return None
    return "beats" if labels.get("scope") == "window" else "seconds"


def tokenizer_sizes(info: dict[str, Any], folder: str | Path) -> tuple[int, int]:
    """The base and full vocabulary sizes recorded for a dataset.

    Args:
        info: A dataset's info.
        folder: The dataset folder (for the message).

    Returns:
        ``(base_vocab_size, vocab_size)``.

    Raises:
        DatasetInfoError: They are not recorded.
    """
    tok = info.get("tokenizer") or {}
    if not {"base_vocab_size", "vocab_size"} <= set(tok):
        raise DatasetInfoError(f"{Path(folder) / INFO_FILE} lacks tokenizer.base_vocab_size")
    return int(tok["base_vocab_size"]), int(tok["vocab_size"])


def is_demo_dataset(folder: Path, midi_dir: Path) -> bool:
    """Whether ``folder`` holds the built-in demo's dataset (which the demo may replace).

    Args:
        folder: The demo's default output folder.
        midi_dir: The demo corpus folder, as the demo passes it to ``build``.

    Returns:
        True when ``folder/dataset_info.json`` is a varemi dataset built with the builtin
        tokenizer from ``midi_dir``; False for anything else (a user's dataset, any
        other folder, nothing at all).
    """
    try:
        info = read_json(Path(folder) / INFO_FILE)
        return (
            "varemi_version" in info
            and info["params"]["midi_dir"] == str(midi_dir)
            and info["tokenizer"]["source"] == "builtin"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
