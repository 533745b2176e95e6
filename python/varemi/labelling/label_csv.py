"""Label CSVs: reading the user's, writing varemi's, and refusing to overwrite other files."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.fileio import atomic_write
from varemi.labelling.heuristic import LABEL_COLUMNS
from varemi.music.files import is_midi_name

if TYPE_CHECKING:
    import pandas as pd


class LabelsCSVError(VaremiError):
    """A labels CSV that is missing, unreadable or lacks a required column."""


class LabelsCSVWarning(UserWarning):
    """A labels CSV row that labels several different files (a basename or stem match)."""


def write_labels_csv(df: pd.DataFrame, path: Path | str) -> None:
    """Write labels as CSV, floats in full precision (``repr``), so they read back exactly.

    The file is written beside ``path`` and renamed into place, so an interrupted
    write never leaves a half-written CSV.

    Args:
        df: A labels DataFrame (as from :func:`label_folder`); any columns.
        path: The CSV to write.
    """
    write_label_rows(df.to_dict("records"), path, columns=list(df.columns))


def write_label_rows(rows: Sequence[dict], path: Path | str, columns: Sequence[str] = ()) -> None:
    """Write label rows (as from :func:`label_row`) as CSV, without pandas.

    Args:
        rows: One dict per file.
        path: The CSV to write (written beside it, then renamed into place).
        columns: The columns, in order (default: :data:`LABEL_COLUMNS`).
    """
    path = Path(path)
    columns = list(columns) or list(LABEL_COLUMNS)
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    repr(float(v)) if isinstance(v, (float, np.floating)) else v
                    for v in (row[c] for c in columns)
                ]
            )


class LabelRangeError(VaremiError):
    """A ``--label-range`` that is not two finite numbers with LOW < HIGH."""


def check_label_range(label_range: Sequence[float] | None) -> tuple[float, float] | None:
    """A labels CSV's scale as ``(low, high)``, checked (None: the CSV is in [-1, 1]).

    Args:
        label_range: ``(low, high)`` or None.

    Returns:
        ``(float(low), float(high))``, or None.

    Raises:
        LabelRangeError: Not two finite numbers with ``low < high``.
    """
    if label_range is None:
        return None
    try:
        low, high = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise LabelRangeError(
            f"--label-range takes two numbers LOW HIGH, got {label_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise LabelRangeError(
            f"--label-range needs finite LOW < HIGH, got {label_range[0]!r} {label_range[1]!r}"
        )
    return low, high


def _parse_label(text: str | None, label_range: tuple[float, float] | None = None) -> float | None:
    """A finite float in [-1, 1] (or in ``label_range``, mapped linearly to [-1, 1]), or None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    low, high = label_range or (-1.0, 1.0)
    if not (math.isfinite(value) and low <= value <= high):
        return None
    if label_range is None:
        return value
    return -1.0 + 2.0 * (value - low) / (high - low)


