"""Label CSVs: reading the user's, writing varemi's, and refusing to overwrite other files."""

from __future__ import annotations

import csv
import math
import os
import posixpath
import warnings
from collections.abc import Mapping, Sequence
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


def _read_table(path: Path, what: str = "labels CSV") -> list[list[str]]:
    """The rows of a CSV (UTF-8, optional byte-order mark), header first; never empty."""
    if not path.is_file():
        raise LabelsCSVError(f"{what} not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsCSVError(f"{what} {path} is unreadable: {exc}") from exc
    if not table:
        raise LabelsCSVError(f"{what} {path} is empty (no header row)")
    return table


def read_header(path: Path | str, what: str = "labels CSV") -> list[str]:
    """The column names of a CSV, stripped and lower-cased.

    Args:
        path: The CSV.
        what: How messages name it.

    Returns:
        The header row.

    Raises:
        LabelsCSVError: missing, unreadable or empty.
    """
    return [h.strip().lower() for h in _read_table(Path(path), what)[0]]


SEPARATORS = (";", "\t", "|")
"""Separators that are not commas, named when a CSV's header was written with one."""


def _column(header: list[str], name: str, path: Path, what: str = "labels CSV") -> int:
    """The index of the one column ``name`` of a lower-cased header, else a clear refusal."""
    if header.count(name) == 1:
        return header.index(name)
    if name in header:
        raise LabelsCSVError(f"{what} {path} has more than one {name!r} column")
    for sep in SEPARATORS:  # `filename;valence;arousal` reads as one column
        if any(name in (part.strip() for part in cell.split(sep)) for cell in header):
            raise LabelsCSVError(
                f"{what} {path} is separated by {sep!r}, not commas: its header reads as "
                f"{len(header)} column(s); write it with commas (filename,valence,arousal)"
            )
    raise LabelsCSVError(f"{what} {path} lacks a {name!r} column")


def _row_key(text: str, roots: Sequence[str]) -> str:
    """A row's file name as a path relative to the MIDI root, when it can be one.

    ``./a.mid`` and ``sub/../a.mid`` are ``a.mid``; an absolute path under one of
    ``roots`` (the MIDI folder as given and as resolved) is made relative to it;
    anything else (a basename, a stem, a path elsewhere) is returned as written.
    """
    name = text.strip().replace("\\", "/")
    if not name:
        return name
    if name.startswith("/") or (len(name) > 2 and name[1] == ":" and name[2] == "/"):
        for root in roots:
            prefix = root.rstrip("/") + "/"
            if name.startswith(prefix):
                return posixpath.normpath(name[len(prefix) :])
        return name
    normal = posixpath.normpath(name)
    return normal if not normal.startswith("../") else name


def _roots(root: Path | str | None) -> list[str]:
    if root is None:
        return []
    given = Path(root).absolute().as_posix()
    real = Path(root).resolve().as_posix()
    return [given] if given == real else [given, real]


def _match(name: str, rows: Mapping[str, object]) -> str | None:
    """The key of ``rows`` that labels corpus file ``name``: its path, its basename, its stem."""
    base = PurePosixPath(name).name
    return next((k for k in (name, base, os.path.splitext(base)[0]) if k in rows), None)


def read_labels_csv(
    path: Path | str,
    files: Sequence[str],
    label_range: Sequence[float] | None = None,
    *,
    root: Path | str | None = None,
) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str, str]], list[str]]:
    """Read a user's labels CSV and match its rows to the corpus files.

    The CSV needs columns ``filename``, ``valence`` and ``arousal`` (headers are
    case-insensitive; other columns are ignored), or, instead of the last two, a
    ``quadrant`` column (``Q1``..``Q4`` or ``1``..``4``: Q1 is valence +1, arousal
    +1, Q2 -1 +1, Q3 -1 -1, Q4 +1 -1). A row's ``filename`` is read as a path
    relative to the MIDI folder (``./a.mid`` is ``a.mid``; an absolute path under
    ``root`` is made relative to it). A corpus file matches the rows whose
    ``filename`` equals its relative path; failing that, its basename; failing that,
    its basename without extension. A row that labels several different files that
    way (``a/x.mid`` and ``b/x.mid`` from one row ``x.mid``) is used for each of
    them, with a :class:`LabelsCSVWarning`.

    Args:
        path: The CSV (UTF-8, an optional byte-order mark).
        files: The corpus files, as paths relative to the MIDI root.
        label_range: ``(low, high)``: the CSV's values lie in [low, high] and are
            mapped linearly to [-1, 1] (low to -1, high to +1); None: they are in
            [-1, 1] already.
        root: The MIDI folder (absolute paths under it match its files).

    Returns:
        ``(labels, rejects, unmatched)``: ``{file: (valence, arousal)}`` for the files
        with a usable row, in [-1, 1]; ``(file, reason, detail)`` for the others,
        ``reason`` ``"bad_label"`` (a value that is not a finite number in [-1, 1], or
        in ``label_range``, or several rows with different values) or ``"unlabelled"``
        (no row); and the ``filename`` values of rows that match no corpus file, in
        CSV order.

    Raises:
        LabelsCSVError: The CSV is missing or unreadable, lacks a required column, or
            is separated by something else than commas; ``label_range`` with quadrants.
        LabelRangeError: A bad ``label_range``.
    """
    scale = check_label_range(label_range)
    low, high = scale or (-1.0, 1.0)
    path = Path(path)
    table = _read_table(path)
    header = [h.strip().lower() for h in table[0]]
    quadrants = "quadrant" in header and not ({"valence", "arousal"} & set(header))
    if quadrants:
        columns = {c: _column(header, c, path) for c in ("filename", "quadrant")}
        if scale is not None:
            raise LabelsCSVError(
                f"--label-range gives the scale of valence and arousal values; labels CSV "
                f"{path} has quadrants"
            )
    else:
        columns = {c: _column(header, c, path) for c in ("filename", "valence", "arousal")}

    roots = _roots(root)
    rows: dict[str, list[tuple[str | None, ...]]] = {}
    written: dict[str, str] = {}  # row key -> the filename as the CSV writes it
    for record in table[1:]:
        if not any(cell.strip() for cell in record):
            continue  # blank line
        cells = [record[columns[c]] if columns[c] < len(record) else None for c in columns]
        key = _row_key(cells[0] or "", roots)
        written.setdefault(key, cells[0] or "")
        rows.setdefault(key, []).append(tuple(cells[1:]))

    labels: dict[str, tuple[float, float]] = {}
    rejects: list[tuple[str, str, str]] = []
    used: dict[str, list[str]] = {}  # row key -> the files it labels
    for name in files:
        key = _match(name, rows)
        if key is None:
            rejects.append((name, "unlabelled", "no row in the labels CSV"))
            continue
        used.setdefault(key, []).append(name)
        values = set()
        bad = None
        for cells in rows[key]:
            if quadrants:
                v, a = QUADRANTS.get((cells[0] or "").strip().upper().lstrip("Q"), (None, None))
                problem = f"quadrant={cells[0]!r} is not Q1, Q2, Q3 or Q4"
            else:
                v, a = _parse_label(cells[0], scale), _parse_label(cells[1], scale)
                problem = (
                    f"valence={cells[0]!r}, arousal={cells[1]!r} not finite in [{low:g}, {high:g}]"
                )
            if v is None or a is None:
                bad = f"row {key!r}: {problem}"
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
    unmatched = [written[k] for k in rows if k not in used]
    return labels, rejects, unmatched


