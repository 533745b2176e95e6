"""Checks on the paths a user names, made before any work.

``labels --out`` names a file that will be replaced: it must be a CSV path in an
existing, writable folder, and it must not hold anything but a previous labels CSV
(a MIDI file, or any other file, is never overwritten).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from varemi.errors import VaremiError
from varemi.files import is_midi_name


class OutputFileError(VaremiError):
    """An output file that cannot be written, or would replace something it must not."""


def is_labels_csv(path: Path) -> bool:
    """Whether ``path`` is a labels CSV: its header names ``filename``, ``valence``, ``arousal``.

    Args:
        path: An existing file.

    Returns:
        True when the first row of the file (UTF-8, optional byte-order mark) holds the
        three columns (case-insensitive, as :func:`varemi.labels.read_labels_csv` reads it).
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
