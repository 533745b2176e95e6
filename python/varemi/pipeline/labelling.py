"""The ``labels`` command: label a MIDI folder, or fit a labeller to human labels (``--fit``).

:func:`label_corpus` writes the labels CSV (heuristic, or ``--labeller``);
:func:`fit_corpus` reads a CSV of human labels, computes the features of the files it
names and fits a :class:`varemi.labelling.fitted.FittedLabeller` (``labels --fit``).
Both refuse bad options before any work, with one line naming the option.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path

from varemi._base.errors import VaremiError
from varemi.labelling import label_csv
from varemi.labelling.fitted import (
    AXES,
    FittedLabeller,
    fit_labeller,
    load_labeller,
    write_labeller,
)
from varemi.labelling.heuristic import (
    LABEL_FEATURES,
    check_label_params,
    label_folder,
)
from varemi.music.files import list_midi_files
from varemi.pipeline.params import MidiDirError


def _midi_files(midi_dir: Path) -> list[str]:
    """The MIDI files of ``--midi-dir``, refusing a folder that is missing or holds none."""
    if not Path(midi_dir).is_dir():
        raise MidiDirError(f"--midi-dir {midi_dir} is not a folder")
    files = list_midi_files(midi_dir)
    if not files:
        raise MidiDirError(f"--midi-dir {midi_dir} holds no .mid or .midi file")
    return files


def _reasons(rejects) -> str:
    return ", ".join(f"{r}: {n}" for r, n in sorted(Counter(r[1] for r in rejects).items()))


def label_corpus(
    midi_dir: Path,
    out: Path,
    *,
    workers: int | None = None,
    jitter: float = 0.0,
    jitter_seed: int = 0,
    labeller: Path | None = None,
    quiet: bool = False,
) -> tuple[int, list[tuple[str, str, str]]]:
    """``labels``: label every MIDI file of a folder and write the labels CSV.

    Args:
        midi_dir: The MIDI folder.
        out: The CSV to write (refused if it is a folder, a MIDI file or someone's file).
        workers: Worker processes (None: every core).
        jitter: Label noise.
        jitter_seed: Its seed.
        labeller: A labeller file (``labels --fit``); None: the heuristic.
        quiet: No progress bar.

    Returns:
        ``(files labelled, rejects)``.

    Raises:
        VaremiError: a bad option, a folder without MIDI files, or no file labelled
            (nothing is written then).
    """
    label_csv.check_labels_out(out)  # before any work: never a folder, a MIDI or someone's file
    check_label_params(jitter, jitter_seed, "--jitter", "--jitter-seed")
    model = load_labeller(labeller) if labeller is not None else None
    files = _midi_files(midi_dir)
    df, rejects = label_folder(
        midi_dir,
        files=files,
        workers=workers,
        jitter=jitter,
        seed=jitter_seed,
        progress=not quiet,
        labeller=model,
    )
    if len(df) == 0:
        raise VaremiError(
            f"no file of --midi-dir {midi_dir} could be labelled: {len(rejects)} rejected "
            f"({_reasons(rejects)}); nothing was written to --out {out}"
        )
    label_csv.write_labels_csv(df, out)
    return len(df), rejects


def check_labeller_out(out: Path) -> None:
    """Refuse a ``labels --fit --out`` that is not a JSON path or would replace someone's file.

    Args:
        out: The labeller file to write.

    Raises:
        OutputFileError: not a ``.json`` path, a folder, in a folder that does not exist,
            or an existing file that is not a varemi labeller file.
    """
    if out.is_dir():
        raise label_csv.OutputFileError(f"--out {out} is a folder; give the labeller file to write")
    if out.suffix.lower() != ".json":
        raise label_csv.OutputFileError(
            f"--out {out}: with --fit, --out is the labeller file to write, a .json path"
        )
    if not out.parent.is_dir():
        raise label_csv.OutputFileError(f"--out {out}: the folder {out.parent} does not exist")
    if out.exists() and out.stat().st_size:
        try:
            load_labeller(out)
        except VaremiError:
            raise label_csv.OutputFileError(
                f"--out {out} exists and is not a varemi labeller file; varemi only replaces "
                "its own: choose another file"
            ) from None


def _groups(spec: str | None, human: Path, files: list[str], midi_dir: Path) -> dict[str, str]:
    """``--groups``: a ``filename,group`` CSV, or the name of a column of the human CSV."""
    if spec is None:
        return {}
    if not str(spec).strip():
        raise VaremiError("--groups is empty; give a CSV filename,group or a column name")
    if Path(spec).is_file():
        return label_csv.read_groups(spec, files, "group", root=midi_dir)
    header = label_csv.read_header(human)
    if str(spec).strip().lower() in header:
        return label_csv.read_groups(human, files, str(spec), root=midi_dir)
    raise VaremiError(
        f"--groups {spec} is neither a file nor a column of --fit {human} "
        f"(its columns: {', '.join(header)})"
    )


def fit_corpus(
    human: Path,
    midi_dir: Path,
    out: Path,
    *,
    label_range: tuple[float, float] | None = None,
    groups: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
) -> FittedLabeller:
    """``labels --fit``: fit a labeller to the human labels of a folder's files.

    The files of ``midi_dir`` with a row in ``human`` (matched as ``build --labels``
    matches rows) are labelled with varemi's features and a
    :class:`varemi.labelling.fitted.FittedLabeller` is fitted to their human labels
    and written to ``out``; files without a row are left out.

    Args:
        human: CSV ``filename,valence,arousal`` (or ``filename,quadrant``).
        midi_dir: The labelled MIDI files.
        out: The labeller file (``.json``).
        label_range: The human values' scale; None: [-1, 1].
        groups: A ``filename,group`` CSV or a column of ``human``; None: each file alone.
        workers: Worker processes for the features.
        quiet: No progress bar or summary.

    Returns:
        The labeller as written (named by its sha256).

    Raises:
        VaremiError: a bad option or CSV, no file with a row, or data that cannot be
            fitted (a single group, an axis with one sign only).
    """
    check_labeller_out(out)
    label_csv.check_label_range(label_range)
    files = _midi_files(midi_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", label_csv.LabelsCSVWarning)
        table, bad, unmatched = label_csv.read_labels_csv(human, files, label_range, root=midi_dir)
    group_of = _groups(groups, human, files, midi_dir)
    if not quiet:
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        if unmatched:
            shown = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
            print(
                f"warning: {len(unmatched)} row(s) of {human} name no MIDI file: {shown}",
                file=sys.stderr,
            )
        for name, reason, detail in bad:
            if reason != "unlabelled":
                print(f"  skipped {name}: {reason} {detail}", file=sys.stderr)
    if not table:
        hint = ""
        if label_range is None and any(r[1] == "bad_label" for r in bad):
            hint = "; ratings outside [-1, 1] need their scale: --label-range LOW HIGH"
        raise VaremiError(
            f"no file of --midi-dir {midi_dir} has a usable row in --fit {human} "
            f"({_reasons(bad) or 'no rows'}){hint}"
        )
    df, rejects = label_folder(midi_dir, files=sorted(table), workers=workers, progress=not quiet)
    if not quiet:
        for name, reason, detail in rejects:
            print(f"  skipped {name}: {reason} {detail}", file=sys.stderr)
    rows = df.to_dict("records")
    features = [{k: r[k] for k in LABEL_FEATURES} for r in rows]
    names = [r["filename"] for r in rows]
    training = {
        "human_csv": Path(human).name,
        "files": len(names),
        "label_range": list(label_range) if label_range else None,
        "groups": groups if groups is not None else "each file its own group",
        "unlabelled_files_left_out": sum(1 for r in bad if r[1] == "unlabelled"),
    }
    model = fit_labeller(
        features, [table[n] for n in names], [group_of.get(n, n) for n in names], training
    )
    written = write_labeller(model, out)
    if not quiet:
        print(summary(written, out), file=sys.stderr)
    return written


def summary(model: FittedLabeller, out: Path) -> str:
    """What ``labels --fit`` prints: the cross-validated figures and the heaviest weights."""
    info = json.loads(model.info)
    cv = info["cross_validation"]
    lines = [
        f"labels --fit: {cv['files']} files, {cv['groups']} groups, {cv['folds']}-fold "
        f"grouped cross-validation -> {out} (sha256 {model.sha256[:12]})"
    ]
    for axis in AXES:
        m = getattr(model, axis)
        figures = json.loads(m.cv)
        heavy = sorted(
            zip((i.feature for i in model.inputs), m.weights, strict=True), key=lambda x: -abs(x[1])
        )[:4]
        lines.append(
            f"  {axis}: cross-validated AUC {figures['auc']:.3f}, accuracy "
            f"{figures['accuracy']:.3f} (lambda {m.lam:.3g}); heaviest weights: "
            + ", ".join(f"{f} {w:+.2f}" for f, w in heavy)
        )
    if cv.get("quadrant_accuracy") is not None:
        lines.append(f"  quadrant accuracy (cross-validated): {cv['quadrant_accuracy']:.3f}")
    return "\n".join(lines)
