"""Every file of a corpus to token ids (and labels), in worker processes, through the cache.

The entry point is :func:`tokenise_corpus`. Each file is read and parsed once: when
``build`` computes the labels itself, the worker labels the parsed score before
tokenising it. Results come back in the order of the files, whatever the number of
workers (docs/contracts.md contract 8). With one worker, cache hits are served in this
process; with several, each worker looks its files up in the cache itself
(:func:`process_file`), so hits are served in parallel and a build resumed half way
costs the remaining files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.workers import CRASHED_DETAIL, map_in_workers, peak_rss_mb
from varemi.core import kernels
from varemi.corpus.cache import (
    DamagedEntry,
    TokenCache,
    fingerprint_key,
    label_key,
    token_key,
    window_label_key,
)
from varemi.labelling import heuristic
from varemi.music.augment import apply
from varemi.music.encoder import EncodeOptions, TokenEncoder, encode_midi
from varemi.music.files import RejectedFile, parse_midi, read_midi_bytes
from varemi.music.fingerprint import Fingerprint, fingerprint_score
from varemi.music.key import to_c
from varemi.music.timing import TempoMap, give_tempos, tempo_map, window_first_bars
from varemi.music.tokenizer import (
    DecodeError,
    bar_count_table,
    bar_quarters,
    bar_start_table,
    decode_music,
    import_miditok,
)


@dataclass(frozen=True)
class Job:
    """What every worker needs to know; sent once to each.

    Attributes:
        root: The MIDI folder.
        tokenizer_path: The base tokenizer's JSON file.
        encoder: ``native`` or ``miditok`` (already resolved).
        options: Pitch and track handling, limits.
        tokenizer_sha256: Hex sha256 of the base tokenizer's file (part of the cache key).
        cache_dir: The token cache folder, or None for no cache.
        labels: ``(jitter, jitter_seed, labeller version, labeller)`` when the labels are
            computed here (the labeller: the heuristic or a fitted one, see
            :mod:`varemi.labelling.fitted`; its version is
            :func:`varemi.corpus.cache.labeller_version`), None when they come from the
            user's CSV.
        fingerprint: Also compute each file's duplicate-detection fingerprint
            (:mod:`varemi.corpus.grouping`), cached beside its tokens.
        window_labels: ``(window_size, stride, min_window_tokens, window_align)`` with ``build
            --label-scope window``: also label every window from its own decoded music
            (:func:`window_labels`), cached beside its tokens; None otherwise.
        label_time: The time base of the file labels (``build --label-time`` resolved,
            :func:`varemi.pipeline.params.label_times`): ``seconds`` (the parsed file,
            its tempo map) or ``beats`` (its token ids decoded: no tempo).
        window_time: The time base of the window labels: ``beats`` (each window's ids
            decoded) or ``seconds`` (decoded and given the file's tempo map over the
            bars it holds, :mod:`varemi.music.timing`).
        key_to_c: ``build --key-to-c``: each parsed file is first moved to a tonic of C
            (:func:`varemi.music.key.to_c`), before labelling, augmentation and
            tokenisation.
    """

    root: str
    tokenizer_path: str
    tokenizer_sha256: str
    encoder: str
    options: EncodeOptions
    cache_dir: str | None
    labels: tuple[float, int, str, heuristic.Labeller] | None
    fingerprint: bool = False
    window_labels: tuple[int, int, int, str] | None = None
    label_time: str = "seconds"
    window_time: str = "beats"
    key_to_c: bool = False


@dataclass
class FileResult:
    """One file's outcome.

    Attributes:
        ids: int32 music token ids, or None when rejected.
        label: Its row of ``labels.csv`` when labels are computed here, else None.
        reject: ``(reason, detail)`` when the file cannot be used, else None.
        fingerprint: Its :class:`varemi.music.fingerprint.Fingerprint` when asked, else None.
        window_labels: ``(valence, arousal)`` float64 arrays, one entry per window
            (``Job.window_labels``), else None.
        window_fallback: How many of those windows could not be labelled from their
            own music (no notes) and took the file's label.
        cache: ``hit``, ``miss``, ``damaged`` or ``off``.
        timings: Seconds per stage spent on this file (in a worker).
        peak_rss_mb: The worker's peak resident memory so far.
    """

    ids: np.ndarray | None = None
    label: dict | None = None
    reject: tuple[str, str] | None = None
    fingerprint: object = None
    window_labels: tuple[np.ndarray, np.ndarray] | None = None
    window_fallback: int = 0
    cache: str = "off"
    timings: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0


def _keys(job: Job, rel: str, data: bytes, aug: str = "") -> tuple[str, str | None]:
    digest = hashlib.sha256(data).hexdigest()
    o = job.options
    tokens = token_key(
        digest,
        job.tokenizer_sha256,
        o.pitch_policy,
        o.pitch_range,
        o.tracks,
        job.encoder,
        aug,
        job.key_to_c,
    )
    if job.labels is None:
        return tokens, None
    jitter, seed, version, _ = job.labels
    return tokens, label_key(
        digest, version, jitter, seed, rel, aug, job.label_time, tokens, job.key_to_c
    )


def _item(x) -> tuple[str, str]:
    """A work item: a file, or ``(file, augmentation)`` (empty for the original)."""
    return (x, "") if isinstance(x, str) else (x[0], x[1])


def _cached(job: Job, cache: TokenCache, item, windows: bool = True) -> FileResult:
    """One file's (or copy's) result from the cache (read by the main process or a worker).

    Returns a result with ids (a hit) or a reject (unreadable, too large, or a hit
    that lasts too long); otherwise one with neither, whose ``cache`` says why the
    file must be computed (``miss`` or ``damaged``). With ``job.window_labels`` and
    ``windows``, a hit also carries its window labels: cached ones, or computed now
    from the cached ids (and cached); ``windows=False`` only looks the tokens up.
    """
    rel, aug = _item(item)
    try:
        data = read_midi_bytes(Path(job.root) / rel, job.options.max_file_mb)
    except RejectedFile as e:
        return FileResult(reject=(e.reason, e.detail))
    tkey, lkey = _keys(job, rel, data, aug)
    fingerprint = job.fingerprint and not aug
    try:
        hit = cache.get(tkey)
        label = cache.get_json(lkey) if lkey is not None and hit else None
        fp = None
        if fingerprint and hit:
            entry = cache.get_json(fingerprint_key(tkey))
            fp = Fingerprint.from_json(entry) if entry is not None else None
    except DamagedEntry:
        return FileResult(cache="damaged")
    if hit is None or (lkey is not None and label is None) or (fingerprint and fp is None):
        return FileResult(cache="miss")
    ids, minutes = hit
    if minutes > job.options.max_minutes:
        reason = ("too_long", f"{minutes:.1f} min > --max-minutes {job.options.max_minutes:g}")
        return FileResult(reject=reason, cache="hit")
    if label is not None:
        label = {**label, "filename": rel}
    result = FileResult(ids=ids, label=label, fingerprint=fp, cache="hit")
    if windows and job.window_labels is not None and label is not None:

        def tempo() -> TempoMap:  # only when the window labels must be computed
            score = parse_midi(data)
            if aug:
                apply(score, aug)
            return tempo_map(score)

        _add_window_labels(job, result, rel, cache, tkey, lkey, tempo)
    return result


def window_labels(
    tokenizer,
    ids: np.ndarray,
    name: str,
    file_label: tuple[float, float],
    windows: tuple[int, int, int],
    jitter: float = 0.0,
    seed: int = 0,
    bar_starts: np.ndarray | None = None,
    labeller: heuristic.Labeller | None = None,
    tempo: tuple[TempoMap, np.ndarray, np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each window's labels from its own music (``build --label-scope window``).

    The windows are the ones :func:`varemi.core.kernels.make_examples` cuts from ``ids``
    (a pure function of ``len(ids)`` and the window parameters, and with
    ``--window-align bar`` of where the bars start). Each window's music
    ids are decoded with ``tokenizer`` to a score and labelled by
    :func:`varemi.labelling.heuristic.label_score` with ``labeller`` (the heuristic, or a
    fitted labeller), with the file's noise (``name``, ``jitter``, ``seed``): the label
    describes what the model sees after the conditioning tokens.
    A window that cannot be labelled (no notes, or ids that do not decode) takes
    ``file_label``. With ``tempo`` (``--label-time seconds``) each decoded window is
    first given the file's tempo map over the bars it holds
    (:mod:`varemi.music.timing`); without it, it keeps the decoder's 120 qpm (beats).

    Args:
        tokenizer: The base MidiTok tokenizer the ids were made with.
        ids: The file's int32 music token ids.
        name: The file's path relative to the MIDI root (the noise key).
        file_label: The file's (valence, arousal).
        windows: ``(window_size, stride, min_window_tokens)``.
        jitter: ``--jitter``.
        seed: ``--jitter-seed``.
        bar_starts: With ``--window-align bar``: which ids start a bar
            (:func:`varemi.music.tokenizer.bar_start_table`); None for token windows.
        labeller: ``--labeller`` (None: the heuristic).
        tempo: ``(file's tempo map, bar_start_table, bar_count_table, quarters per
            bar)`` for labels in seconds; None for labels in beats.

    Returns:
        ``(valence, arousal, fallback)``: float64 arrays, one entry per window, and how
        many windows took the file's label.
    """
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    offsets = np.array([0, len(ids)], dtype=np.int64)
    if bar_starts is None:
        spans = kernels.window_spans(ids, offsets, *windows)
    else:
        spans = kernels.bar_window_spans(ids, offsets, bar_starts, *windows)
    valence = np.empty(len(spans.start), dtype=np.float64)
    arousal = np.empty(len(spans.start), dtype=np.float64)
    fallback = 0
    if tempo is not None:
        tempos, starts_bar, bar_counts, quarters = tempo
        first_bars = window_first_bars(ids, spans.start, starts_bar, bar_counts).tolist()
    for k, (start, stop) in enumerate(zip(spans.start.tolist(), spans.stop.tolist(), strict=True)):
        try:
            score = decode_music(tokenizer, ids[start:stop].tolist())
            if tempo is not None:
                give_tempos(score, tempos, first_bars[k] * quarters)
            label = heuristic.label_score(score, name, jitter=jitter, seed=seed, labeller=labeller)
            valence[k], arousal[k] = label.valence, label.arousal
        except (DecodeError, heuristic.LabelError):  # no notes, or ids MidiTok cannot decode
            valence[k], arousal[k] = file_label
            fallback += 1
    return valence, arousal, fallback


