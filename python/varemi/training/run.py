"""The run folder and its ``run.json``: what was trained, how, and how far it got.

A run folder holds the best model (``config.json``, ``model.safetensors``,
``generation_config.json``), the dataset's ``tokenizer.json`` and a copy of its
``dataset_info.json`` (so :func:`varemi.load_tokenizer` reads a run like a dataset),
``run.json``, ``training_log.csv``, ``loss.png``, ``val_loss_by_bin.json`` / ``.csv`` and
``checkpoints/checkpoint-STEP`` (``transformers.Trainer``'s checkpoints, for ``--resume``).

``run.json`` ``status`` is ``running`` while ``finetune`` works, ``interrupted`` after
Ctrl-C or SIGTERM, ``done`` when training ended and the best model was saved. Only a
``done`` run is sampled from, unless the caller allows an unfinished one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from varemi._base.fileio import read_json, write_json
from varemi.training.errors import TrainError

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
"""The folder of ``transformers.Trainer``'s ``checkpoint-STEP`` folders inside a run."""


def read_run_json(run: Path) -> dict | None:
    """A run folder's ``run.json``, or None when there is none (or it is unreadable).

    Args:
        run: The run folder.

    Returns:
        The parsed ``run.json`` or None.
    """
    try:
        meta = read_json(Path(run) / RUN_FILE)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "varemi_run" in meta else None


def write_run_json(run: Path, meta: dict) -> None:
    """Write ``run.json`` atomically.

    Args:
        run: The run folder.
        meta: Its content.
    """
    write_json(Path(run) / RUN_FILE, meta)


def checkpoints(run: Path) -> list[Path]:
    """The Trainer checkpoints of a run, oldest step first.

    Args:
        run: The run folder.

    Returns:
        ``RUN/checkpoints/checkpoint-STEP`` folders that hold a ``trainer_state.json``.
    """
    folder = Path(run) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and (p / "trainer_state.json").is_file():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint of a run, or None.

    Args:
        run: The run folder.

    Returns:
        Its folder, or None.
    """
    found = checkpoints(run)
    return found[-1] if found else None


def read_run(run: Path, option: str = "RUN", allow_unfinished: bool = False) -> dict:
    """The ``run.json`` of a finetune output that holds a finished model, or one clear error.

    Args:
        run: The run folder.
        option: How the user named it (for the message).
        allow_unfinished: Accept a run whose training did not finish (its last checkpoint
            is used when the run folder holds no model yet).

    Returns:
        The parsed ``run.json``.

    Raises:
        TrainError: ``run`` is not a finetune output, holds no model yet, or (without
            ``allow_unfinished``) its training did not finish.
    """
    run = Path(run)
    meta = read_run_json(run)
    if meta is None:
        raise TrainError(
            f"{option} {run} is not a varemi finetune output (no readable {RUN_FILE}): "
            "train one with python -m varemi finetune DATA --out RUN"
        )
    status = meta.get("status")
    if status != "done" and not allow_unfinished:
        raise TrainError(
            f"{option} {run} is unfinished (run.json status {status!r}: its training did not "
            "end with a validated best model); resume it with python -m varemi finetune "
            f"{meta.get('data', 'DATA')} --out {run} --resume, or pass --allow-unfinished "
            "to sample from its last checkpoint"
        )
    if model_folder(run) is None or not (run / "dataset_info.json").is_file():
        raise TrainError(f"{option} {run} holds no model yet (its training saved none)")
    return meta


def model_folder(run: Path) -> Path | None:
    """Where a run's model is: the run folder once finished, else its last checkpoint.

    Args:
        run: The run folder.

    Returns:
        A folder with ``config.json``, or None.
    """
    run = Path(run)
    if (run / "config.json").is_file():
        return run
    last = last_checkpoint(run)
    return last if last is not None and (last / "config.json").is_file() else None


def resume_hint(out: Path, data: Path | str | None, how: str) -> str:
    """What an interrupted ``finetune`` says: what was kept and how to continue.

    Args:
        out: The run folder.
        data: The dataset folder, as the user gave it.
        how: ``interrupted`` or ``terminated``.

    Returns:
        One line.
    """
    last = last_checkpoint(out) if out is not None else None
    if last is not None:
        step = last.name.split("-")[-1]
        return (
            f"{how}: {out} keeps the checkpoint of step {step}; "
            f"python -m varemi finetune {data} --out {out} --resume continues it"
        )
    return (
        f"{how} before the first checkpoint: {out} holds nothing to resume; "
        f"python -m varemi finetune {data} --out {out} --overwrite starts again"
    )


def check_new_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be created or written, before any work.

    Args:
        path: The folder to create (or fill).
        option: The option that named it (``--out``).

    Raises:
        TrainError: an existing non-folder, or a nearest existing parent that is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TrainError(f"{option} {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not (probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)):
        raise TrainError(f"{option} {path}: cannot write there ({probe} is not writable)")


def make_readable(run: Path) -> None:
    """Give the run's files the usual permissions (0644 under the umask, not 0600).

    ``save_pretrained`` writes ``model.safetensors`` through a private temporary file;
    everything a run holds should be as readable as the rest of it.

    Args:
        run: The run folder.
    """
    umask = os.umask(0)
    os.umask(umask)
    for p in Path(run).iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)
