"""``build``: a MIDI folder to an emotion-conditioned Hugging Face dataset.

The entry point is :func:`build`. It checks every parameter before any work, labels
the files (or reads the user's CSV), tokenises them in worker processes (with a
token cache), and streams windows into Arrow shards split by file, so memory does
not grow with the corpus. Everything is written into a temporary folder beside the
target, renamed into place only when complete (DESIGN.md contracts 5-9).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from varemi import conditioning, kernels, reference
from varemi.cache import default_cache_dir
from varemi.encode import (
    ENCODERS,
    TRACK_MODES,
    EncodeOptions,
    TokenEncoder,
)
from varemi.errors import VaremiError
from varemi.export import SplitWriter, write_dataset_dict

FORMAT_VERSION = 2
BINNINGS = ("uniform", "quantile")


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
        label_range: The CSV's scale ``(low, high)``, mapped linearly to [-1, 1] (and
            written so to ``out/labels.csv``); None: the CSV holds values in [-1, 1].
        label_scope: ``file`` (every window has its file's labels) or ``window`` (each
            window labelled from the music its tokens hold; computed labels only).
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
    """

    midi_dir: Path
    out: Path
    labels: Path | None = None
    label_range: tuple[float, float] | None = None
    label_scope: str = "file"
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

    Args:
        p: The build parameters.
        midi_dir: Also check that ``p.midi_dir`` is a folder (the demo checks the
            other parameters before it writes its corpus).

    Raises:
        VaremiError: a subclass naming the first bad parameter by its option.
    """
    try:
        _check_params(p, midi_dir)
    except VaremiError as e:
        raise type(e)(
            _OPTION_NAMES.sub(
                lambda m: "--" + m.group(0).replace("_", "-").replace(" ", "-"), str(e)
            )
        ) from None


# Kernel-level messages name parameters as Python does; the CLI user typed options.
_OPTION_NAMES = re.compile(
    r"\b(window_size|stride|min_window_tokens|train_split|seed|bins|pitch range|pitch policy)\b"
)


def _check_params(p: BuildParams, midi_dir: bool) -> None:
    reference._check_window_params(p.window_size, p.stride, p.min_window_tokens)
    conditioning.check_bins(p.bins)
    if p.binning not in BINNINGS:
        raise conditioning.BinsError(f"--binning must be one of {BINNINGS}, got {p.binning!r}")
    reference._check_split_params(p.seed, p.train_split)
    if p.encoder not in ENCODERS:
        raise VaremiError(f"--encoder must be one of {ENCODERS}, got {p.encoder!r}")
    if p.tracks not in TRACK_MODES:
        raise VaremiError(f"--tracks must be one of {TRACK_MODES}, got {p.tracks!r}")
    if p.pitch_range is not None:
        reference._check_pitch_params(p.pitch_policy, *p.pitch_range)
    elif p.pitch_policy not in reference.PITCH_POLICIES:
        reference._check_pitch_params(p.pitch_policy, 21, 108)
    if not (p.max_minutes > 0):
        raise VaremiError(f"--max-minutes must be > 0, got {p.max_minutes}")
    if not (p.max_file_mb > 0):
        raise VaremiError(f"--max-file-mb must be > 0, got {p.max_file_mb}")
    if p.workers is not None and p.workers < 1:
        raise VaremiError(f"--workers must be >= 1, got {p.workers}")
    if not (p.jitter >= 0):
        raise VaremiError(f"--jitter must be >= 0, got {p.jitter}")
    if p.jitter and p.labels is not None:
        raise VaremiError(
            "--jitter applies to computed labels only; it cannot be used with --labels"
        )
    if p.label_scope not in ("file", "window"):
        raise VaremiError(f"--label-scope must be one of ('file', 'window'), got {p.label_scope!r}")
    if p.label_scope == "window" and p.labels is not None:
        raise VaremiError("--label-scope window labels each window itself; --labels is per file")
    if p.label_range is not None:
        from varemi.labels import check_label_range

        if p.labels is None:
            raise VaremiError("--label-range gives the scale of a --labels CSV; there is none")
        check_label_range(p.label_range)
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
def _csv_labels(p: BuildParams, files: list[str], rejects: list) -> dict[str, tuple[float, float]]:
    """The user's labels per usable file; the other files join ``rejects``."""
    from varemi import labels as labelling

    table, bad, unmatched = labelling.read_labels_csv(p.labels, files, p.label_range)
    rejects.extend(bad)
    if unmatched and not p.quiet:
        shown = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
        print(
            f"warning: {len(unmatched)} row(s) of {p.labels} name no MIDI file: {shown}",
            file=sys.stderr,
        )
    return table


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


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
    from tqdm import tqdm

    from varemi import __version__
    from varemi.files import list_midi_files
    from varemi.tokenizer import load_base_tokenizer, vocab_pitch_range

    started = time.perf_counter()
    p.midi_dir, p.out = Path(p.midi_dir), Path(p.out)
    p.labels = Path(p.labels) if p.labels is not None else None
    check_params(p)
    base = load_base_tokenizer(p.tokenizer)
    vocab_range = vocab_pitch_range(base.tokenizer)
    if p.pitch_range is None:
        p.pitch_range = vocab_range
    elif not (vocab_range[0] <= p.pitch_range[0] and p.pitch_range[1] <= vocab_range[1]):
        raise reference.PitchRangeError(
            f"--pitch-range {p.pitch_range[0]} {p.pitch_range[1]} is outside the tokenizer's "
            f"pitches {vocab_range[0]}..{vocab_range[1]}"
        )
    reference._check_pitch_params(p.pitch_policy, *p.pitch_range)
    encoder = TokenEncoder(base.tokenizer, p.encoder)  # refuses `native` before any work
    if encoder.reason and not p.quiet:
        print(f"note: using MidiTok's encoder: {encoder.reason}", file=sys.stderr)
    workers = p.workers or os.cpu_count() or 1
    files = list_midi_files(p.midi_dir)
    if not files:
        raise MidiDirError(f"--midi-dir {p.midi_dir} holds no .mid or .midi file")

    tmp = p.out.parent / f".{p.out.name}.varemi-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = _build_into(p, tmp, base, encoder, files, workers, started, tqdm, __version__)
        _move_into_place(tmp, p.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous output stays as it was
        raise
    if not p.quiet or p.profile:
        print(summary(info, p.out, p.profile), file=sys.stderr)
    return BuildResult(p.out, info)


def _build_into(p, tmp, base, encoder, files, workers, started, tqdm, version) -> dict:
    from varemi import labels as labelling
    from varemi.tokenise import Job, labeller_version, tokenise_corpus
    from varemi.tokenizer import add_conditioning_tokens, save_tokenizer

    stage = {}
    rejects: list[tuple[str, str, str]] = []
    cache_dir = str(p.cache_dir or default_cache_dir()) if p.cache else None
    label_table = _csv_labels(p, files, rejects) if p.labels is not None else None
    rejected = {r[0] for r in rejects}
    usable = [f for f in files if f not in rejected]

    t = time.perf_counter()
    is_val = kernels.val_mask(usable, p.seed, p.train_split)
    stage["split"] = time.perf_counter() - t

    tokenizer = base.tokenizer
    cond_tokens = add_conditioning_tokens(tokenizer, p.bins)
    cond_list = list(cond_tokens.values())
    cond = {
        "val": np.array(cond_list[: p.bins], dtype=np.int32),
        "aro": np.array(cond_list[p.bins :], dtype=np.int32),
    }
    shard_dir = tmp / "_shards"
    shard_dir.mkdir()
    writers = {
        s: SplitWriter(
            s, shard_dir, cond["val"], cond["aro"], p.window_size, p.stride, p.min_window_tokens
        )
        for s in ("train", "val")
    }

    job = Job(
        root=str(p.midi_dir),
        tokenizer_path=str(base.path),
        encoder=encoder.name,
        options=EncodeOptions(
            p.pitch_policy, tuple(p.pitch_range), p.tracks, p.max_minutes, p.max_file_mb
        ),
        cache_dir=cache_dir,
        token_key=(
            base.sha256,
            p.pitch_policy,
            tuple(p.pitch_range),
            p.tracks,
            encoder.name,
            _encoder_version(),
        ),
        labels=None if label_table is not None else (p.jitter, p.jitter_seed, labeller_version()),
    )
    cache_stats: Counter = Counter()
    worker_seconds: Counter = Counter()
    worker_rss = 0.0
    no_windows = 0
    label_rows: list[dict] = []
    kept: list[tuple[int, np.ndarray, float, float]] = []  # held back only for quantile bins
    vbins: list[int] = []
    abins: list[int] = []

    def write(i: int, ids: np.ndarray, valence: float, arousal: float, vb: int, ab: int, wl=None):
        split = "val" if is_val[i] else "train"
        writers[split].add(usable[i], ids, (valence, arousal), (vb, ab), wl)
        vbins.extend([vb] if wl is None else wl[2].tolist())
        abins.extend([ab] if wl is None else wl[3].tolist())

    t = time.perf_counter()
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked below
    bar = tqdm(total=len(usable), desc="tokenise", unit="file", disable=p.quiet, file=sys.stderr)
    for i, r in enumerate(tokenise_corpus(job, usable, workers)):
        cache_stats[r.cache] += 1
        worker_rss = max(worker_rss, r.peak_rss_mb)
        worker_seconds.update(r.timings)
        bar.update(1)
        if r.reject is not None:
            rejects.append((usable[i], *r.reject))
            continue
        if r.label is not None:
            label_rows.append(r.label)
            valence, arousal = r.label["valence"], r.label["arousal"]
        else:
            valence, arousal = label_table[usable[i]]
        if len(r.ids) < p.min_window_tokens:
            no_windows += 1
        if p.binning == "uniform" and p.label_scope == "file":  # stream it out now
            vb, ab = conditioning.discretise_uniform(np.array([valence, arousal]), p.bins)
            write(i, r.ids, valence, arousal, int(vb), int(ab))
        else:
            kept.append((i, r.ids, valence, arousal, r.label))
    bar.close()
    stage["tokenise_wall"] = time.perf_counter() - t
    edges = None
    if kept:  # quantile bins need every label first; window labels need the windows
        t = time.perf_counter()
        windows = _window_labels(p, base, usable, kept, workers)
        stage["window_labels"] = time.perf_counter() - t
        per_file = np.array([(k[2], k[3]) for k in kept], dtype=np.float64).reshape(-1, 2)
        values = per_file if windows is None else np.concatenate([per_file[:0], *windows])

        def binned(v: np.ndarray, axis: int) -> np.ndarray:
            if edges is None:
                return conditioning.discretise_uniform(v, p.bins)
            return conditioning.discretise_quantile(v, edges[axis], p.bins)

        if p.binning == "quantile":
            edges = [conditioning.quantile_edges(values[:, axis], p.bins) for axis in (0, 1)]
        vq, aq = binned(per_file[:, 0], 0), binned(per_file[:, 1], 1)
        for k, (i, ids, valence, arousal, _) in enumerate(kept):
            wl = None
            if windows is not None:
                v, a = windows[k][:, 0], windows[k][:, 1]
                wl = (v.astype(np.float32), a.astype(np.float32),
                      binned(v, 0).astype(np.int8), binned(a, 1).astype(np.int8))  # fmt: skip
            write(i, ids, valence, arousal, int(vq[k]), int(aq[k]), wl)

    t = time.perf_counter()
    for split, writer in writers.items():
        writer.finish(tmp / split)
    write_dataset_dict(tmp, list(writers))
    shutil.rmtree(shard_dir, ignore_errors=True)
    if label_table is None:
        labelling.write_label_rows(label_rows, tmp / "labels.csv")
    elif p.label_range is not None:  # the labels on [-1, 1], as the dataset holds them
        mapped = [{"filename": f, "valence": v, "arousal": a} for f, (v, a) in label_table.items()]
        labelling.write_label_rows(mapped, tmp / "labels.csv", ("filename", "valence", "arousal"))
    stage["save"] = time.perf_counter() - t
    for w in writers.values():
        for k, v in w.seconds.items():
            stage[k] = stage.get(k, 0.0) + v
    label_source = "heuristic" if label_table is None else "csv"
    vbins_a, abins_a = np.array(vbins, dtype=np.int64), np.array(abins, dtype=np.int64)
    vedges = [float(e) for e in edges[0]] if edges else None
    aedges = [float(e) for e in edges[1]] if edges else None

    save_tokenizer(tokenizer, tmp / "tokenizer.json")
    _write_rejects(tmp / "rejects.csv", rejects)
    info = {
        "format_version": FORMAT_VERSION,
        "varemi_version": version,
        "tokenizer": {
            "source": base.source,
            "sha256": base.sha256,
            "base_vocab_size": base.base_vocab_size,
            "vocab_size": len(tokenizer),
        },
        "conditioning_tokens": cond_tokens,
        "encoder": {"requested": p.encoder, "used": encoder.name, "fallback": encoder.reason},
        "params": _params_record(p),
        "labels": {
            "source": label_source,
            "file": "labels.csv" if label_source == "heuristic" else str(p.labels),
            "range": list(p.label_range) if p.label_range else None,
            "mapped_file": "labels.csv" if p.label_range else None,
            "binning_edges": {"valence": vedges, "arousal": aedges} if vedges else None,
        },
        "counts": {
            "files_seen": len(files),
            "files_kept": sum(w.files_with_examples for w in writers.values()),
            "files_without_windows": no_windows,
            "files_rejected": len(rejects),
            "rejected_by_reason": dict(sorted(Counter(r[1] for r in rejects).items())),
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
        "cache": {"dir": cache_dir, **dict(sorted(cache_stats.items()))},
        "timings_seconds": {
            "total": round(time.perf_counter() - started, 3),
            "workers": workers,
            **{k: round(v, 3) for k, v in stage.items()},
            "worker_cpu": {k: round(v, 3) for k, v in sorted(worker_seconds.items())},
        },
        "peak_rss_mb": {"main": round(_peak_rss_mb(), 1), "worker": round(worker_rss, 1)},
    }
    _write_json(tmp / "dataset_info.json", info)
    return info


def _window_labels(p: BuildParams, base, usable, kept, workers) -> list[np.ndarray] | None:
    """Each kept file's window labels, shape ``(windows, 2)``, with ``--label-scope window``."""
    if p.label_scope != "window":
        return None
    from varemi.window_labels import label_windows

    items = [(usable[k[0]], k[1], (k[2], k[3]), float(k[4]["tempo_bpm"])) for k in kept]
    windows = (p.window_size, p.stride, p.min_window_tokens)
    pairs = label_windows(str(base.path), items, windows, p.jitter, p.jitter_seed, workers)
    return [np.stack(pair, axis=1).reshape(-1, 2) for pair in pairs]


def _hist(bins: np.ndarray, n: int) -> dict[str, int]:
    h = n // 2
    counts = Counter(bins.tolist())
    return {f"{b:+d}": counts.get(b, 0) for b in range(-h, h + 1)}


def _encoder_version() -> str:
    from importlib.metadata import version

    from varemi import __version__

    return f"varemi {__version__}; miditok {version('miditok')}; symusic {version('symusic')}"


def _params_record(p: BuildParams) -> dict:
    rec = asdict(p)
    for k in ("midi_dir", "out", "labels", "cache_dir"):
        rec[k] = None if rec[k] is None else str(rec[k])
    rec["pitch_range"] = list(p.pitch_range) if p.pitch_range else None
    rec["label_range"] = list(p.label_range) if p.label_range else None
    for k in ("quiet", "overwrite", "profile"):
        rec.pop(k)
    return rec


def _write_json(path: Path, obj: dict) -> None:
    import json

    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
