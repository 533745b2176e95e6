"""``build``: a MIDI folder to an emotion-conditioned Hugging Face dataset.

The entry point is :func:`build`. It checks every parameter before any work (each by
the validator of the module that owns it), loads the tokenizer, then runs the stages
of :func:`_build_into` in order, one function each:

1. labels: the user's CSV (or none: the workers compute them);
2. tokenise: every file (and augmented copy, :mod:`varemi.music.augment`) to token ids, in
   worker processes, through the token cache (:mod:`varemi.corpus.job`,
   :mod:`varemi.music.encoder`);
3. split: duplicate groups (:mod:`varemi.corpus.grouping`) and which file goes to ``val``
   (:mod:`varemi.core.split`); token ids wait in a spool file until the groups are known;
4. bins: each file's conditioning bins (:mod:`varemi.core.conditioning`), and with
   ``--label-scope window`` each window's (its labels come from the workers, stage 2);
5. windows + prefix: conditioned examples (:mod:`varemi.core.windows`);
6. export: Arrow shards laid out as ``datasets`` saves them (:mod:`varemi.dataset.export`);
7. ``labels.csv``, ``tokenizer.json``, ``rejects.csv``, a checksum per split and
   ``dataset_info.json``.

Stages 2-6 stream, so memory does not grow with the corpus: duplicate grouping and
``--binning quantile`` park the token ids in a spool file of the temporary output until
the groups or the bins are known. Everything is written into a temporary folder
(:class:`varemi.dataset.staging.Staging`) that is swapped into place only when complete
(docs/contracts.md contracts 5-9).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from varemi._base.errors import EmptyDatasetError, OutputFolderError, PitchRangeError, VaremiError
from varemi._base.options import BUILD_OPTIONS, record
from varemi._base.version import __version__
from varemi._base.workers import peak_rss_mb
from varemi.core.pitch import check_pitch_params
from varemi.core.windows import Windower
from varemi.corpus import grouping
from varemi.corpus.cache import default_cache_dir, labeller_version, usable_cache_dir
from varemi.corpus.grouping import DuplicateIndex, write_duplicates_csv
from varemi.corpus.job import Job, tokenise_corpus
from varemi.dataset.export import (
    SplitWriter,
    write_dataset_dict,
    write_json,
    write_parquet_card,
)
from varemi.dataset.info import FORMAT_VERSION, is_varemi_dataset
from varemi.dataset.integrity import dataset_checksums
from varemi.dataset.staging import Staging, resolve_out
from varemi.labelling import label_csv
from varemi.labelling.fitted import load_labeller
from varemi.labelling.heuristic import HEURISTIC
from varemi.music.encoder import EncodeOptions, TokenEncoder
from varemi.music.files import list_midi_files, split_bad_names
from varemi.music.models import window_warning
from varemi.music.tokenizer import (
    add_conditioning_tokens,
    bar_quarters,
    bar_start_table,
    encode_ids_split,
    load_base_tokenizer,
    save_tokenizer,
    vocab_pitch_range,
)
from varemi.pipeline.params import (
    BuildParams,
    BuildResult,
    MidiDirError,
    augmentations,
    check_params,
    label_times,
    param_warnings,
)
from varemi.pipeline.ray_engine import ray_stages
from varemi.pipeline.stages import (
    LabelRowSpool,
    Run,
    TokenSpool,
    bin_items,
    decide_split,
    histogram,
    record_bins,
    take_result,
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
    started = time.perf_counter()
    for name in ("midi_dir", "out"):  # Path("") would silently be the current folder
        if getattr(p, name) == "":
            raise VaremiError(f"--{name.replace('_', '-')} is empty; give a path")
    p = dataclasses.replace(  # the caller's object is left as it was
        p,
        midi_dir=Path(p.midi_dir),
        out=Path(p.out),
        labels=Path(p.labels) if p.labels is not None else None,
        groups=Path(p.groups) if p.groups is not None else None,
        labeller=Path(p.labeller) if p.labeller is not None else None,
    )
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


def _build_into(
    p: BuildParams, tmp: Path, base, encoder, files: list[str], groups, started: float
) -> dict:
    """The stages of a build, in order, writing into the temporary folder ``tmp``."""
    run = Run(
        files=files,
        workers=p.workers or os.cpu_count() or 1,
        cache_dir=usable_cache_dir(p.cache_dir or default_cache_dir()) if p.cache else None,
        started=started,
        tmp=tmp,
    )
    run.user_groups, run.groups_how = groups
    run.labeller = load_labeller(p.labeller) if p.labeller is not None else HEURISTIC
    _labels_stage(p, run)
    if run.label_table is None:  # computed labels: each row goes to disk as it arrives
        run.label_rows = LabelRowSpool(tmp / "_labels.csv")
    try:
        cond_tokens = add_conditioning_tokens(base.tokenizer, p.bins)
        bos = int(base.tokenizer.vocab["BOS_None"]) if p.bos else None
        bar_starts = bar_start_table(base.tokenizer) if p.window_align == "bar" else None
        if p.engine == "ray":  # the same stages on Ray Data, the same rows
            job, items = _job(p, run, base, encoder), _items(p, run)
            writers = ray_stages(p, run, job, items, cond_tokens, bos, bar_starts, tmp)
        else:
            tokenised = _tokenise_stage(p, run, base, encoder)
            split = _split_stage(p, run, tmp, tokenised)
            binned = _bins_stage(p, run, split)
            batches = _windows_stage(p, run, cond_tokens, bos, bar_starts, binned)
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
        warning = window_warning(p.tokenizer, p.window_size)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    split = base.tokenizer.config.encode_ids_split
    if not p.quiet and base.tokenizer.is_trained and encode_ids_split(base.path) is None:
        print(
            f"warning: the tokenizer file {base.path} does not state encode_ids_split (a "
            f"MidiTok 2.x file?); MidiTok assumes {split!r}, which is recorded in "
            "dataset_info.json",
            file=sys.stderr,
        )
    if not p.quiet and p.window_align == "bar" and split == "no":
        print(
            "warning: --window-align bar with a tokenizer whose BPE runs over whole "
            "sequences (encode_ids_split 'no'): a bar merged into the middle of an id is "
            "not found, and its window starts at the next id that begins a bar",
            file=sys.stderr,
        )
    if label_times(p)[1] == "seconds" and bar_quarters(base.tokenizer) is None:
        raise VaremiError(
            "--label-time seconds with --label-scope window places each window among the "
            f"file's bars, and tokenizer {p.tokenizer!r} has time-signature tokens (bars of "
            "varying length): use --label-time beats or auto, or --label-scope file"
        )
    encoder = TokenEncoder(base.tokenizer, p.encoder)  # refuses `native` before any work
    if encoder.reason and not p.quiet:
        print(f"note: using MidiTok's encoder: {encoder.reason}", file=sys.stderr)
    return base, encoder


def _labels_stage(p: BuildParams, run: Run) -> None:
    """The user's labels CSV (its unusable rows become rejects); computed labels come later.

    Files whose names are not valid UTF-8 are rejected first (``bad_name``).
    """
    named, run.rejects[:0] = split_bad_names(run.files)
    if p.labels is not None:
        run.label_table = _csv_labels(p, named, run.rejects)
    rejected = {r[0] for r in run.rejects}
    run.usable = [f for f in named if f not in rejected]


def _csv_labels(p: BuildParams, files: list[str], rejects: list) -> dict[str, tuple[float, float]]:
    """The user's labels per usable file; the other files join ``rejects``."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", label_csv.LabelsCSVWarning)
        table, bad, unmatched = label_csv.read_labels_csv(
            p.labels, files, p.label_range, root=p.midi_dir
        )
    for w in caught:
        if not issubclass(w.category, label_csv.LabelsCSVWarning):
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


