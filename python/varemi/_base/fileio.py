"""Writing files so that a reader never sees half of one: a temporary file, then a rename.

Every JSON file varemi writes (``dataset_info.json``, ``run.json``, cache entries, the
dataset card) and every CSV it replaces (``labels.csv``) goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to (re)place.
        mode: ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
        **open_kwargs: Passed to :func:`open` (``newline=""`` for CSV).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: The file.
        data: Its new content.
    """
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write a JSON file as varemi writes them all: indented, UTF-8, a final newline, atomically.

    Args:
        path: The file.
        obj: A JSON-serialisable object.
    """
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a UTF-8 JSON file.

    Args:
        path: The file.

    Returns:
        The parsed value.

    Raises:
        OSError: The file cannot be read.
        ValueError: It is not UTF-8 JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``).
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))
