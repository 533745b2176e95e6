"""The output folder of ``build``: where the new dataset is staged and how it is swapped in.

A build writes into a temporary folder and swaps it into place only when complete
(docs/contracts.md contract 9). :class:`Staging` owns that folder:

- it is created before any work, so an output that cannot be written (a read-only
  parent, ``--out`` under a file) is refused at once, not after the whole build;
- it lives beside ``--out`` (``.NAME.varemi-tmp-PID``) and is renamed into place, or,
  when ``--out`` is a folder that cannot be renamed (a mount point, the current
  folder, a folder whose parent is not writable), inside it (``.varemi-tmp-PID``),
  and its files are moved up into ``--out`` at the end;
- the swap restores the previous output if it fails half-way;
- staging folders left by builds that died (their PID is not alive) are removed by
  the next build into the same output; a previous dataset that such a build had set
  aside (``.NAME.varemi-old-PID``) is put back first when ``--out`` is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from varemi._base.errors import OutputFolderError
from varemi.dataset.info import is_varemi_dataset


def resolve_out(out: str | os.PathLike) -> Path:
    """The absolute, symlink-free path of ``--out`` (``.`` becomes the current folder).

    Args:
        out: ``--out`` as given.

    Returns:
        The resolved path.
    """
    return Path(out).expanduser().resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_inputs_outside(out: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse an input that lies inside an output that ``--overwrite`` would replace.

    ``--labels OUT/labels.csv`` is allowed: the build reads it before the swap and
    writes its content back as the new dataset's ``labels.csv``.

    Args:
        out: The resolved output folder (holding a previous dataset).
        inputs: Option (``--midi-dir``) to path; None entries are skipped.

    Raises:
        OutputFolderError: an input inside ``out``.
    """
    for option, path in inputs.items():
        if path is None:
            continue
        real = Path(path).expanduser().resolve()
        if option == "--labels" and real == out / "labels.csv":
            continue
        if _inside(real, out):
            raise OutputFolderError(
                f"{option} {path} lies inside --out {out}, which --overwrite would replace; "
                "move it out of the output folder first"
            )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _dead_leftovers(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    """``(path, kind)`` of staging folders ``PREFIX{tmp,old}-PID`` in ``folder`` whose PID died."""
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        for kind in ("tmp", "old"):
            head = f"{prefix}varemi-{kind}-"
            if entry.name.startswith(head) and entry.name[len(head) :].isdigit():
                if not _pid_alive(int(entry.name[len(head) :])) and entry.is_dir():
                    found.append((entry, kind))
    return sorted(found)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Staging:
    """The temporary folder a build writes into, and the swap into ``out``.

    Attributes:
        out: The resolved output folder.
        tmp: The staging folder (exists once :meth:`create` returned).
        inside: Whether ``tmp`` lies inside ``out`` (``out`` cannot be renamed).
    """

    def __init__(self, out: Path) -> None:
        """Plan the staging of ``out`` (nothing is created; see :meth:`create`).

        Args:
            out: The resolved output folder.
        """
        self.out = out
        self.inside = out.is_dir() and not self._renamable(out)
        pid = os.getpid()
        if self.inside:
            self.tmp = out / f".varemi-tmp-{pid}"
        else:
            self.tmp = out.parent / f".{out.name}.varemi-tmp-{pid}"

    @staticmethod
    def _renamable(out: Path) -> bool:
        if os.path.ismount(out):
            return False
        try:
            if out == Path.cwd().resolve():
                return False
        except OSError:
            pass
        return os.access(out.parent, os.W_OK | os.X_OK)

    @classmethod
    def create(cls, out: Path) -> Staging:
        """Create the staging folder (before any work; see also :meth:`remove_dead`).

        Args:
            out: The resolved output folder.

        Returns:
            The staging.

        Raises:
            OutputFolderError: the staging folder cannot be created (not writable).
        """
        staging = cls(out)
        try:
            shutil.rmtree(staging.tmp, ignore_errors=True)
            staging.tmp.mkdir(parents=True)
        except OSError as e:
            raise OutputFolderError(
                f"--out {out}: cannot write into {staging.tmp.parent}: {e.strerror or e}"
            ) from e
        return staging

    @staticmethod
    def remove_dead(out: Path) -> None:
        """Remove the staging folders of dead builds into ``out`` (restoring a lost output).

        Args:
            out: The resolved output folder.
        """
        beside = _dead_leftovers(out.parent, f".{out.name}.")
        olds = [p for p, kind in beside if kind == "old"]
        if olds and not out.exists():  # a build died between the two renames of its swap
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            try:
                os.replace(newest, out)
                _warn(f"restored the previous dataset {out} that a killed build had set aside")
            except OSError:
                pass
        inside = _dead_leftovers(out, "") if out.is_dir() else []
        for path, _ in beside + inside:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging folder (the previous output stays as it was)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, is_dataset) -> None:
        """Swap the finished dataset in; on any failure the previous output is restored.

        Args:
            is_dataset: Predicate telling a folder holding a varemi dataset.

        Raises:
            OutputFolderError: something that is not a dataset appeared in ``out``
                during the build.
            OSError: the swap failed (the previous output was put back).
        """
        if self.inside:
            self._commit_inside(is_dataset)
        else:
            self._commit_beside(is_dataset)

    def _changed(self) -> OutputFolderError:
        return OutputFolderError(
            f"--out {self.out} changed during the build; refusing to replace it"
        )

    def _commit_beside(self, is_dataset) -> None:
        out, old = self.out, self.out.parent / f".{self.out.name}.varemi-old-{os.getpid()}"
        moved = False
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            elif is_dataset(out):
                os.replace(out, old)
                moved = True
            else:  # something appeared there during the build: never replace it
                raise self._changed()
        try:
            os.replace(self.tmp, out)
        except BaseException:
            if moved:
                os.replace(old, out)  # the previous dataset goes back where it was
            raise
        if moved:
            shutil.rmtree(old, ignore_errors=True)

    def _commit_inside(self, is_dataset) -> None:
        out, tmp = self.out, self.tmp
        old = out / f".varemi-old-{os.getpid()}"
        previous = [p for p in out.iterdir() if p != tmp]
        if previous and not is_dataset(out):
            raise self._changed()
        moved_old: list[Path] = []
        moved_new: list[Path] = []
        try:
            if previous:
                old.mkdir()
                for p in previous:
                    os.replace(p, old / p.name)
                    moved_old.append(p)
            for p in sorted(tmp.iterdir()):
                os.replace(p, out / p.name)
                moved_new.append(p)
        except BaseException:
            for p in moved_new:
                os.replace(out / p.name, p)
            for p in moved_old:
                os.replace(old / p.name, p)
            shutil.rmtree(old, ignore_errors=True)
            raise
        tmp.rmdir()
        shutil.rmtree(old, ignore_errors=True)


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose someone's work (docs/contracts.md contract 9).

    Args:
        out: The output folder.
        overwrite: Whether ``--overwrite`` was given.

    Raises:
        OutputFolderError: ``out`` is a file, a non-empty folder that is not a varemi
            dataset, or a varemi dataset without ``--overwrite``.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputFolderError(f"--out {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not is_varemi_dataset(out):
        raise OutputFolderError(
            f"--out {out} is a non-empty folder that does not hold a varemi dataset; "
            "varemi only ever replaces its own output: choose a new or empty folder"
        )
    if not overwrite:
        raise OutputFolderError(
            f"--out {out} already holds a dataset; pass --overwrite to replace it"
        )