QUADRANTS: dict[str, tuple[float, float]] = {
    "1": (1.0, 1.0),
    "2": (-1.0, 1.0),
    "3": (-1.0, -1.0),
    "4": (1.0, -1.0),
}
"""``(valence, arousal)`` of each quadrant (Russell's circumplex, counter-clockwise from
positive-positive), keyed by its number."""


def read_groups(
    path: Path | str, files: Sequence[str], column: str = "group", *, root: Path | str | None = None
) -> dict[str, str]:
    """Each corpus file's group from a column of a CSV, rows matched as labels rows are.

    Args:
        path: The CSV (a ``filename,group`` file, or the labels CSV itself).
        files: The corpus files, as paths relative to the MIDI root.
        column: The column holding the group (case-insensitive).
        root: The MIDI folder (absolute paths under it match its files).

    Returns:
        ``{file: group}`` for the files with a row and a non-empty group.

    Raises:
        LabelsCSVError: The CSV is missing or unreadable or lacks either column.
    """
    path = Path(path)
    table = _read_table(path, "--groups CSV")
    header = [h.strip().lower() for h in table[0]]
    name_col = _column(header, "filename", path, "--groups CSV")
    group_col = _column(header, column.strip().lower(), path, "--groups CSV")
    roots = _roots(root)
    rows: dict[str, str] = {}
    for record in table[1:]:
        if max(name_col, group_col) < len(record) and record[group_col].strip():
            rows.setdefault(_row_key(record[name_col], roots), record[group_col].strip())
    out = {}
    for name in files:
        key = _match(name, rows)
        if key is not None:
            out[name] = rows[key]
    return out


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