def _add_window_labels(
    job: Job,
    result: FileResult,
    rel: str,
    cache: TokenCache | None,
    tkey: str,
    lkey: str | None,
    tempo=None,
) -> None:
    """Put the window labels of a labelled result into it: from the cache, else computed.

    ``tempo`` gives the file's :class:`varemi.music.timing.TempoMap` when called (needed
    for window labels in seconds only, and only when they are not cached).
    """
    key = (
        window_label_key(tkey, lkey, job.window_labels, job.window_time)
        if cache is not None and lkey is not None
        else None
    )
    if key is not None:
        try:
            entry = cache.get_json(key)
        except DamagedEntry:
            entry = None
        if entry is not None and len(entry.get("valence", ())) == len(entry.get("arousal", ())):
            result.window_labels = (
                np.array(entry["valence"], dtype=np.float64),
                np.array(entry["arousal"], dtype=np.float64),
            )
            result.window_fallback = int(entry.get("fallback", 0))
            return
    if _WORKER.get("job") != job:
        _init_worker(job)
    jitter, seed, _, labeller = job.labels
    file_label = (result.label["valence"], result.label["arousal"])
    t = time.perf_counter()
    *windows, _ = job.window_labels
    timing = None
    if job.window_time == "seconds":
        timing = (tempo(), *_WORKER["bar_tables"])
    v, a, fallback = window_labels(
        _WORKER["encoder"].tokenizer,
        result.ids,
        rel,
        file_label,
        tuple(windows),
        jitter,
        seed,
        _WORKER["bar_starts"],
        labeller,
        timing,
    )
    result.timings["window_labels"] = result.timings.get("window_labels", 0.0) + (
        time.perf_counter() - t
    )
    result.window_labels, result.window_fallback = (v, a), fallback
    if key is not None:
        try:
            cache.put_json(
                key, {"valence": v.tolist(), "arousal": a.tolist(), "fallback": fallback}
            )
        except OSError:
            pass  # a read-only or full cache only costs speed


