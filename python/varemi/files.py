"""Finding the MIDI files of a corpus.

Files are named by their path relative to the corpus root, with POSIX separators:
that name is the key of a file everywhere in varemi (labels, split hashing,
``source_file``, rejects).
"""

from __future__ import annotations

import os
from pathlib import Path

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
