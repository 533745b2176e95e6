"""``build``: a MIDI folder to an emotion-conditioned Hugging Face dataset.

The entry point is :func:`build`. It checks every parameter before any work (each by
the validator of the module that owns it), loads the tokenizer, then runs the stages
of :func:`_build_into` in order, one function each:

1. labels: the user's CSV (or none: the workers compute them);
2. tokenise: every file (and augmented copy, :mod:`varemi.augment`) to token ids, in
   worker processes, through the token cache (:mod:`varemi.corpus`, :mod:`varemi.encoder`);
3. split: duplicate groups (:mod:`varemi.duplicates`) and which file goes to ``val``
   (:mod:`varemi.split`); token ids wait in a spool file until the groups are known;
4. bins: each file's conditioning bins (:mod:`varemi.conditioning`), and with
   ``--label-scope window`` each window's (its labels come from the workers, stage 2);
5. windows + prefix: conditioned examples (:mod:`varemi.windows`);
6. export: Arrow shards laid out as ``datasets`` saves them (:mod:`varemi.export`);
7. ``labels.csv``, ``tokenizer.json``, ``rejects.csv``, a checksum per split and
   ``dataset_info.json``.

Stages 2-6 stream, so memory does not grow with the corpus: duplicate grouping and
``--binning quantile`` park the token ids in a spool file of the temporary output until
the groups or the bins are known. Everything is written into a temporary folder
(:class:`varemi.output.Staging`) that is swapped into place only when complete
(DESIGN.md contracts 5-9).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from varemi import conditioning
from varemi.cache import default_cache_dir, usable_cache_dir
from varemi.cluster import check_engine
from varemi.corpus import check_workers, peak_rss_mb
from varemi.encoder import EncodeOptions, TokenEncoder, check_encode_params
from varemi.errors import EmptyDatasetError, OutputFolderError, PitchRangeError, VaremiError
from varemi.export import (
    FORMATS,
    SplitWriter,
    write_dataset_dict,
    write_json,
    write_parquet_card,
)
from varemi.output import Staging, check_inputs_outside, resolve_out
from varemi.pitch import PITCH_POLICIES, check_pitch_params
from varemi.split import check_split_params, val_mask
from varemi.windows import check_window_params

FORMAT_VERSION = 2


class MidiDirError(VaremiError):
    """The MIDI folder is missing or holds no MIDI file."""


@dataclass
class BuildParams:
    """Every build parameter, under its command-line option name (dashes as underscores).

    Attributes:
        midi_dir: Folder of MIDI files (searched recursively).
        out: Output folder.
        labels: A CSV of ``filename,valence,arousal``; None computes labels.
        label_range: The CSV's scale ``(low, high)``, mapped linearly to [-1, 1] (and
            written so to ``out/labels.csv``); None: the CSV holds values in [-1, 1].
        tokenizer: Hub id, local folder or tokenizer.json, or ``builtin``.
        window_size: Tokens per window (W).
        stride: Distance between window starts (S).
        min_window_tokens: Shortest window kept.
        bins: Bins per axis (odd).
        binning: ``uniform`` or ``quantile``.
        train_split: Fraction of files meant for ``train``, in (0, 1].
        seed: Split seed (0..2**64-1).
        pitch_policy: ``clamp``, ``fold`` or ``drop``.
        pitch_range: Inclusive pitch range; None means the tokenizer's vocabulary range.
        tracks: ``merge`` or ``first``.
        bos: Start every example with the tokenizer's BOS token: ``[BOS, VAL, ARO] + window``.
        encoder: ``auto`` (native REMI + BPE when the tokenizer is covered exactly, else
            MidiTok), ``native`` (refuse a tokenizer it does not cover) or ``miditok``.
        max_minutes: Files lasting longer are rejected as ``too_long``.
        max_file_mb: Files larger are rejected as ``too_large``.
        workers: Worker processes; None means every core.
        jitter: Standard deviation of label noise (computed labels only).
        jitter_seed: Seed of that noise.
        cache_dir: Token cache folder; None means the user cache folder.
        cache: Whether to use the token cache.
        overwrite: Replace a previous varemi dataset in ``out``.
        quiet: No progress bars or summary.
        profile: Print where the time and memory went (also kept in dataset_info.json).
        dedup: ``group`` (duplicates share a split), ``drop`` (keep the first copy by
            path, reject the others as ``duplicate``) or ``off``.
        groups: A CSV of ``filename,group``: files of one group share a split.
        group_by: ``parent``: the files of one folder share a split.
        augment_transpose: Semitone offsets of transposed copies (``-3..3``, ``-2,2``).
        augment_velocity: Velocity offsets of copies (``-4,4``).
        augment_tempo: Tempo changes of copies in percent (``-10,10``).
        engine: ``local`` (this machine's worker pool) or ``ray`` (Ray Data,
            :mod:`varemi.cluster`: every option, the same rows as ``local``, in two
            passes over the corpus).
        ray_address: With ``ray``: None starts a local Ray; ``auto`` or an address
            connects to a running cluster.
        format: ``arrow`` (``save_to_disk`` layout) or ``parquet`` (Parquet shards).
        label_scope: ``file`` (every window carries its file's labels) or ``window``
            (every window is labelled from its own decoded music; computed labels only).
    """

    midi_dir: Path
    out: Path
    labels: Path | None = None
    label_range: tuple[float, float] | None = None
    tokenizer: str = "Natooz/Maestro-REMI-bpe20k"
    window_size: int = 1024
    stride: int = 512
    min_window_tokens: int = 256
    bins: int = 9
    binning: str = "uniform"
    train_split: float = 0.9
    seed: int = 42
    pitch_policy: str = "clamp"
    pitch_range: tuple[int, int] | None = None
    tracks: str = "merge"
    bos: bool = False
    encoder: str = "auto"
    max_minutes: float = 60.0
    max_file_mb: float = 64.0
    workers: int | None = None
    jitter: float = 0.0
    jitter_seed: int = 0
    cache_dir: Path | None = None
    cache: bool = True
    overwrite: bool = False
    quiet: bool = False
    profile: bool = False
    dedup: str = "group"
    groups: Path | None = None
    group_by: str | None = None
    augment_transpose: str | None = None
    augment_velocity: str | None = None
    augment_tempo: str | None = None
    engine: str = "local"
    ray_address: str | None = None
    format: str = "arrow"
    label_scope: str = "file"


LABEL_SCOPES = ("file", "window")
"""The values of ``build --label-scope``."""


def check_label_scope(scope: str, labels: Path | None) -> None:
    """Refuse a ``--label-scope`` that is unknown or that the other options exclude.

    Args:
        scope: ``file`` or ``window``.
        labels: The ``--labels`` CSV, or None.

    Raises:
        VaremiError: an unknown scope, or ``window`` with ``--labels``.
    """
    if scope not in LABEL_SCOPES:
        raise VaremiError(f"--label-scope must be one of {', '.join(LABEL_SCOPES)}, got {scope!r}")
    if scope == "window" and labels is not None:
        raise VaremiError(
            "--label-scope window labels each window from its own music; a --labels CSV "
            "gives per-file labels only: drop --labels, or use --label-scope file"
        )


@dataclass
class BuildResult:
    """What a build produced.

    Attributes:
        out: The output folder.
        info: The content of ``dataset_info.json``.
    """

    out: Path
    info: dict = field(default_factory=dict)


def check_params(p: BuildParams, midi_dir: bool = True) -> None:
    """Refuse bad parameters before any work, with one line naming the option.

    Each parameter is checked by the validator of the module that owns it; their
    messages name the option as the user types it (``--window-size``).

    Args:
        p: The build parameters.
        midi_dir: Also check that ``p.midi_dir`` is a folder (the demo checks the
            other parameters before it writes its corpus).

    Raises:
        VaremiError: a subclass naming the first bad parameter by its option.
    """
    check_window_params(p.window_size, p.stride, p.min_window_tokens)
    conditioning.check_bins(p.bins)
    conditioning.check_binning(p.binning)
    check_split_params(p.seed, p.train_split)
    check_encode_params(p.encoder, p.tracks, p.max_minutes, p.max_file_mb)
    if p.pitch_range is not None:
        check_pitch_params(p.pitch_policy, *p.pitch_range)
    elif p.pitch_policy not in PITCH_POLICIES:
        check_pitch_params(p.pitch_policy, 21, 108)
    check_workers(p.workers)
    from varemi.labels import check_label_params

    check_label_params(p.jitter, p.jitter_seed, "--jitter", "--jitter-seed")
    if p.label_range is not None:
        from varemi.labels import check_label_range

        if p.labels is None:
            raise VaremiError("--label-range gives the scale of a --labels CSV; there is none")
        check_label_range(p.label_range)
    check_engine(p.engine, p.ray_address)
    check_label_scope(p.label_scope, p.labels)
    if p.format not in FORMATS:
        raise VaremiError(f"--format must be one of {', '.join(FORMATS)}, got {p.format!r}")
    if p.jitter and p.labels is not None:
        raise VaremiError(
            "--jitter applies to computed labels only; it cannot be used with --labels"
        )
    if midi_dir and not p.midi_dir.is_dir():
        raise MidiDirError(f"--midi-dir {p.midi_dir} is not a folder")
    if p.labels is not None and not p.labels.is_file():
        raise VaremiError(f"--labels {p.labels} is not a file")
    from varemi.duplicates import check_options

    check_options(p.dedup, p.groups, p.group_by)
    _augmentations(p)
    check_output_folder(p.out, p.overwrite)
    if p.overwrite and is_varemi_dataset(p.out):  # never replace an input with the output
        cache = (p.cache_dir or default_cache_dir()) if p.cache else None
        inputs = {"--midi-dir": p.midi_dir, "--labels": p.labels, "--cache-dir": cache}
        check_inputs_outside(resolve_out(p.out), inputs)


def param_warnings(p: BuildParams) -> list[str]:
    """Parameters that are valid but probably not what the user meant.

    Args:
        p: The build parameters (already checked).

    Returns:
        One line per suspicious parameter (empty when none is).
    """
    lines = []
    if p.bins == 1:
        lines.append(
            "--bins 1: every example gets the same [VAL=+0] [ARO=+0] prefix, "
            "so the dataset carries no conditioning signal"
        )
    if p.stride > p.window_size:
        lines.append(
            f"--stride {p.stride} is larger than --window-size {p.window_size}: "
            f"{p.stride - p.window_size} tokens between windows are never used"
        )
    return lines


def is_varemi_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset that varemi built (its ``dataset_info.json``).

    Args:
        folder: A folder.

    Returns:
        True when ``folder/dataset_info.json`` parses and names a varemi version.
    """
    import json

    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "varemi_version" in info and "format_version" in info


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose someone's work (DESIGN.md contract 9).

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


# --------------------------------------------------------------------------- build
def build(p: BuildParams) -> BuildResult:
    """Build the dataset described by ``p`` into ``p.out``.

    Args:
        p: The build parameters.

    Returns:
        The output folder and the content of its ``dataset_info.json``.

    Raises:
        VaremiError: a bad parameter (before any work is done).
        TokenizerUnavailableError: the tokenizer cannot be loaded.
        OutputFolderError: ``--out`` cannot be written (refused before any work), an
            input lies inside an output ``--overwrite`` would replace, or writing
            failed (a full disk); the previous output is intact.
        EmptyDatasetError: no file was kept (nothing is written).
    """
    from varemi.files import list_midi_files

    started = time.perf_counter()
    for name in ("midi_dir", "out"):  # Path("") would silently be the current folder
        if getattr(p, name) == "":
            raise VaremiError(f"--{name.replace('_', '-')} is empty; give a path")
    p.midi_dir, p.out = Path(p.midi_dir), Path(p.out)
    p.labels = Path(p.labels) if p.labels is not None else None
    p.groups = Path(p.groups) if p.groups is not None else None
    Staging.remove_dead(resolve_out(p.out))  # before the checks: it may restore a lost output
    check_params(p)
    if not p.quiet:
        for line in param_warnings(p):
            print(f"warning: {line}", file=sys.stderr)
    staging = Staging.create(resolve_out(p.out))  # `--out .` works; unwritable: refused now
    try:
        base, encoder = _load_tokenizer(p)
        files = list_midi_files(p.midi_dir)
        if not files:
            raise MidiDirError(f"--midi-dir {p.midi_dir} holds no .mid or .midi file")
        groups = _user_groups(p, files)  # a bad --groups CSV is refused before any work
        info = _build_into(p, staging.tmp, base, encoder, files, groups, started)
        _check_kept(info, p)
        staging.commit(is_varemi_dataset)
    except OSError as e:  # a full disk, a vanished folder: one line, the old output intact
        staging.discard()
        raise OutputFolderError(
            f"the build into --out {p.out} failed: {e}; "
            "nothing was replaced (any previous output is intact)"
        ) from e
    except BaseException:
        staging.discard()  # the previous output stays as it was
        raise
    if not p.quiet or p.profile:
        print(summary(info, p.out, p.profile), file=sys.stderr)
    return BuildResult(p.out, info)


def _check_kept(info: dict, p: BuildParams) -> None:
    """Refuse a dataset that kept no file; warn loudly about an empty ``val`` split."""
    c = info["counts"]
    if c["files_kept"] == 0:
        reasons = ", ".join(f"{r}: {n}" for r, n in c["rejected_by_reason"].items())
        short = c["files_without_windows"]
        raise EmptyDatasetError(
            f"no file was kept: {c['files_seen']} seen, {c['files_rejected']} rejected"
            + (f" ({reasons})" if reasons else "")
            + (f", {short} too short for a window" if short else "")
            + f"; nothing was written to --out {p.out}"
        )
    if c["examples"]["val"] == 0 and p.train_split < 1.0:
        print(
            f"warning: the val split is empty: none of the {c['files_kept']} kept files "
            f"hashed into it (--train-split {p.train_split:g}, --seed {p.seed}); "
            "evaluate on another corpus, or change --seed",
            file=sys.stderr,
        )


@dataclass
class _Run:
    """What the stages of one build record as they go (for ``dataset_info.json``)."""

    files: list[str]
    workers: int
    cache_dir: str | None
    started: float
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    label_table: dict[str, tuple[float, float]] | None = None
    label_rows: LabelRowSpool | None = None  # computed labels only
    usable: list[str] = field(default_factory=list)
    user_groups: dict[str, str] = field(default_factory=dict)
    groups_how: str = ""
    grouping: object = None  # varemi.duplicates.Grouping, unless --dedup off
    is_val: np.ndarray | None = None
    edges: list[np.ndarray] | None = None
    vbins: list[int] = field(default_factory=list)
    abins: list[int] = field(default_factory=list)
    no_windows: int = 0
    windows_labelled: int = 0
    window_fallback: int = 0
    cache_stats: Counter = field(default_factory=Counter)
    worker_seconds: Counter = field(default_factory=Counter)
    worker_rss: float = 0.0
    stage: dict[str, float] = field(default_factory=dict)
    checksums: dict | None = None
    tmp: Path | None = None


def _build_into(
    p: BuildParams, tmp: Path, base, encoder, files: list[str], groups, started: float
) -> dict:
    """The stages of a build, in order, writing into the temporary folder ``tmp``."""
    from varemi.vocab import add_conditioning_tokens

    run = _Run(
        files=files,
        workers=p.workers or os.cpu_count() or 1,
        cache_dir=usable_cache_dir(p.cache_dir or default_cache_dir()) if p.cache else None,
        started=started,
        tmp=tmp,
    )
    run.user_groups, run.groups_how = groups
    _labels_stage(p, run)
    if run.label_table is None:  # computed labels: each row goes to disk as it arrives
        run.label_rows = LabelRowSpool(tmp / "_labels.csv")
    try:
        cond_tokens = add_conditioning_tokens(base.tokenizer, p.bins)
        bos = int(base.tokenizer.vocab["BOS_None"]) if p.bos else None
        if p.engine == "ray":  # tokenise to export on Ray Data, the same rows (varemi.cluster)
            from varemi.cluster import ray_stages

            job, items = _job(p, run, base, encoder), _items(p, run)
            writers = ray_stages(p, run, job, items, cond_tokens, bos, tmp)
        else:
            tokenised = _tokenise_stage(p, run, base, encoder)
            split = _split_stage(p, run, tmp, tokenised)
            binned = _bins_stage(p, run, split)
            batches = _windows_stage(p, run, cond_tokens, bos, binned)
            writers = _export_stage(run, tmp, batches, p.format)
        if p.format == "parquet":
            # datasets cannot load a Parquet split without rows: it stays out of the card
            write_parquet_card(tmp, [s for s, w in writers.items() if w.examples] or list(writers))
        _save_stage(p, run, tmp, base.tokenizer)
    finally:
        if run.label_rows is not None:
            run.label_rows.close()
    _checksum_stage(run, tmp, writers)
    info = _dataset_info(p, run, base, encoder, cond_tokens, writers)
    write_json(tmp / "dataset_info.json", info)
    return info


def _load_tokenizer(p: BuildParams):
    """Load the base tokenizer, resolve ``--pitch-range`` and pick the encoder (no work yet)."""
    from varemi.vocab import load_base_tokenizer, vocab_pitch_range

    base = load_base_tokenizer(p.tokenizer)
    vocab_range = vocab_pitch_range(base.tokenizer)
    if p.pitch_range is None:
        p.pitch_range = vocab_range
    elif not (vocab_range[0] <= p.pitch_range[0] and p.pitch_range[1] <= vocab_range[1]):
        raise PitchRangeError(
            f"--pitch-range {p.pitch_range[0]} {p.pitch_range[1]} is outside the tokenizer's "
            f"pitches {vocab_range[0]}..{vocab_range[1]}"
        )
    check_pitch_params(p.pitch_policy, *p.pitch_range)
    if p.bos and "BOS_None" not in base.tokenizer.vocab:
        raise VaremiError(f"--bos: tokenizer {p.tokenizer!r} has no BOS token (BOS_None)")
    if not p.quiet:
        from varemi.models import window_warning

        warning = window_warning(p.tokenizer, p.window_size)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    encoder = TokenEncoder(base.tokenizer, p.encoder)  # refuses `native` before any work
    if encoder.reason and not p.quiet:
        print(f"note: using MidiTok's encoder: {encoder.reason}", file=sys.stderr)
    return base, encoder


def _labels_stage(p: BuildParams, run: _Run) -> None:
    """The user's labels CSV (its unusable rows become rejects); computed labels come later.

    Files whose names are not valid UTF-8 are rejected first (``bad_name``).
    """
    from varemi.files import split_bad_names

    named, run.rejects[:0] = split_bad_names(run.files)
    if p.labels is not None:
        run.label_table = _csv_labels(p, named, run.rejects)
    rejected = {r[0] for r in run.rejects}
    run.usable = [f for f in named if f not in rejected]


def _csv_labels(p: BuildParams, files: list[str], rejects: list) -> dict[str, tuple[float, float]]:
    """The user's labels per usable file; the other files join ``rejects``."""
    import warnings

    from varemi import labels as labelling

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", labelling.LabelsCSVWarning)
        table, bad, unmatched = labelling.read_labels_csv(p.labels, files, p.label_range)
    for w in caught:
        if not issubclass(w.category, labelling.LabelsCSVWarning):
            warnings.warn(w.message, w.category, stacklevel=2)
        elif not p.quiet:
            print(f"warning: {w.message}", file=sys.stderr)
    rejects.extend(bad)
    if unmatched and not p.quiet:
        shown = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
        print(
            f"warning: {len(unmatched)} row(s) of {p.labels} name no MIDI file: {shown}",
            file=sys.stderr,
        )
    return table


def _job(p: BuildParams, run: _Run, base, encoder):
    """What every worker computes for a file (:class:`varemi.corpus.Job`)."""
    from varemi.corpus import Job, labeller_version

    return Job(
        root=str(p.midi_dir),
        tokenizer_path=str(base.path),
        tokenizer_sha256=base.sha256,
        encoder=encoder.name,
        options=EncodeOptions(
            p.pitch_policy, tuple(p.pitch_range), p.tracks, p.max_minutes, p.max_file_mb
        ),
        cache_dir=run.cache_dir,
        labels=None
        if run.label_table is not None
        else (p.jitter, p.jitter_seed, labeller_version()),
        fingerprint=p.dedup != "off",
        window_labels=(p.window_size, p.stride, p.min_window_tokens)
        if p.label_scope == "window"
        else None,
    )


def _items(p: BuildParams, run: _Run) -> tuple[list, tuple[str, ...]]:
    """What is tokenised, in order: each usable file, then its copies (``--augment-*``).

    Returns:
        ``(items, copies)``: ``items`` as :func:`varemi.corpus.tokenise_corpus` takes them
        (plain paths without augmentation, else ``(path, augmentation)`` pairs, item ``k``
        being file ``k // len(copies)``), and the augmentation names (``""`` first: the
        original).
    """
    copies = ("", *_augmentations(p))
    items = [(f, a) for f in run.usable for a in copies] if len(copies) > 1 else run.usable
    return items, copies


def take_result(
    p: BuildParams, run: _Run, i: int, aug: str, r, n_tokens: int, failed: set[int]
) -> _Labels | None:
    """Record one item's result as both engines do; its labels when it is used.

    The rules: the item's cache status, timings and worker memory are counted; a reject
    is recorded (a copy's detail names its augmentation), and a rejected original drops
    its copies (``failed``); a computed label row of an original goes to ``labels.csv``;
    an original shorter than a window counts as ``files_without_windows``.

    Args:
        p: The build parameters.
        run: The build's record (updated).
        i: The file's index in ``run.usable``.
        aug: The augmentation (``""``: the original).
        r: Its :class:`varemi.corpus.FileResult` (``ids`` may be absent: ``n_tokens``
            says how many there are).
        n_tokens: Its number of token ids (0 when rejected).
        failed: Indices of the files whose original was rejected (updated).

    Returns:
        Its :class:`_Labels` (with its windows' labels when ``r`` has them), or None
        when the item is rejected or its original was.
    """
    run.cache_stats[r.cache] += 1
    run.worker_rss = max(run.worker_rss, r.peak_rss_mb)
    run.worker_seconds.update(r.timings)
    if i in failed:
        return None
    if r.reject is not None:
        reason, detail = r.reject
        detail = f"augmentation {aug}: {detail}" if aug else detail
        run.rejects.append((run.usable[i], reason, detail))
        if not aug:  # the original failed: its copies are not used either
            failed.add(i)
        return None
    if r.label is not None:
        if not aug:  # labels.csv lists the originals; copies carry theirs in the rows
            run.label_rows.append(r.label)
        valence, arousal = r.label["valence"], r.label["arousal"]
    else:
        valence, arousal = run.label_table[run.usable[i]]
    if n_tokens < p.min_window_tokens and not aug:
        run.no_windows += 1
    labels = _Labels(valence, arousal)
    if r.window_labels is not None:  # --label-scope window
        labels.window_valence, labels.window_arousal = r.window_labels
        labels.window_fallback = r.window_fallback
    return labels


def _tokenise_stage(p: BuildParams, run: _Run, base, encoder):
    """Each usable file's (and augmented copy's) token ids and labels, in order.

    Yields ``(index, augmentation, ids, labels, fingerprint)``: a file, then its copies
    in string order of their names (``""`` is the original). ``labels`` is a
    :class:`_Labels`: the file's, and with ``--label-scope window`` its windows'.
    Rejects are recorded (:func:`take_result`); a file whose original is rejected gives
    no copy either.
    """
    from tqdm import tqdm

    from varemi.corpus import tokenise_corpus

    job = _job(p, run, base, encoder)
    items, copies = _items(p, run)
    failed: set[int] = set()
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked
    bar = tqdm(total=len(items), desc="tokenise", unit="file", disable=p.quiet, file=sys.stderr)
    for k, r in enumerate(tokenise_corpus(job, items, run.workers)):
        i, aug = k // len(copies), copies[k % len(copies)]
        bar.update(1)
        labels = take_result(p, run, i, aug, r, 0 if r.ids is None else len(r.ids), failed)
        if labels is not None:
            yield i, aug, r.ids, labels, r.fingerprint
    bar.close()


def _split_stage(p: BuildParams, run: _Run, tmp: Path, tokenised):
    """Which file goes to ``val`` (contract 6, by group key in format 2), streamed through.

    With ``--dedup off`` the split is known up front (the user's groups only). Otherwise
    every file's fingerprint is needed first: token ids are parked on disk (memory stays
    flat) until the duplicate groups are formed, and ``--dedup drop`` rejects copies.
    """
    if p.dedup == "off":
        decide_split(p, run, None)
        for i, aug, ids, labels, _ in tokenised:
            yield i, aug, ids, labels
        return
    from varemi.duplicates import DuplicateIndex

    index, spool, parked = DuplicateIndex(), _Spool(tmp / "_spool.bin"), []
    try:
        for i, aug, ids, labels, fingerprint in tokenised:
            if not aug:
                index.add(run.usable[i], fingerprint)
            parked.append((i, aug, spool.put(ids), labels))
        drop = decide_split(p, run, index)
        for i, aug, ref, labels in parked:
            if run.usable[i] not in drop:
                yield i, aug, spool.get(ref), labels
    finally:
        spool.close()


def decide_split(p: BuildParams, run: _Run, index) -> dict:
    """Form the groups and the split, once every file's fingerprint is known (both engines).

    Sets ``run.grouping`` and ``run.is_val`` (contract 6: a grouped file hashes its
    group's key) and records ``--dedup drop``'s rejects.

    Args:
        p: The build parameters.
        run: The build's record (updated).
        index: The :class:`varemi.duplicates.DuplicateIndex` of every used original, in
            file order; None with ``--dedup off`` (the user's groups only).

    Returns:
        The files ``--dedup drop`` rejects (empty otherwise): they and their copies are
        left out of the data and of ``labels.csv``.
    """
    t = time.perf_counter()
    if index is None:
        run.is_val = val_mask(run.usable, p.seed, p.train_split, run.user_groups)
        run.stage["split"] = time.perf_counter() - t
        return {}
    run.grouping = grouping = index.grouping(run.user_groups, p.dedup, run.groups_how)
    run.is_val = val_mask(run.usable, p.seed, p.train_split, grouping.key)
    for f, (first, kind, sim) in sorted(grouping.drop.items()):
        run.rejects.append((f, "duplicate", f"{kind} duplicate of {first} (similarity {sim:.3f})"))
    run.stage["split"] = time.perf_counter() - t
    return grouping.drop


@dataclass
class _Labels:
    """A file's (or copy's) labels and bins as they go through the stages.

    With ``--label-scope window`` the ``window_*`` arrays hold one entry per window
    (the windows :func:`varemi.kernels.make_examples` cuts, in order); else None.
    """

    valence: float
    arousal: float
    window_valence: np.ndarray | None = None
    window_arousal: np.ndarray | None = None
    window_fallback: int = 0
    valence_bin: int = 0
    arousal_bin: int = 0
    window_valence_bin: np.ndarray | None = None
    window_arousal_bin: np.ndarray | None = None


def _bins_stage(p: BuildParams, run: _Run, tokenised):
    """Each file with its bins, and its windows' bins with ``--label-scope window`` (contract 2)."""
    if p.binning == "uniform":  # a file's bins depend on it alone: stream it through
        for i, aug, ids, labels in tokenised:
            bin_items(p, run, [labels])
            yield i, aug, ids, labels
        return
    # Equal-count bins need every label first. Two passes keep memory flat: the first
    # parks each file's ids in a spool file of the temporary output and keeps only the
    # labels; the second reads the ids back, file by file, once the bins are known.
    # With --label-scope window the edges are those of all windows' labels (what the
    # rows hold), and every window's labels are kept until then (16 bytes a window).
    spool, parked = _Spool(run.tmp / "_quantile_ids.i32"), []
    try:
        for i, aug, ids, labels in tokenised:
            parked.append((i, aug, spool.put(ids), labels))
        bin_items(p, run, [x for _, _, _, x in parked])
        for i, aug, ref, labels in parked:
            yield i, aug, spool.get(ref), labels
    finally:
        spool.close()


def bin_items(p: BuildParams, run: _Run, items: list[_Labels]) -> None:
    """Set the bins of used items' labels, and of their windows' (both engines).

    Uniform bins depend on each label alone, so any subset of the items can be binned
    at a time. Quantile edges are cut over what the rows hold: every window's labels
    with ``--label-scope window``, else every item's; ``items`` must then be every used
    item, in order (their edges go to ``run.edges``, see :func:`label_bins`).

    Args:
        p: The build parameters.
        run: The build's record.
        items: The items' labels (updated in place).
    """
    if p.binning == "uniform":

        def derive(v, axis):
            return conditioning.discretise_uniform(v, p.bins)

    else:
        per_row = [
            np.column_stack([x.window_valence, x.window_arousal])
            if x.window_valence is not None
            else np.array([[x.valence, x.arousal]])
            for x in items
        ]
        values = np.concatenate(per_row or [np.zeros((0, 2))]).astype(np.float64).reshape(-1, 2)
        label_bins(p, run, values)  # the edges (run.edges) and their warnings

        def derive(v, axis):
            return conditioning.discretise_quantile(v, run.edges[axis], p.bins)

    for x in items:
        _apply_bins(x, derive)


def record_bins(run: _Run, x: _Labels) -> tuple | None:
    """Count an item's bins in the histograms (what its rows hold); its windows' labels.

    Returns:
        With ``--label-scope window``, the ``windows`` argument of
        :meth:`varemi.windows.Windower.add` (labels and bins per window); else None.
    """
    if x.window_valence is None:
        run.vbins.append(x.valence_bin)
        run.abins.append(x.arousal_bin)
        return None
    run.windows_labelled += len(x.window_valence)
    run.window_fallback += x.window_fallback
    # the histograms count what the rows hold: one entry per window
    run.vbins.extend(x.window_valence_bin.tolist())
    run.abins.extend(x.window_arousal_bin.tolist())
    return (x.window_valence, x.window_arousal, x.window_valence_bin, x.window_arousal_bin)


def label_bins(p: BuildParams, run: _Run, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (valence, arousal) bins of labels (contract 2), as both engines compute them.

    Uniform bins depend on each label alone. Quantile bins are equal-count bins over
    ``values``, which must then be every used item's labels, in order: their edges go
    to ``run.edges``, with a warning for an axis whose tied labels leave bins empty.

    Args:
        p: The build parameters.
        run: The build's record (``edges`` set with ``--binning quantile``).
        values: ``(n, 2)`` labels, valence then arousal.

    Returns:
        int8 valence bins and arousal bins, one per row of ``values``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if p.binning == "uniform":
        return tuple(conditioning.discretise_uniform(values[:, axis], p.bins) for axis in (0, 1))
    run.edges = [conditioning.quantile_edges(values[:, axis], p.bins) for axis in (0, 1)]
    vq = conditioning.discretise_quantile(values[:, 0], run.edges[0], p.bins)
    aq = conditioning.discretise_quantile(values[:, 1], run.edges[1], p.bins)
    for axis, (name, q) in enumerate((("valence", vq), ("arousal", aq))):
        used = int(np.unique(q).size)
        if 0 < used < p.bins:
            distinct = int(np.unique(values[:, axis]).size)
            print(
                f"warning: --binning quantile: the {name} labels use {used} of {p.bins} "
                f"bins (only {distinct} distinct values; tied labels share one bin)",
                file=sys.stderr,
            )
    return vq, aq


def _apply_bins(labels: _Labels, derive) -> None:
    """Set the bins of a file's labels (and of its windows') by ``derive(values, axis)``."""

    def bins(v, a):
        return derive(np.asarray(v, np.float64), 0), derive(np.asarray(a, np.float64), 1)

    vb, ab = bins(labels.valence, labels.arousal)
    labels.valence_bin, labels.arousal_bin = int(np.ravel(vb)[0]), int(np.ravel(ab)[0])
    if labels.window_valence is not None:
        wv, wa = bins(labels.window_valence, labels.window_arousal)
        labels.window_valence_bin = np.asarray(wv, np.int8).ravel()
        labels.window_arousal_bin = np.asarray(wa, np.int8).ravel()


def _windows_stage(p: BuildParams, run: _Run, cond_tokens: dict[str, int], bos, binned):
    """Each split's conditioned examples (contract 5), batch by batch: ``(split, batch)``."""
    from varemi.windows import Windower

    windowers = {
        s: Windower(cond_tokens, p.window_size, p.stride, p.min_window_tokens, bos)
        for s in ("train", "val")
    }
    for i, aug, ids, x in binned:
        s = "val" if run.is_val[i] else "train"  # all windows of a file: its file's split
        window = record_bins(run, x)
        batch = windowers[s].add(
            run.usable[i], ids, (x.valence, x.arousal), (x.valence_bin, x.arousal_bin), aug, window
        )
        if batch is not None:
            yield s, batch
    for s, windower in windowers.items():
        batch = windower.flush()
        if batch is not None:
            yield s, batch
    run.stage["window_prepend"] = sum(w.seconds for w in windowers.values())


def _export_stage(run: _Run, tmp: Path, batches, fmt: str = "arrow") -> dict:
    """Write every batch as a shard (Arrow or Parquet), lay the splits out; the writers."""
    shard_dir = tmp / "_shards"
    shard_dir.mkdir()
    writers = {s: SplitWriter(s, shard_dir, fmt) for s in ("train", "val")}
    t = time.perf_counter()  # `batches` is lazy: files are tokenised as this loop asks
    for s, batch in batches:
        writers[s].write(batch)
    run.stage["tokenise_wall"] = time.perf_counter() - t
    t = time.perf_counter()
    for s, writer in writers.items():
        writer.finish(tmp / s)
    if fmt == "arrow":
        write_dataset_dict(tmp, list(writers))
    shutil.rmtree(shard_dir, ignore_errors=True)
    run.stage["save"] = time.perf_counter() - t
    run.stage["export"] = sum(w.seconds for w in writers.values())
    return writers


def _save_stage(p: BuildParams, run: _Run, tmp: Path, tokenizer) -> None:
    """Write ``labels.csv`` (computed labels), ``tokenizer.json`` and ``rejects.csv``."""
    from varemi import labels as labelling
    from varemi.vocab import save_tokenizer

    t = time.perf_counter()
    if run.label_table is None:  # the spooled rows, less the files --dedup drop rejected
        run.label_rows.write(tmp / "labels.csv", run.grouping.drop if run.grouping else ())
    elif p.label_range is not None:  # the labels on [-1, 1], as the dataset holds them
        mapped = [
            {"filename": f, "valence": v, "arousal": a} for f, (v, a) in run.label_table.items()
        ]
        labelling.write_label_rows(mapped, tmp / "labels.csv", ("filename", "valence", "arousal"))
    elif p.labels is not None and p.labels.resolve() == resolve_out(p.out) / "labels.csv":
        # `--labels OUT/labels.csv --overwrite`: the edited CSV survives the swap
        shutil.copyfile(p.labels, tmp / "labels.csv")
    run.stage["save"] += time.perf_counter() - t
    save_tokenizer(tokenizer, tmp / "tokenizer.json")
    _write_rejects(tmp / "rejects.csv", run.rejects)
    from varemi.duplicates import write_duplicates_csv

    user_rows = [(f, g, "user", 1.0) for f, g in sorted(run.user_groups.items())]
    write_duplicates_csv(tmp / "duplicates.csv", run.grouping.rows if run.grouping else user_rows)


def _checksum_stage(run: _Run, tmp: Path, writers: dict) -> None:
    """A content checksum per split, which ``verify`` recomputes (catches in-range edits)."""
    from varemi.integrity import dataset_checksums

    t = time.perf_counter()
    run.checksums = dataset_checksums(tmp, list(writers))
    run.stage["checksum"] = time.perf_counter() - t


def _dataset_info(p: BuildParams, run: _Run, base, encoder, cond_tokens, writers) -> dict:
    """The content of ``dataset_info.json`` (contract 7)."""
    from varemi import __version__

    label_source = "heuristic" if run.label_table is None else "csv"
    vbins_a, abins_a = np.array(run.vbins, dtype=np.int64), np.array(run.abins, dtype=np.int64)
    vedges = [float(e) for e in run.edges[0]] if run.edges else None
    aedges = [float(e) for e in run.edges[1]] if run.edges else None
    stage = run.stage
    return {
        "format_version": FORMAT_VERSION,
        "varemi_version": __version__,
        "tokenizer": {
            "source": base.source,
            "sha256": base.sha256,
            "base_vocab_size": base.base_vocab_size,
            "vocab_size": len(base.tokenizer),
        },
        "conditioning_tokens": cond_tokens,
        "special_tokens": {
            k: int(base.tokenizer.vocab[f"{k}_None"])
            for k in ("PAD", "BOS", "EOS")
            if f"{k}_None" in base.tokenizer.vocab
        },
        "encoder": {"requested": p.encoder, "used": encoder.name, "fallback": encoder.reason},
        "params": _params_record(p),
        "labels": {
            "source": label_source,
            "file": "labels.csv" if label_source == "heuristic" else str(p.labels),
            "range": list(p.label_range) if p.label_range else None,
            "mapped_file": "labels.csv" if p.label_range else None,
            "binning_edges": {"valence": vedges, "arousal": aedges} if vedges else None,
            "scope": p.label_scope,
            "windows": None
            if p.label_scope == "file"
            else {
                "labelled": run.windows_labelled,
                "from_file_label": run.window_fallback,
                "how": "each window's music ids decoded with the tokenizer and labelled "
                "like a file (with the file's --jitter noise); a window that cannot be "
                "labelled (no notes) takes its file's label; labels.csv holds the "
                "per-file labels",
            },
        },
        "counts": {
            "files_seen": len(run.files),
            "files_kept": sum(w.files_with_examples for w in writers.values()),
            "files_without_windows": run.no_windows,
            "files_rejected": len(run.rejects),
            "rejected_by_reason": dict(sorted(Counter(r[1] for r in run.rejects).items())),
            "examples": {s: w.examples for s, w in writers.items()},
            "tokens": {s: w.tokens for s, w in writers.items()},
            "files": {s: w.files_with_examples for s, w in writers.items()},
        },
        "groups": run.grouping.summary
        if run.grouping
        else _off_summary(run.user_groups, run.groups_how),
        "histograms": {
            # valence_bin/arousal_bin count files (and copies) with file scope, the rows'
            # windows with window scope: the bins the rows carry either way
            "counts": "files" if p.label_scope == "file" else "windows",
            "valence_bin": _hist(vbins_a, p.bins),
            "arousal_bin": _hist(abins_a, p.bins),
            "examples_by_bin": {
                f"{v:+d},{a:+d}": n
                for (v, a), n in sorted(
                    (writers["train"].bin_counts + writers["val"].bin_counts).items()
                )
            },
        },
        "checksums": run.checksums,
        "cache": {"dir": run.cache_dir, **dict(sorted(run.cache_stats.items()))},
        "timings_seconds": {
            "total": round(time.perf_counter() - run.started, 3),
            "workers": run.workers,
            **{k: round(v, 3) for k, v in stage.items()},
            "worker_cpu": {k: round(v, 3) for k, v in sorted(run.worker_seconds.items())},
        },
        "peak_rss_mb": {"main": round(peak_rss_mb(), 1), "worker": round(run.worker_rss, 1)},
    }


def _augmentations(p: BuildParams) -> tuple[str, ...]:
    """The names of the augmented copies (``t+2``, ``v-4``), in string order."""
    from varemi import augment

    transpose = augment.parse_offsets(p.augment_transpose, "--augment-transpose", 24)
    velocity = augment.parse_offsets(p.augment_velocity, "--augment-velocity", 64)
    tempo = augment.parse_offsets(p.augment_tempo, "--augment-tempo", 50)
    return augment.names(transpose, velocity, tempo)


def _user_groups(p: BuildParams, files: list[str]) -> tuple[dict[str, str], str]:
    """The user's groups (``--groups`` or ``--group-by``) and how they were formed."""
    from varemi import duplicates

    if p.groups is not None:
        return duplicates.read_groups_csv(p.groups, files), f"--groups {p.groups}"
    if p.group_by == "parent":
        return duplicates.parent_groups(files), "--group-by parent"
    return {}, ""


def _off_summary(user_groups: dict[str, str], how: str) -> dict:
    """The ``groups`` entry of ``--dedup off`` (user groups only, split as they say)."""
    sizes = Counter(user_groups.values())
    return {
        "dedup": "off",
        "user_groups": how or None,
        "groups": len(sizes),
        "files_in_groups": sum(sizes.values()),
        "largest_group": max(sizes.values(), default=0),
    }


class LabelRowSpool:
    """The computed label rows of a build, appended to a CSV spool file as they arrive.

    The main process holds one open file instead of every row (~3 KB each): at the end,
    :meth:`write` writes ``labels.csv`` from the spool, less the files ``--dedup drop``
    rejected, in arrival order, formatted as :func:`varemi.labels.write_label_rows`
    formats rows, so the file is byte for byte the one written from a list of rows.
    Both engines append to it (``--engine ray`` block summary by block summary).

    Args:
        path: The spool file (in the build's temporary folder); created.
        columns: The columns, in order (default: :data:`varemi.labels.LABEL_COLUMNS`).

    Attributes:
        rows: Rows appended so far.
    """

    def __init__(self, path: Path, columns: tuple[str, ...] = ()) -> None:
        import csv

        from varemi.labels import LABEL_COLUMNS

        self.path = Path(path)
        self.columns = list(columns) or list(LABEL_COLUMNS)
        # Line-buffered: a row is on disk once appended (one write per file is nothing
        # next to tokenising it), so the main process never buffers more than a row.
        self.file = open(self.path, "w", 1, newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.rows = 0

    def append(self, row: dict) -> None:
        """Append one row (a dict holding every column, as from ``labels.label_row``).

        Args:
            row: The file's label row.
        """
        # The formatting of write_label_rows, repeated rather than shared: labels.py's
        # source hash is the labeller version, so editing it would void cached labels.
        self.writer.writerow(
            [
                repr(float(v)) if isinstance(v, (float, np.floating)) else v
                for v in (row[c] for c in self.columns)
            ]
        )
        self.rows += 1

    def extend(self, rows) -> None:
        """Append several rows, in order.

        Args:
            rows: Label row dicts.
        """
        for row in rows:
            self.append(row)

    def write(self, path: Path, drop=()) -> None:
        """Write the final CSV from the spool (written beside ``path``, then renamed).

        Args:
            path: The CSV to write (``labels.csv``).
            drop: File names whose rows are left out (``Grouping.drop``).
        """
        import csv

        self.file.close()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        key = self.columns.index("filename")
        with (
            open(self.path, newline="", encoding="utf-8") as src,
            open(tmp, "w", newline="", encoding="utf-8") as dst,
        ):
            writer = csv.writer(dst, lineterminator="\n")
            writer.writerow(self.columns)
            if not drop:
                shutil.copyfileobj(src, dst)
            else:  # a row read back and written again is the same line (csv round trip)
                writer.writerows(row for row in csv.reader(src) if row[key] not in drop)
        os.replace(tmp, path)
        self.close()

    def close(self) -> None:
        """Close and remove the spool file (again: nothing)."""
        self.file.close()
        self.path.unlink(missing_ok=True)


class _Spool:
    """Token ids parked on disk until the split is known (memory stays flat).

    Read back with plain reads, not a memory map: the pages of a map that has been read
    count in the process's resident memory (the whole spool, by the end of a build).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w+b")  # noqa: SIM115 (closed in close())
        self.size = 0
        self.reading = False

    def put(self, ids: np.ndarray) -> tuple[int, int]:
        data = np.ascontiguousarray(ids, dtype="<i4").tobytes()
        self.file.write(data)
        ref = (self.size, len(ids))
        self.size += len(data)
        return ref

    def get(self, ref: tuple[int, int]) -> np.ndarray:
        if not self.reading:
            self.file.flush()
            self.reading = True
        offset, n = ref
        data = os.pread(self.file.fileno(), 4 * n, offset)
        if len(data) != 4 * n:
            raise OSError(f"{self.path}: the spool file is shorter than what was written")
        return np.frombuffer(data, dtype="<i4").astype(np.int32)

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _hist(bins: np.ndarray, n: int) -> dict[str, int]:
    h = n // 2
    counts = Counter(bins.tolist())
    return {f"{b:+d}": counts.get(b, 0) for b in range(-h, h + 1)}


def _params_record(p: BuildParams) -> dict:
    rec = asdict(p)
    for k in ("midi_dir", "out", "labels", "cache_dir"):
        rec[k] = None if rec[k] is None else str(rec[k])
    rec["pitch_range"] = list(p.pitch_range) if p.pitch_range else None
    rec["label_range"] = list(p.label_range) if p.label_range else None
    rec["groups"] = None if p.groups is None else str(p.groups)
    for k in ("quiet", "overwrite", "profile"):
        rec.pop(k)
    return rec


def _write_rejects(path: Path, rejects: list[tuple[str, str, str]]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["source_file", "reason", "detail"])
        for row in sorted(rejects):
            w.writerow(row)


def summary(info: dict, out: Path, profile: bool = False) -> str:
    """A one-screen summary of a build.

    Args:
        info: The content of ``dataset_info.json``.
        out: The output folder.
        profile: Add the per-stage time breakdown and peak memory.

    Returns:
        Text to print.
    """
    c = info["counts"]
    lines = [
        f"varemi build: {out}",
        f"  files   seen {c['files_seen']}, kept {c['files_kept']}, "
        f"rejected {c['files_rejected']}, too short for a window {c['files_without_windows']}",
    ]
    for reason, n in c["rejected_by_reason"].items():
        lines.append(f"          rejected as {reason}: {n}")
    for s in ("train", "val"):
        n_files, n_examples, n_tokens = c["files"][s], c["examples"][s], c["tokens"][s]
        lines.append(f"  {s:5s}   {n_files} files, {n_examples} examples, {n_tokens} tokens")
    t = info["timings_seconds"]
    lines.append(f"  time    {t['total']:.1f} s with {t['workers']} worker(s)")
    if profile:
        lines.append("  stages  (wall seconds in the main process; worker CPU seconds summed)")
        for k in ("split", "tokenise_wall", "window_prepend", "export", "save", "checksum"):
            lines.append(f"          {k:15s} {t.get(k, 0.0):8.3f}")
        for k, v in t["worker_cpu"].items():
            lines.append(f"          worker {k:8s} {v:8.3f}")
        rss = info["peak_rss_mb"]
        lines.append(
            f"  memory  peak RSS {rss['main']:.0f} MiB main, {rss['worker']:.0f} MiB per worker"
        )
    if c["files_rejected"]:
        lines.append(f"  rejects listed in {out / 'rejects.csv'}")
    lines.append(f"  check it: python -m varemi verify {out}")
    return "\n".join(lines)