_WORKER: dict = {}


def _init_worker(job: Job) -> None:

    _WORKER["job"] = job
    _WORKER["encoder"] = TokenEncoder(import_miditok().REMI(params=job.tokenizer_path), job.encoder)
    _WORKER["cache"] = TokenCache(job.cache_dir) if job.cache_dir else None
    tokenizer = _WORKER["encoder"].tokenizer
    aligned = job.window_labels is not None and job.window_labels[3] == "bar"
    _WORKER["bar_starts"] = bar_start_table(tokenizer) if aligned else None
    _WORKER["bar_tables"] = None
    if job.window_labels is not None and job.window_time == "seconds":
        starts = _WORKER["bar_starts"] if aligned else bar_start_table(tokenizer)
        quarters = bar_quarters(tokenizer)
        if quarters is None:  # build refuses this before any work
            raise VaremiError("window labels in seconds need bars of one length")
        _WORKER["bar_tables"] = (starts, bar_count_table(tokenizer), quarters)


def label_tokens(
    tokenizer, ids: np.ndarray, name: str, jitter: float, seed: int, labeller
) -> heuristic.FileLabel:
    """A file's label in beats (``--label-time beats``): its token ids decoded and labelled.

    The music as the tokens hold it: quantised to the tokenizer's positions and
    velocities, no tempo (the decoder's 120 qpm), no drums; as windows and generated
    music are measured.

    Args:
        tokenizer: The base tokenizer the ids were made with.
        ids: The file's music token ids.
        name: Its path relative to the MIDI root (the noise key).
        jitter: ``--jitter``.
        seed: ``--jitter-seed``.
        labeller: The labeller (None: the heuristic).

    Returns:
        Its label.

    Raises:
        RejectedFile: ``no_notes`` (nothing to label), ``tokenize_failed`` (ids that
            MidiTok cannot decode).
    """
    if len(ids) == 0:
        raise RejectedFile("no_notes", "no notes in the token ids")
    try:
        score = decode_music(tokenizer, np.asarray(ids).tolist())
        return heuristic.label_score(score, name, jitter=jitter, seed=seed, labeller=labeller)
    except DecodeError as e:
        raise RejectedFile("tokenize_failed", f"the token ids do not decode: {e}") from e
    except heuristic.LabelError as e:
        raise RejectedFile(e.reason, e.detail) from e


