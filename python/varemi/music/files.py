"""Finding and reading the MIDI files of a corpus.

Files are named by their path relative to the corpus root, with POSIX separators:
that name is the key of a file everywhere in varemi (labels, split hashing,
``source_file``, rejects). :func:`read_midi_bytes` (size limit) and :func:`parse_midi`
are the one reader ``labels`` and ``build`` share, with one set of reject reasons
(:class:`RejectedFile`). Files are parsed from their bytes, so the extension's case
(``.Mid``, ``.MIDI``) does not matter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from symusic import Score

MIDI_SUFFIXES = (".mid", ".midi")


def is_midi_name(name: str) -> bool:
    """Whether a file name has a MIDI extension (``.mid`` or ``.midi``, any case).

    Args:
        name: A file name or path.

    Returns:
        True for ``song.mid``, ``SONG.MIDI``, ``a/b.Mid``; False otherwise.
    """
    return name.lower().endswith(MIDI_SUFFIXES)


def list_midi_files(root: Path | str) -> list[str]:
    """Every MIDI file under ``root``, recursively, as sorted relative POSIX paths.

    Directory symlinks are followed, but a directory whose real path was already
    visited is not entered again, so a symlink loop cannot hang the walk. Directories
    that cannot be read are skipped. Symlinks to files are listed like files, and so
    are dangling symlinks with a MIDI name, so that reading them rejects them as
    ``unreadable`` instead of losing them silently.

    Args:
        root: The corpus folder.

    Returns:
        Paths relative to ``root`` with ``/`` separators (``"a/b/song.mid"``), sorted
        in Python string order.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"MIDI folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")

    found: list[str] = []
    visited: set[str] = set()
    stack: list[tuple[str, str]] = [(str(root), "")]  # (filesystem path, relative prefix)
    while stack:
        directory, prefix = stack.pop()
        real = os.path.realpath(directory)
        if real in visited:
            continue
        visited.add(real)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append((entry.path, rel + "/"))
                elif is_midi_name(entry.name) and (
                    entry.is_file(follow_symlinks=True)
                    or (entry.is_symlink() and not os.path.exists(entry.path))  # dangling
                ):
                    found.append(rel)
            except OSError:
                continue
        # Depth first, in name order, so a folder reachable by two paths is always
        # listed under the same one.
        stack.extend(reversed(subdirs))
    found.sort()
    return found


def shown_name(name: str) -> str:
    r"""A file name as it can be printed and written to CSV: undecodable bytes escaped.

    Names come from the file system with undecodable bytes as surrogates
    (``surrogateescape``); they are shown as ``\xff`` escapes.

    Args:
        name: A relative path from :func:`list_midi_files`.

    Returns:
        The name, with every byte that is not valid UTF-8 as ``\xNN``.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_bad_names(names: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Set aside the files whose names are not valid UTF-8 (old zips have them).

    A file's name is its key everywhere (split hashing, ``source_file``, labels), as
    UTF-8, so such a file cannot be used; it is rejected as ``bad_name`` and the run
    goes on.

    Args:
        names: Relative paths from :func:`list_midi_files`.

    Returns:
        ``(usable names, rejects)``; a reject is ``(shown name, "bad_name", detail)``
        with the name as :func:`shown_name` writes it.
    """
    good: list[str] = []
    bad: list[tuple[str, str, str]] = []
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            bad.append((shown_name(name), "bad_name", "the file name is not valid UTF-8"))
        else:
            good.append(name)
    return good, bad


class RejectedFile(Exception):
    """A file that cannot become training data; recorded in ``rejects.csv``.

    Attributes:
        reason: Short machine-readable reason (``unreadable``, ``too_large``, ...).
        detail: One human-readable line.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_midi_bytes(path: str | os.PathLike, max_file_mb: float | None = None) -> bytes:
    """Read a MIDI file's bytes, refusing files over the size limit without loading them.

    Args:
        path: The MIDI file.
        max_file_mb: Largest size accepted, in MiB (``--max-file-mb``); None: no limit.

    Returns:
        The file's bytes.

    Raises:
        RejectedFile: ``too_large`` or ``unreadable``.
    """
    try:
        size = os.path.getsize(path)
        if max_file_mb is not None and size > max_file_mb * 1024 * 1024:
            raise RejectedFile("too_large", f"{size / 2**20:.1f} MiB > --max-file-mb {max_file_mb}")
        return Path(path).read_bytes()
    except OSError as e:
        raise RejectedFile("unreadable", f"{type(e).__name__}: {e}") from e


def parse_midi(data: bytes) -> Score:
    """Parse a MIDI file's bytes.

    Args:
        data: The file's bytes.

    Returns:
        The ``symusic.Score`` (in ticks).

    Raises:
        RejectedFile: ``unreadable`` (symusic cannot parse it).
    """
    from symusic import Score

    try:
        return Score.from_midi(data)
    except Exception as e:  # symusic raises several types for damaged files
        raise RejectedFile("unreadable", f"{type(e).__name__}: {e}") from e
