"""``build``: a MIDI folder to an emotion-conditioned Hugging Face dataset.

The entry point is :func:`build`. It checks every parameter before any work, labels
the files (or reads the user's CSV), tokenises them in worker processes (with a
token cache), and streams windows into Arrow shards split by file, so memory does
not grow with the corpus. Everything is written into a temporary folder beside the
target, renamed into place only when complete (DESIGN.md contracts 5-9).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from varemi import conditioning, kernels, reference
from varemi.cache import DamagedEntry, TokenCache, cache_key, default_cache_dir
from varemi.encode import (
    ENCODERS,
    TRACK_MODES,
    EncodeOptions,
    RejectedFile,
    TokenEncoder,
    encode_midi,
    read_midi_bytes,
)
from varemi.errors import VaremiError
from varemi.export import SplitWriter, write_dataset_dict

FORMAT_VERSION = 1
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


# --------------------------------------------------------------------------- workers
_WORKER: dict = {}


def _init_worker(
    tokenizer_path: str, encoder: str, options: EncodeOptions, cache_dir: str | None, key_parts
):
    from miditok import REMI

    _WORKER["tokenizer"] = TokenEncoder(REMI(params=tokenizer_path), encoder)
    _WORKER["options"] = options
    _WORKER["cache"] = TokenCache(cache_dir) if cache_dir else None
    _WORKER["key_parts"] = key_parts


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _tokenise_one(path: str) -> tuple[np.ndarray | None, tuple[str, str] | None, str, dict]:
    """Token ids of one file, via the cache; never raises for a bad file."""
    result = _tokenise_uncaught(path)
    result[3]["peak_rss_mb"] = _peak_rss_mb()
    return result


def _tokenise_uncaught(path: str) -> tuple[np.ndarray | None, tuple[str, str] | None, str, dict]:
    options: EncodeOptions = _WORKER["options"]
    cache: TokenCache | None = _WORKER["cache"]
    timings: dict[str, float] = {}
    status = "off"
    try:
        data = read_midi_bytes(path, options)
        key = None
        if cache is not None:
            key = cache_key(hashlib.sha256(data).hexdigest(), *_WORKER["key_parts"])
            try:
                hit = cache.get(key)
                status = "miss" if hit is None else "hit"
            except DamagedEntry:
                hit, status = None, "damaged"
            if hit is not None:
                ids, minutes = hit
                if minutes > options.max_minutes:
                    raise RejectedFile("too_long", f"{minutes:.1f} min > --max-minutes")
                return ids, None, status, timings
        ids, minutes = encode_midi(data, _WORKER["tokenizer"], options, timings)
        if cache is not None and key is not None:
            try:
                cache.put(key, ids, minutes)
            except OSError:
                pass  # a read-only or full cache only costs speed
        return ids, None, status, timings
    except RejectedFile as e:
        return None, (e.reason, e.detail), status, timings
    except Exception as e:  # a bug in a dependency must not lose the run
        return None, ("tokenize_failed", f"{type(e).__name__}: {e}"), status, timings


def _cache_lookup(path: str, options: EncodeOptions, cache: TokenCache, key_parts):
    """A cached result for one file, or ``(None, status)`` when it must be tokenised."""
    try:
        data = read_midi_bytes(path, options)
    except RejectedFile as e:
        return (None, (e.reason, e.detail), "off", {}), "off"
    try:
        hit = cache.get(cache_key(hashlib.sha256(data).hexdigest(), *key_parts))
    except DamagedEntry:
        return None, "damaged"
    if hit is None:
        return None, "miss"
    ids, minutes = hit
    if minutes > options.max_minutes:
        return (None, ("too_long", f"{minutes:.1f} min > --max-minutes"), "hit", {}), "hit"
    return (ids, None, "hit", {}), "hit"


def _tokenise_all(
    paths: list[str],
    tokenizer: tuple[str, str],
    options: EncodeOptions,
    cache_dir,
    key_parts,
    workers,
) -> Iterator[tuple[np.ndarray | None, tuple[str, str] | None, str, dict]]:
    """Yield each file's result in input order, from worker processes when workers > 1.

    Cache hits are served here in the main process, so a rebuild that only changes
    windows, bins, labels or split starts no worker and never loads MidiTok's encoder.
    """
    cached: dict[int, tuple] = {}
    damaged: set[int] = set()
    if cache_dir is not None:
        cache = TokenCache(cache_dir)
        for i, path in enumerate(paths):
            result, status = _cache_lookup(path, options, cache, key_parts)
            if result is not None:
                cached[i] = result
            elif status == "damaged":
                damaged.add(i)
    misses = [i for i in range(len(paths)) if i not in cached]
    computed = _tokenise_misses(
        [paths[i] for i in misses], tokenizer, options, cache_dir, key_parts, workers
    )
    for i in range(len(paths)):
        if i in cached:
            yield cached.pop(i)
            continue
        ids, reject, status, timings = next(computed)
        yield ids, reject, "damaged" if i in damaged else status, timings


def _tokenise_misses(paths, tokenizer, options, cache_dir, key_parts, workers):
    if not paths:
        return
    init_args = (*tokenizer, options, cache_dir, key_parts)
    if workers <= 1 or len(paths) <= 1:
        _init_worker(*init_args)
        for path in paths:
            yield _tokenise_one(path)
        return
    # forkserver: no fork of a process that may hold pyarrow's threads
    ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        yield from pool.imap(_tokenise_one, paths, chunksize=2)


# --------------------------------------------------------------------------- build
def _labels_for(
    p: BuildParams, files: list[str], rejects: list, workers: int, tmp: Path, cache_dir
):
    """Labels per usable file, computed (through the cache) or read from the user's CSV."""
    import pandas as pd

    from varemi import labels as labelling

    if p.labels is not None:
        table, bad, unmatched = labelling.read_labels_csv(p.labels, files)
        rejects.extend(bad)
        if unmatched and not p.quiet:
            shown = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
            print(
                f"warning: {len(unmatched)} row(s) of {p.labels} name no MIDI file: {shown}",
                file=sys.stderr,
            )
        return table, "csv"
    cache = TokenCache(cache_dir) if cache_dir is not None else None
    keys: dict[str, str] = {}
    rows: list[dict] = []
    if cache is not None:
        # The labeller's own source is part of the key: a new formula never reuses old labels.
        version = hashlib.sha256(Path(labelling.__file__).read_bytes()).hexdigest()
        for f in files:
            try:
                path = p.midi_dir / f
                if path.stat().st_size > p.max_file_mb * 2**20:
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue  # the labeller reports it
            name = f if p.jitter else ""  # jitter depends on the file's name
            keys[f] = cache_key(digest, "labels", version, p.jitter, p.jitter_seed, name)
            try:
                row = cache.get_json(keys[f])
            except DamagedEntry:
                row = None
            if row is not None:
                rows.append({**row, "filename": f})
    done = {r["filename"] for r in rows}
    todo = [f for f in files if f not in done]
    if todo:
        df, bad = labelling.label_folder(
            p.midi_dir,
            files=todo,
            workers=workers,
            jitter=p.jitter,
            seed=p.jitter_seed,
            progress=not p.quiet,
            max_file_mb=p.max_file_mb,
        )
        rejects.extend(bad)
        for row in df.to_dict("records"):
            rows.append(row)
            if cache is not None and row["filename"] in keys:
                try:
                    cache.put_json(keys[row["filename"]], row)
                except OSError:
                    pass  # a read-only or full cache only costs speed
    columns = list(labelling.LABEL_COLUMNS)
    df = pd.DataFrame(rows, columns=columns).sort_values("filename", kind="stable")
    labelling.write_labels_csv(df.reset_index(drop=True), tmp / "labels.csv")
    return {
        f: (float(v), float(a))
        for f, v, a in zip(df["filename"], df["valence"], df["arousal"], strict=True)
    }, "heuristic"