def _process(item) -> FileResult:
    """Label (if asked) and tokenise one file (or a copy); never raises for a bad file."""
    rel, aug = _item(item)
    job: Job = _WORKER["job"]
    result = FileResult(cache="miss" if job.cache_dir else "off")
    try:
        data = read_midi_bytes(Path(job.root) / rel, job.options.max_file_mb)

        tempos: list[TempoMap] = []

        def label(score) -> None:
            if job.window_labels is not None and job.window_time == "seconds":
                tempos.append(tempo_map(score))
            if job.label_time != "seconds":  # in beats: from the token ids, below
                return
            jitter, seed, _, labeller = job.labels
            try:
                file_label = heuristic.label_score(
                    score, rel, jitter=jitter, seed=seed, labeller=labeller
                )
            except heuristic.LabelError as e:
                raise RejectedFile(e.reason, e.detail) from e
            result.label = heuristic.label_row(rel, file_label)

        def fingerprint(score) -> None:

            result.fingerprint = fingerprint_score(score)

        on_parsed = label if job.labels is not None else None
        on_ready = fingerprint if job.fingerprint and not aug else None
        augment = None
        if aug or job.key_to_c:

            def augment(score) -> None:
                if job.key_to_c:  # first: labels, copies and tokens see the music in C
                    to_c(score)
                if aug:
                    apply(score, aug)

        ids, minutes = encode_midi(
            data, _WORKER["encoder"], job.options, result.timings, on_parsed, on_ready, augment
        )
        result.ids = ids
        if job.labels is not None and job.label_time == "beats":
            t = time.perf_counter()
            jitter, seed, _, labeller = job.labels
            tokenizer = _WORKER["encoder"].tokenizer
            file_label = label_tokens(tokenizer, ids, rel, jitter, seed, labeller)
            result.label = heuristic.label_row(rel, file_label)
            result.timings["labels"] = result.timings.get("labels", 0.0) + (time.perf_counter() - t)
        cache: TokenCache | None = _WORKER["cache"]
        tkey, lkey = _keys(job, rel, data, aug)
        if job.window_labels is not None and result.label is not None:
            _add_window_labels(job, result, rel, cache, tkey, lkey, tempos.pop)
        if cache is not None:
            try:
                cache.put(tkey, ids, minutes)
                if lkey is not None:
                    cache.put_json(lkey, result.label)
                if result.fingerprint is not None:
                    cache.put_json(fingerprint_key(tkey), result.fingerprint.to_json())
            except OSError:
                pass  # a read-only or full cache only costs speed
    except RejectedFile as e:
        result.ids, result.label, result.reject = None, None, (e.reason, e.detail)
        result.fingerprint, result.window_labels = None, None
    except VaremiError as e:  # a score varemi's own code cannot handle: this file only
        result.ids, result.label, result.fingerprint = None, None, None
        result.window_labels = None
        result.reject = ("tokenize_failed", f"{type(e).__name__}: {e}")
    result.peak_rss_mb = peak_rss_mb()
    return result


