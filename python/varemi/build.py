"""``build``: a MIDI folder to an emotion-conditioned Hugging Face dataset.

The entry point is :func:`build`. It checks every parameter before any work (each by
the validator of the module that owns it), loads the tokenizer, then runs the stages
of :func:`_build_into` in order, one function each:

1. labels: the user's CSV (or none: the workers compute them);
2. split: which file goes to ``val`` (:mod:`varemi.split`);
3. tokenise: every file to token ids, in worker processes, through the token cache
   (:mod:`varemi.corpus`, :mod:`varemi.encoder`);
4. bins: each file's conditioning bins (:mod:`varemi.conditioning`);
5. windows + prefix: conditioned examples (:mod:`varemi.windows`);
6. export: Arrow shards laid out as ``datasets`` saves them (:mod:`varemi.export`);
7. ``labels.csv``, ``tokenizer.json``, ``rejects.csv`` and ``dataset_info.json``.

Stages 3-6 stream (with ``--binning uniform``), so memory does not grow with the
corpus. Everything is written into a temporary folder beside the target, renamed
into place only when complete (DESIGN.md contracts 5-9).
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
from varemi.cache import default_cache_dir
from varemi.cluster import check_engine
from varemi.corpus import check_workers, peak_rss_mb
from varemi.encoder import EncodeOptions, TokenEncoder, check_encode_params
from varemi.errors import PitchRangeError, VaremiError
from varemi.export import (
    FORMATS,
    SplitWriter,
    write_dataset_dict,
    write_json,
    write_parquet_card,
)
from varemi.pitch import PITCH_POLICIES, check_pitch_params
from varemi.split import check_split_params, val_mask
from varemi.windows import check_window_params

FORMAT_VERSION = 1


class OutputFolderError(VaremiError):
    """The output folder cannot be (over)written safely."""


class MidiDirError(VaremiError):
    """The MIDI folder is missing or holds no MIDI file."""


@dataclass
class BuildParams:
    """Every build parameter, under its command-line option name (dashes as underscores).

    Attributes:
        midi_dir: Folder of MIDI files (searched recursively).
        out: Output folder.
        labels: A CSV of ``filename,valence,arousal``; None computes labels.
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
        engine: ``local`` (this machine's worker pool) or ``ray`` (Ray Data,
            :mod:`varemi.cluster`).
        ray_address: With ``ray``: None starts a local Ray; ``auto`` or an address
            connects to a running cluster.
        format: ``arrow`` (``save_to_disk`` layout) or ``parquet`` (Parquet shards).
    """

    midi_dir: Path
    out: Path
    labels: Path | None = None
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
    engine: str = "local"
    ray_address: str | None = None
    format: str = "arrow"


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
    check_engine(p.engine, p.ray_address, p.binning)
    if p.format not in FORMATS:
        raise VaremiError(f"--format must be one of {', '.join(FORMATS)}, got {p.format!r}")
    if not (p.jitter >= 0):
        raise VaremiError(f"--jitter must be >= 0, got {p.jitter}")
    if p.jitter and p.labels is not None:
        raise VaremiError(
            "--jitter applies to computed labels only; it cannot be used with --labels"
        )
    if midi_dir and not p.midi_dir.is_dir():
        raise MidiDirError(f"--midi-dir {p.midi_dir} is not a folder")
    if p.labels is not None and not p.labels.is_file():
        raise VaremiError(f"--labels {p.labels} is not a file")
    check_output_folder(p.out, p.overwrite)


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
    """
    from varemi.files import list_midi_files

    started = time.perf_counter()
    p.midi_dir, p.out = Path(p.midi_dir), Path(p.out)
    p.labels = Path(p.labels) if p.labels is not None else None
    check_params(p)
    base, encoder = _load_tokenizer(p)
    files = list_midi_files(p.midi_dir)
    if not files:
        raise MidiDirError(f"--midi-dir {p.midi_dir} holds no .mid or .midi file")

    tmp = p.out.parent / f".{p.out.name}.varemi-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = _build_into(p, tmp, base, encoder, files, started)
        _move_into_place(tmp, p.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous output stays as it was
        raise
    if not p.quiet or p.profile:
        print(summary(info, p.out, p.profile), file=sys.stderr)
    return BuildResult(p.out, info)


@dataclass
class _Run:
    """What the stages of one build record as they go (for ``dataset_info.json``)."""

    files: list[str]
    workers: int
    cache_dir: str | None
    started: float
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    label_table: dict[str, tuple[float, float]] | None = None
    label_rows: list[dict] = field(default_factory=list)
    usable: list[str] = field(default_factory=list)
    is_val: np.ndarray | None = None
    edges: list[np.ndarray] | None = None
    vbins: list[int] = field(default_factory=list)
    abins: list[int] = field(default_factory=list)
    no_windows: int = 0
    cache_stats: Counter = field(default_factory=Counter)
    worker_seconds: Counter = field(default_factory=Counter)
    worker_rss: float = 0.0
    stage: dict[str, float] = field(default_factory=dict)


def _build_into(p: BuildParams, tmp: Path, base, encoder, files: list[str], started: float) -> dict:
    """The stages of a build, in order, writing into the temporary folder ``tmp``."""
    from varemi.vocab import add_conditioning_tokens

    run = _Run(
        files=files,
        workers=p.workers or os.cpu_count() or 1,
        cache_dir=str(p.cache_dir or default_cache_dir()) if p.cache else None,
        started=started,
    )
    _labels_stage(p, run)
    _split_stage(p, run)
    cond_tokens = add_conditioning_tokens(base.tokenizer, p.bins)
    if p.engine == "ray":  # stages 3-6 on Ray Data, same rows (varemi.cluster)
        from varemi.cluster import ray_stages

        writers = ray_stages(p, run, _job(p, run, base, encoder), cond_tokens, tmp)
    else:
        tokenised = _tokenise_stage(p, run, base, encoder)
        binned = _bins_stage(p, run, tokenised)
        batches = _windows_stage(p, run, cond_tokens, binned)
        writers = _export_stage(run, tmp, batches, p.format)
    if p.format == "parquet":
        # datasets cannot load a Parquet split without rows: such a split stays out of the card
        write_parquet_card(tmp, [s for s, w in writers.items() if w.examples] or list(writers))
    _save_stage(run, tmp, base.tokenizer)
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
    encoder = TokenEncoder(base.tokenizer, p.encoder)  # refuses `native` before any work
    if encoder.reason and not p.quiet:
        print(f"note: using MidiTok's encoder: {encoder.reason}", file=sys.stderr)
    return base, encoder


def _labels_stage(p: BuildParams, run: _Run) -> None:
    """The user's labels CSV (its unusable rows become rejects); computed labels come later."""
    if p.labels is not None:
        run.label_table = _csv_labels(p, run.files, run.rejects)
    rejected = {r[0] for r in run.rejects}
    run.usable = [f for f in run.files if f not in rejected]


def _csv_labels(p: BuildParams, files: list[str], rejects: list) -> dict[str, tuple[float, float]]:
    """The user's labels per usable file; the other files join ``rejects``."""
    from varemi import labels as labelling

    table, bad, unmatched = labelling.read_labels_csv(p.labels, files)
    rejects.extend(bad)
    if unmatched and not p.quiet:
        shown = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
        print(
            f"warning: {len(unmatched)} row(s) of {p.labels} name no MIDI file: {shown}",
            file=sys.stderr,
        )
    return table


def _split_stage(p: BuildParams, run: _Run) -> None:
    """Which usable file goes to ``val`` (contract 6)."""
    t = time.perf_counter()
    run.is_val = val_mask(run.usable, p.seed, p.train_split)
    run.stage["split"] = time.perf_counter() - t


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
    )