def _bins(p: BuildParams, values: np.ndarray) -> tuple[np.ndarray, list[float] | None]:
    if p.binning == "uniform":
        return conditioning.discretise_uniform(values, p.bins), None
    edges = conditioning.quantile_edges(values, p.bins)
    return conditioning.discretise_quantile(values, edges, p.bins), [float(e) for e in edges]


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
    from varemi.tokenizer import add_conditioning_tokens, save_tokenizer

    stage = {}
    rejects: list[tuple[str, str, str]] = []
    cache_dir = str(p.cache_dir or default_cache_dir()) if p.cache else None
    t = time.perf_counter()
    label_table, label_source = _labels_for(p, files, rejects, workers, tmp, cache_dir)
    stage["labels"] = time.perf_counter() - t
    rejected = {r[0] for r in rejects}
    usable = [f for f in files if f not in rejected and f in label_table]

    t = time.perf_counter()
    is_val = kernels.val_mask(usable, p.seed, p.train_split)
    stage["split"] = time.perf_counter() - t
    valence = np.array([label_table[f][0] for f in usable], dtype=np.float64)
    arousal = np.array([label_table[f][1] for f in usable], dtype=np.float64)
    vbins, vedges = _bins(p, valence)
    abins, aedges = _bins(p, arousal)

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

    options = EncodeOptions(
        p.pitch_policy, tuple(p.pitch_range), p.tracks, p.max_minutes, p.max_file_mb
    )
    key_parts = (
        base.sha256,
        p.pitch_policy,
        tuple(p.pitch_range),
        p.tracks,
        encoder.name,
        _encoder_version(),
    )
    cache_stats: Counter = Counter()
    worker_seconds: Counter = Counter()
    worker_rss = 0.0
    no_windows = 0
    t = time.perf_counter()
    results = _tokenise_all(
        [str(p.midi_dir / f) for f in usable],
        (str(base.path), encoder.name),
        options,
        cache_dir,
        key_parts,
        workers,
    )
    bar = tqdm(total=len(usable), desc="tokenise", unit="file", disable=p.quiet, file=sys.stderr)
    for i, (ids, reject, status, timings) in enumerate(results):
        rel = usable[i]
        cache_stats[status] += 1
        worker_rss = max(worker_rss, timings.pop("peak_rss_mb", 0.0))
        worker_seconds.update(timings)
        bar.update(1)
        if reject is not None:
            rejects.append((rel, *reject))
            continue
        writer = writers["val" if is_val[i] else "train"]
        writer.add(rel, ids, (valence[i], arousal[i]), (int(vbins[i]), int(abins[i])))
        if len(ids) < p.min_window_tokens:
            no_windows += 1
    bar.close()
    stage["tokenise_wall"] = time.perf_counter() - t

    t = time.perf_counter()
    for split, writer in writers.items():
        writer.finish(tmp / split)
    write_dataset_dict(tmp, list(writers))
    shutil.rmtree(shard_dir, ignore_errors=True)
    stage["save"] = time.perf_counter() - t
    for w in writers.values():
        for k, v in w.seconds.items():
            stage[k] = stage.get(k, 0.0) + v

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
            "valence_bin": _hist(vbins, p.bins),
            "arousal_bin": _hist(abins, p.bins),
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
        for k in ("labels", "split", "tokenise_wall", "window_prepend", "export", "save"):
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