def _job(p: BuildParams, run: Run, base, encoder):
    """What every worker computes for a file (:class:`varemi.corpus.job.Job`)."""
    file_time, window_time = label_times(p)
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
        else (p.jitter, p.jitter_seed, labeller_version(run.labeller.sha256), run.labeller),
        fingerprint=p.dedup != "off",
        window_labels=(p.window_size, p.stride, p.min_window_tokens, p.window_align)
        if p.label_scope == "window"
        else None,
        label_time=file_time or "seconds",
        window_time=window_time or "beats",
        key_to_c=p.key_to_c,
    )


def _items(p: BuildParams, run: Run) -> tuple[list, tuple[str, ...]]:
    """What is tokenised, in order: each usable file, then its copies (``--augment-*``).

    Returns:
        ``(items, copies)``: ``items`` as :func:`varemi.corpus.job.tokenise_corpus` takes them
        (plain paths without augmentation, else ``(path, augmentation)`` pairs, item ``k``
        being file ``k // len(copies)``), and the augmentation names (``""`` first: the
        original).
    """
    copies = ("", *augmentations(p))
    items = [(f, a) for f in run.usable for a in copies] if len(copies) > 1 else run.usable
    return items, copies


def _tokenise_stage(p: BuildParams, run: Run, base, encoder):
    """Each usable file's (and augmented copy's) token ids and labels, in order.

    Yields ``(index, augmentation, ids, labels, fingerprint)``: a file, then its copies
    in string order of their names (``""`` is the original). ``labels`` is a
    :class:`ItemLabels`: the file's, and with ``--label-scope window`` its windows'.
    Rejects are recorded (:func:`take_result`); a file whose original is rejected gives
    no copy either.
    """
    from tqdm import tqdm

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


def _split_stage(p: BuildParams, run: Run, tmp: Path, tokenised):
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

    index, spool, parked = DuplicateIndex(), TokenSpool(tmp / "_spool.bin"), []
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