def _tokenise_stage(p: BuildParams, run: _Run, base, encoder):
    """Each usable file's (index, token ids, valence, arousal), in order; rejects recorded."""
    from tqdm import tqdm

    from varemi.corpus import tokenise_corpus

    job = _job(p, run, base, encoder)
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked
    bar = tqdm(
        total=len(run.usable), desc="tokenise", unit="file", disable=p.quiet, file=sys.stderr
    )
    for i, r in enumerate(tokenise_corpus(job, run.usable, run.workers)):
        run.cache_stats[r.cache] += 1
        run.worker_rss = max(run.worker_rss, r.peak_rss_mb)
        run.worker_seconds.update(r.timings)
        bar.update(1)
        if r.reject is not None:
            run.rejects.append((run.usable[i], *r.reject))
            continue
        if r.label is not None:
            run.label_rows.append(r.label)
            valence, arousal = r.label["valence"], r.label["arousal"]
        else:
            valence, arousal = run.label_table[run.usable[i]]
        if len(r.ids) < p.min_window_tokens:
            run.no_windows += 1
        yield i, r.ids, valence, arousal
    bar.close()


def _bins_stage(p: BuildParams, run: _Run, tokenised):
    """Each file with its (valence bin, arousal bin) (contract 2)."""
    if p.binning == "uniform":  # a file's bins depend on it alone: stream it through
        for i, ids, valence, arousal in tokenised:
            vb, ab = conditioning.discretise_uniform(np.array([valence, arousal]), p.bins)
            yield i, ids, valence, arousal, int(vb), int(ab)
        return
    kept = list(tokenised)  # equal-count bins need every label first
    values = np.array([(k[2], k[3]) for k in kept], dtype=np.float64).reshape(-1, 2)
    run.edges = [conditioning.quantile_edges(values[:, axis], p.bins) for axis in (0, 1)]
    vq = conditioning.discretise_quantile(values[:, 0], run.edges[0], p.bins)
    aq = conditioning.discretise_quantile(values[:, 1], run.edges[1], p.bins)
    for (i, ids, valence, arousal), vb, ab in zip(kept, vq, aq, strict=True):
        yield i, ids, valence, arousal, int(vb), int(ab)


