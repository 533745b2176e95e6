"""Per-window labels (``build --label-scope window``): each window labelled from its tokens.

A long piece changes mood, and each window becomes an example of its own; with
``--label-scope window`` its conditioning tokens describe the music the model sees
after them. A window's music token ids are decoded with MidiTok (the base tokenizer,
without the conditioning tokens) into a score, which is labelled by the same formula as
a file (:func:`varemi.labels.label_score`). What the tokens hold is what gets labelled:
notes on the tokenizer's time grid, velocities in its bins, no sustain pedal (the
tokenizer has no pedal tokens, so the model sees none). The tokens hold no tempo
either, so the decoded window is given its file's time-weighted mean tempo
(``tempo_bpm`` of the file's features): a window's rates in seconds are then on the
file's scale. Decoding rather than carrying each token's time out of the encoder
keeps this module independent of the encoder (native or MidiTok) and of the windowing
kernel: it needs only the ids and the tokenizer.

A window that holds no note (only bars and rests) takes its file's labels. Jitter, when
asked, is drawn per window with the key ``"{file}#{window_idx}"``. Windows are cut by
:func:`varemi.kernels.window_spans`, the rule :class:`varemi.export.SplitWriter` cuts by.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from varemi import kernels

LABEL_SCOPES = ("file", "window")

_WORKER: dict = {}


def _init(tokenizer_path: str) -> None:
    from miditok import REMI

    _WORKER["tokenizer"] = REMI(params=tokenizer_path)


def window_labels(
    tokenizer,
    rel: str,
    ids: np.ndarray,
    file_labels: tuple[float, float],
    file_bpm: float,
    windows: tuple[int, int, int],
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The valence and arousal of each kept window of one file.

    Args:
        tokenizer: The base MidiTok tokenizer (no conditioning tokens added).
        rel: The file's path relative to the MIDI root (the jitter key's prefix).
        ids: The file's int32 music token ids.
        file_labels: The file's (valence, arousal), for windows without notes.
        file_bpm: The file's time-weighted mean tempo, given to each decoded window.
        windows: ``(window_size, stride, min_window_tokens)``.
        jitter: Standard deviation of per-window label noise (0: none).
        seed: Seed of that noise.

    Returns:
        ``(valence, arousal)``: float64 arrays, one value per kept window, in order.
    """
    from symusic import Tempo

    from varemi.labels import LabelError, label_score

    ids = np.ascontiguousarray(ids, dtype=np.int32)
    spans = kernels.window_spans(ids, np.array([0, len(ids)], dtype=np.int64), *windows)
    valence = np.empty(len(spans.start))
    arousal = np.empty(len(spans.start))
    for k, (start, stop) in enumerate(zip(spans.start, spans.stop, strict=True)):
        score = tokenizer.decode([ids[start:stop].tolist()])
        score.tempos.clear()
        score.tempos.append(Tempo(0, file_bpm))
        try:
            label = label_score(score, f"{rel}#{k}", jitter=jitter, seed=seed)
            valence[k], arousal[k] = label.valence, label.arousal
        except LabelError:  # bars and rests only: the file's labels
            valence[k], arousal[k] = file_labels
    return valence, arousal


def _one(item: tuple) -> tuple[np.ndarray, np.ndarray]:
    return window_labels(_WORKER["tokenizer"], *item)


def label_windows(
    tokenizer_path: str,
    items: Sequence[tuple[str, np.ndarray, tuple[float, float], float]],
    windows: tuple[int, int, int],
    jitter: float = 0.0,
    seed: int = 0,
    workers: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`window_labels` of many files, in worker processes, in the order given.

    Args:
        tokenizer_path: The base tokenizer's file (each worker loads it once).
        items: ``(rel, ids, file_labels, file_bpm)`` per file.
        windows: ``(window_size, stride, min_window_tokens)``.
        jitter: Standard deviation of per-window label noise.
        seed: Seed of that noise.
        workers: Processes (1: this one).

    Returns:
        One ``(valence, arousal)`` pair of arrays per item.
    """
    jobs = [(*item, windows, jitter, seed) for item in items]
    if workers <= 1 or len(jobs) <= 1:
        _init(tokenizer_path)
        return [_one(job) for job in jobs]
    method = "fork" if sys.platform == "linux" else "spawn"
    with ProcessPoolExecutor(
        min(workers, len(jobs)),
        mp_context=multiprocessing.get_context(method),
        initializer=_init,
        initargs=(tokenizer_path,),
    ) as pool:
        return list(pool.map(_one, jobs, chunksize=4))