def read_labels_csv(
    path: Path | str, files: Sequence[str], label_range: Sequence[float] | None = None
) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str, str]], list[str]]:
    """Read a user's labels CSV and match its rows to the corpus files.

    The CSV needs columns ``filename``, ``valence`` and ``arousal`` (headers are
    case-insensitive; other columns are ignored). A corpus file matches the rows
    whose ``filename`` equals its relative path; failing that, its basename; failing
    that, its basename without extension. A row that labels several different
    files that way (``a/x.mid`` and ``b/x.mid`` from one row ``x.mid``) is used for
    each of them, with a :class:`LabelsCSVWarning`.

    Args:
        path: The CSV (UTF-8, an optional byte-order mark).
        files: The corpus files, as paths relative to the MIDI root.
        label_range: ``(low, high)``: the CSV's values lie in [low, high] and are
            mapped linearly to [-1, 1] (low to -1, high to +1); None: they are in
            [-1, 1] already.

    Returns:
        ``(labels, rejects, unmatched)``: ``{file: (valence, arousal)}`` for the files
        with a usable row, in [-1, 1]; ``(file, reason, detail)`` for the others,
        ``reason`` ``"bad_label"`` (a value that is not a finite number in [-1, 1], or
        in ``label_range``, or several rows with different values) or ``"unlabelled"``
        (no row); and the ``filename`` values of rows that match no corpus file, in
        CSV order.

    Raises:
        LabelsCSVError: The CSV is missing or unreadable, or lacks a required column.
        LabelRangeError: A bad ``label_range``.
    """
    scale = check_label_range(label_range)
    low, high = scale or (-1.0, 1.0)
    path = Path(path)
    if not path.is_file():
        raise LabelsCSVError(f"labels CSV not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsCSVError(f"labels CSV {path} is unreadable: {exc}") from exc
    if not table:
        raise LabelsCSVError(f"labels CSV {path} is empty (no header row)")
    header = [h.strip().lower() for h in table[0]]
    columns = {}
    for required in ("filename", "valence", "arousal"):
        if header.count(required) != 1:
            problem = "lacks" if required not in header else "has more than one"
            raise LabelsCSVError(f"labels CSV {path} {problem} a {required!r} column")
        columns[required] = header.index(required)

    rows: dict[str, list[tuple[str | None, str | None]]] = {}
    for record in table[1:]:
        if not any(cell.strip() for cell in record):
            continue  # blank line
        cells = [record[columns[c]] if columns[c] < len(record) else None for c in columns]
        rows.setdefault(cells[0] or "", []).append((cells[1], cells[2]))

    labels: dict[str, tuple[float, float]] = {}
    rejects: list[tuple[str, str, str]] = []
    used: dict[str, list[str]] = {}  # row key -> the files it labels
    for name in files:
        base = PurePosixPath(name).name
        key = next((k for k in (name, base, os.path.splitext(base)[0]) if k in rows), None)
        if key is None:
            rejects.append((name, "unlabelled", "no row in the labels CSV"))
            continue
        used.setdefault(key, []).append(name)
        values = set()
        bad = None
        for v_text, a_text in rows[key]:
            v, a = _parse_label(v_text, scale), _parse_label(a_text, scale)
            if v is None or a is None:
                bad = (
                    f"row {key!r}: valence={v_text!r}, arousal={a_text!r} "
                    f"not finite in [{low:g}, {high:g}]"
                )
                break
            values.add((v, a))
        if bad is not None:
            rejects.append((name, "bad_label", bad))
        elif len(values) > 1:
            rejects.append((name, "bad_label", f"conflicting duplicate rows for {key!r}"))
        else:
            labels[name] = values.pop()
    for key, names in used.items():
        if len(names) > 1:  # only a basename or stem match can serve two files
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            warnings.warn(
                f"row {key!r} of {path} labels {len(names)} different files by name alone: "
                f"{shown}; give each its relative path to label them apart",
                LabelsCSVWarning,
                stacklevel=2,
            )
    unmatched = [k for k in rows if k not in used]
    return labels, rejects, unmatched


class OutputFileError(VaremiError):
    """An output file that cannot be written, or would replace something it must not."""


def is_labels_csv(path: Path) -> bool:
    """Whether ``path`` is a labels CSV: its header names ``filename``, ``valence``, ``arousal``.

    Args:
        path: An existing file.

    Returns:
        True when the first row of the file (UTF-8, optional byte-order mark) holds the
        three columns (case-insensitive, as :func:`read_labels_csv` reads it).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader([fh.readline(1 << 16)]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    names = {cell.strip().lower() for cell in header}
    return {"filename", "valence", "arousal"} <= names


def check_labels_out(out: Path) -> None:
    """Refuse a ``labels --out`` that cannot be written or would replace someone's file.

    Args:
        out: The CSV to write.

    Raises:
        OutputFileError: ``out`` is a folder, has a MIDI extension, lies in a folder
            that does not exist or cannot be written, or is an existing non-empty file
            that is not a labels CSV (a MIDI file among them).
    """
    if out.is_dir():
        raise OutputFileError(f"--out {out} is a folder; give the path of the CSV file to write")
    if is_midi_name(out.name):
        raise OutputFileError(f"--out {out} has a MIDI extension; labels are written as CSV")
    parent = out.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a folder"
        raise OutputFileError(f"--out {out}: the folder {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFileError(f"--out {out}: the folder {parent} is not writable")
    if out.exists() or out.is_symlink():
        if not out.is_file():
            raise OutputFileError(f"--out {out} exists and is not a regular file")
        if out.stat().st_size and not is_labels_csv(out):
            raise OutputFileError(
                f"--out {out} exists and is not a labels CSV (no filename,valence,arousal "
                "header); varemi only replaces its own labels: choose another file"
            )