def _windows_stage(p: BuildParams, run: _Run, cond_tokens: dict[str, int], binned):
    """Each split's conditioned examples (contract 5), batch by batch: ``(split, batch)``."""
    from varemi.windows import Windower

    windowers = {
        s: Windower(cond_tokens, p.window_size, p.stride, p.min_window_tokens)
        for s in ("train", "val")
    }
    for i, ids, valence, arousal, vb, ab in binned:
        s = "val" if run.is_val[i] else "train"
        run.vbins.append(vb)
        run.abins.append(ab)
        batch = windowers[s].add(run.usable[i], ids, (valence, arousal), (vb, ab))
        if batch is not None:
            yield s, batch
    for s, windower in windowers.items():
        batch = windower.flush()
        if batch is not None:
            yield s, batch
    run.stage["window_prepend"] = sum(w.seconds for w in windowers.values())


def _export_stage(run: _Run, tmp: Path, batches, fmt: str = "arrow") -> dict:
    """Write every batch as an Arrow shard, then lay the splits out; the split writers."""
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


def _save_stage(run: _Run, tmp: Path, tokenizer) -> None:
    """Write ``labels.csv`` (computed labels), ``tokenizer.json`` and ``rejects.csv``."""
    from varemi import labels as labelling
    from varemi.vocab import save_tokenizer

    t = time.perf_counter()
    if run.label_table is None:
        labelling.write_label_rows(run.label_rows, tmp / "labels.csv")
    run.stage["save"] += time.perf_counter() - t
    save_tokenizer(tokenizer, tmp / "tokenizer.json")
    _write_rejects(tmp / "rejects.csv", run.rejects)


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
        "encoder": {"requested": p.encoder, "used": encoder.name, "fallback": encoder.reason},
        "params": _params_record(p),
        "labels": {
            "source": label_source,
            "file": "labels.csv" if label_source == "heuristic" else str(p.labels),
            "binning_edges": {"valence": vedges, "arousal": aedges} if vedges else None,
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
        "histograms": {
            "valence_bin": _hist(vbins_a, p.bins),
            "arousal_bin": _hist(abins_a, p.bins),
            "examples_by_bin": {
                f"{v:+d},{a:+d}": n
                for (v, a), n in sorted(
                    (writers["train"].bin_counts + writers["val"].bin_counts).items()
                )
            },
        },
        "cache": {"dir": run.cache_dir, **dict(sorted(run.cache_stats.items()))},
        "timings_seconds": {
            "total": round(time.perf_counter() - run.started, 3),
            "workers": run.workers,
            **{k: round(v, 3) for k, v in stage.items()},
            "worker_cpu": {k: round(v, 3) for k, v in sorted(run.worker_seconds.items())},
        },
        "peak_rss_mb": {"main": round(peak_rss_mb(), 1), "worker": round(run.worker_rss, 1)},
    }


def _hist(bins: np.ndarray, n: int) -> dict[str, int]:
    h = n // 2
    counts = Counter(bins.tolist())
    return {f"{b:+d}": counts.get(b, 0) for b in range(-h, h + 1)}


def _params_record(p: BuildParams) -> dict:
    rec = asdict(p)
    for k in ("midi_dir", "out", "labels", "cache_dir"):
        rec[k] = None if rec[k] is None else str(rec[k])
    rec["pitch_range"] = list(p.pitch_range) if p.pitch_range else None
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


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished dataset in; the old one is removed only after the swap."""
    old = None
    if out.exists():
        if not any(out.iterdir()):
            out.rmdir()
        elif is_varemi_dataset(out):
            old = out.parent / f".{out.name}.varemi-old-{os.getpid()}"
            os.replace(out, old)
        else:  # something appeared there during the build: never replace it
            raise OutputFolderError(f"--out {out} changed during the build; refusing to replace it")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        for k in ("split", "tokenise_wall", "window_prepend", "export", "save"):
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