def _bins_stage(p: BuildParams, run: Run, tokenised):
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
    spool, parked = TokenSpool(run.tmp / "_quantile_ids.i32"), []
    try:
        for i, aug, ids, labels in tokenised:
            parked.append((i, aug, spool.put(ids), labels))
        bin_items(p, run, [x for _, _, _, x in parked])
        for i, aug, ref, labels in parked:
            yield i, aug, spool.get(ref), labels
    finally:
        spool.close()


def _windows_stage(p: BuildParams, run: Run, cond_tokens: dict[str, int], bos, bar_starts, binned):
    """Each split's conditioned examples (contract 5), batch by batch: ``(split, batch)``."""
    windowers = {
        s: Windower(cond_tokens, p.window_size, p.stride, p.min_window_tokens, bos, bar_starts)
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


def _export_stage(run: Run, tmp: Path, batches, fmt: str = "arrow") -> dict:
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


def _save_stage(p: BuildParams, run: Run, tmp: Path, tokenizer) -> None:
    """Write ``labels.csv`` (computed labels), ``tokenizer.json`` and ``rejects.csv``."""
    t = time.perf_counter()
    if run.label_table is None:  # the spooled rows, less the files --dedup drop rejected
        run.label_rows.write(tmp / "labels.csv", run.grouping.drop if run.grouping else ())
    elif p.label_range is not None:  # the labels on [-1, 1], as the dataset holds them
        mapped = [
            {"filename": f, "valence": v, "arousal": a} for f, (v, a) in run.label_table.items()
        ]
        label_csv.write_label_rows(mapped, tmp / "labels.csv", ("filename", "valence", "arousal"))
    elif p.labels is not None and p.labels.resolve() == resolve_out(p.out) / "labels.csv":
        # `--labels OUT/labels.csv --overwrite`: the edited CSV survives the swap
        shutil.copyfile(p.labels, tmp / "labels.csv")
    run.stage["save"] += time.perf_counter() - t
    save_tokenizer(tokenizer, tmp / "tokenizer.json")
    _write_rejects(tmp / "rejects.csv", run.rejects)

    user_rows = [(f, g, "user", 1.0) for f, g in sorted(run.user_groups.items())]
    write_duplicates_csv(tmp / "duplicates.csv", run.grouping.rows if run.grouping else user_rows)


def _checksum_stage(run: Run, tmp: Path, writers: dict) -> None:
    """A content checksum per split, which ``verify`` recomputes (catches in-range edits)."""
    t = time.perf_counter()
    run.checksums = dataset_checksums(tmp, list(writers))
    run.stage["checksum"] = time.perf_counter() - t


def _dataset_info(p: BuildParams, run: Run, base, encoder, cond_tokens, writers) -> dict:
    """The content of ``dataset_info.json`` (contract 7)."""
    label_source = run.labeller.kind if run.label_table is None else "csv"
    file_time, window_time = label_times(p)
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
            # format 3: how BPE was split (bar alignment relies on "bar" or "beat"), and
            # whether the tokenizer file said so or MidiTok assumed it
            "encode_ids_split": str(base.tokenizer.config.encode_ids_split),
            "encode_ids_split_stated": encode_ids_split(base.path) is not None,
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
            "file": "labels.csv" if run.label_table is None else str(p.labels),
            "labeller": None
            if run.label_table is not None
            else {
                "kind": run.labeller.kind,
                "file": str(p.labeller) if p.labeller is not None else None,
                "sha256": run.labeller.sha256 or None,
            },
            "range": list(p.label_range) if p.label_range else None,
            "mapped_file": "labels.csv" if p.label_range else None,
            "binning_edges": {"valence": vedges, "arousal": aedges} if vedges else None,
            "scope": p.label_scope,
            # --label-time resolved: the time base of the labels the rows carry, and of
            # the file labels (labels.csv; a window without notes takes its file's)
            "time": window_time or file_time,
            "file_time": file_time,
            "windows": None
            if p.label_scope == "file"
            else {
                "labelled": run.windows_labelled,
                "from_file_label": run.window_fallback,
                "how": "each window's music ids decoded with the tokenizer and labelled "
                "like a file (with the file's --jitter noise)"
                + (
                    ", given the file's tempo map over the bars it holds"
                    if window_time == "seconds"
                    else ", as the tokens hold them (no tempo tokens: the decoder's 120 qpm)"
                )
                + "; a window that cannot be labelled (no notes) takes its file's label; "
                "labels.csv holds the per-file labels",
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
            "valence_bin": histogram(vbins_a, p.bins),
            "arousal_bin": histogram(abins_a, p.bins),
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


def _user_groups(p: BuildParams, files: list[str]) -> tuple[dict[str, str], str]:
    """The user's groups (``--groups`` or ``--group-by``) and how they were formed."""
    if p.groups is not None:
        return grouping.read_groups_csv(p.groups, files), f"--groups {p.groups}"
    if p.group_by == "parent":
        return grouping.parent_groups(files), "--group-by parent"
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


def _params_record(p: BuildParams) -> dict:
    return record(p, BUILD_OPTIONS)


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