def tokenise_corpus(job: Job, files: list, workers: int) -> Iterator[FileResult]:
    """Each file's result, in the order of ``files``.

    Args:
        job: What to compute and how.
        files: Paths relative to ``job.root``, or ``(path, augmentation)`` pairs
            (:mod:`varemi.music.augment`; an empty augmentation is the original).
        workers: Worker processes (1: everything in this process).

    Yields:
        One :class:`FileResult` per file, in order.
    """
    if job.cache_dir is not None and workers > 1 and len(files) > 1:
        # The workers look the cache up themselves (process_file), in parallel: a build
        # resumed half way costs the remaining files, not a serial pass over the others.
        yield from _compute(job, files, workers, _lookup_or_process)
        return
    hits: set[int] = set()
    status: dict[int, str] = {}
    if job.cache_dir is not None:
        cache = TokenCache(job.cache_dir)
        for i, rel in enumerate(files):
            result = _cached(job, cache, rel, windows=False)
            if result.ids is not None or result.reject is not None:
                hits.add(i)  # read again at its turn: a warm corpus's ids are never all held
            else:
                status[i] = result.cache
    misses = [rel for i, rel in enumerate(files) if i not in hits]
    computed = _compute(job, misses, workers)
    for i in range(len(files)):
        if i in hits:
            result = _cached(job, cache, files[i])
            if result.ids is None and result.reject is None:  # changed since the first look
                result = process_file(job, files[i])
            yield result
            continue
        result = next(computed)
        if status.get(i) == "damaged":
            result.cache = "damaged"
        yield result


def _lookup_or_process(item) -> FileResult:
    """A worker's :func:`process_file` (cache, else compute) for the pool's job."""
    return process_file(_WORKER["job"], item)


def _compute(job: Job, files: list, workers: int, fn=_process) -> Iterator[FileResult]:
    if not files:
        return
    if workers <= 1 or len(files) <= 1:
        _init_worker(job)
        for rel in files:
            yield fn(rel)
        return

    def crashed(rel: str) -> FileResult:
        return FileResult(
            reject=("crashed", CRASHED_DETAIL), cache="miss" if job.cache_dir else "off"
        )

    yield from map_in_workers(fn, files, workers, _init_worker, (job,), crashed)


def process_file(job: Job, item) -> FileResult:
    """One file's result as :func:`tokenise_corpus` gives it, computed in this process.

    The token cache first (when ``job`` has one), else :func:`_process` (read, label,
    tokenise, cache). ``build --engine ray`` calls this on its workers, so both engines
    run the same per-file function.

    Args:
        job: What to compute and how (the worker is set up for it on first use).
        item: The file's path relative to ``job.root``, or ``(path, augmentation)``.

    Returns:
        The file's :class:`FileResult`.
    """
    if _WORKER.get("job") != job:
        _init_worker(job)
    status = None
    if job.cache_dir is not None:
        cached = _cached(job, _WORKER["cache"], item)
        if cached.ids is not None or cached.reject is not None:
            return cached
        status = cached.cache
    result = _process(item)
    if status == "damaged":
        result.cache = "damaged"
    return result
