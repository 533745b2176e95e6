"""Windows + prefix: files' token ids to conditioned examples (docs/contracts.md contract 5).

The stage between tokenising and export. A :class:`Windower` gathers one split's files
until about :data:`BATCH_TOKENS` music tokens are waiting, then cuts them all into
windows and prefixes every window with its file's conditioning ids in one call of the
native kernels (:func:`varemi.core.kernels.make_examples`), straight into the flat values +
offsets of an Arrow list column. With ``build --label-scope window`` a file comes with
one label pair per window, and each example's two conditioning ids are then replaced by
its own window's. Export writes each :class:`ExampleBatch` as one shard.

This module also owns the window parameters (``--window-size``, ``--stride``,
``--min-window-tokens``) and their validator, :func:`check_window_params`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from varemi.core import kernels
from varemi.core.conditioning import bin_token_ids
from varemi.core.params import check_window_params

BATCH_TOKENS = 1 << 21
"""Music tokens gathered per split before they are windowed (and written as one shard)."""


@dataclass
class ExampleBatch:
    """Conditioned examples of a batch of files, and what each file contributes to a row.

    Attributes:
        examples: Values + offsets of the examples, with each one's file and window index.
        files: Each file's path relative to the MIDI root.
        valence: float32 label per file.
        arousal: float32 label per file.
        valence_bin: int8 bin per file.
        arousal_bin: int8 bin per file.
        augmentation: Per file: the copy's augmentation (``t+2``), empty for the original.
        example_labels: ``(valence, arousal, valence_bin, arousal_bin)`` per example
            (``build --label-scope window``), or None: each example has its file's.
    """

    examples: object  # varemi.core.kernels.Examples
    files: list[str]
    valence: np.ndarray
    arousal: np.ndarray
    valence_bin: np.ndarray
    arousal_bin: np.ndarray
    augmentation: list[str]
    example_labels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The ``valence``, ``arousal``, ``valence_bin``, ``arousal_bin`` of every example.

        Returns:
            Four arrays (float32, float32, int8, int8), one entry per example.
        """
        if self.example_labels is not None:
            return self.example_labels
        fi = self.examples.file_index
        return self.valence[fi], self.arousal[fi], self.valence_bin[fi], self.arousal_bin[fi]


class Windower:
    """Gathers one split's files and turns them into conditioned examples, batch by batch.

    Args:
        conditioning_tokens: Conditioning token string to id (contract 1).
        window_size: Tokens per window.
        stride: Distance between window starts.
        min_window_tokens: Shortest window kept.
        bos: The BOS id to put before the conditioning tokens (``build --bos``:
            ``[BOS, VAL, ARO] + window``), or None for ``[VAL, ARO] + window``.
        bar_starts: With ``--window-align bar``: bool per token id (the id starts a bar);
            windows then start at bars. None: windows start every ``stride`` tokens.

    Attributes:
        seconds: Wall seconds spent in the kernels so far.
    """

    def __init__(
        self,
        conditioning_tokens: Mapping[str, int],
        window_size: int,
        stride: int,
        min_window_tokens: int,
        bos: int | None = None,
        bar_starts: np.ndarray | None = None,
    ) -> None:
        check_window_params(window_size, stride, min_window_tokens)
        self.bos = bos
        self.bar_starts = bar_starts
        self.conditioning_tokens = dict(conditioning_tokens)
        self.windows = (window_size, stride, min_window_tokens)
        self.pending: list[tuple] = []  # (rel, ids, v, a, vbin, abin, augmentation, windows)
        self.pending_tokens = 0
        self.seconds = 0.0

    def add(
        self,
        rel: str,
        ids: np.ndarray,
        labels: tuple[float, float],
        bins: tuple[int, int],
        augmentation: str = "",
        windows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> ExampleBatch | None:
        """Queue one file (or an augmented copy); once enough tokens are queued, return examples.

        Args:
            rel: The file's path relative to the MIDI root.
            ids: Its int32 music token ids.
            labels: Its (valence, arousal).
            bins: Its (valence bin, arousal bin).
            augmentation: The copy's augmentation (``t+2``), empty for the original.
            windows: With ``build --label-scope window``: ``(valence, arousal,
                valence_bin, arousal_bin)`` arrays, one entry per window this file gives
                (in window order); its examples then carry these instead of the file's.

        Returns:
            The queued files' examples when :data:`BATCH_TOKENS` are reached, else None.
        """
        self.pending.append((rel, ids, *labels, *bins, augmentation, windows))
        self.pending_tokens += len(ids)
        return self.flush() if self.pending_tokens >= BATCH_TOKENS else None

    def flush(self) -> ExampleBatch | None:
        """The queued files' examples (None when no file is queued); empties the queue.

        Returns:
            One :class:`ExampleBatch`, or None.
        """
        if not self.pending:
            return None
        t0 = time.perf_counter()
        pending, self.pending, self.pending_tokens = self.pending, [], 0
        tokens = np.concatenate([x[1] for x in pending]).astype(np.int32, copy=False)
        offsets = np.zeros(len(pending) + 1, dtype=np.int64)
        np.cumsum([len(x[1]) for x in pending], out=offsets[1:])
        vbin = np.array([x[4] for x in pending], dtype=np.int8)
        abin = np.array([x[5] for x in pending], dtype=np.int8)
        valence_ids, arousal_ids = bin_token_ids(self.conditioning_tokens, vbin, abin)
        examples = kernels.make_examples(
            tokens, offsets, valence_ids, arousal_ids, *self.windows, self.bar_starts
        )
        example_labels = None
        if any(x[7] is not None for x in pending):  # --label-scope window
            example_labels = self._window_labels(pending, examples)
            # each example's own bins replace its file's in the [VAL, ARO] prefix
            heads = examples.offsets[:-1]
            vids, aids = bin_token_ids(self.conditioning_tokens, *example_labels[2:])
            examples.values[heads] = vids
            examples.values[heads + 1] = aids
        if self.bos is not None:  # build --bos: one BOS id before every example
            examples = examples._replace(
                values=np.insert(examples.values, examples.offsets[:-1], np.int32(self.bos)),
                offsets=examples.offsets
                + np.arange(len(examples.offsets), dtype=examples.offsets.dtype),
            )
        batch = ExampleBatch(
            examples=examples,
            files=[x[0] for x in pending],
            valence=np.array([x[2] for x in pending], np.float32),
            arousal=np.array([x[3] for x in pending], np.float32),
            valence_bin=vbin,
            arousal_bin=abin,
            augmentation=[x[6] for x in pending],
            example_labels=example_labels,
        )
        self.seconds += time.perf_counter() - t0
        return batch

    @staticmethod
    def _window_labels(pending: list[tuple], examples) -> tuple[np.ndarray, ...]:
        """Per-example labels and bins: a file's window arrays, else its own repeated.

        Examples come file by file, each file's in window order, so concatenating every
        file's per-window arrays lines up with them.
        """
        counts = np.bincount(examples.file_index, minlength=len(pending))
        columns: list[list[np.ndarray]] = [[], [], [], []]
        for x, n in zip(pending, counts.tolist(), strict=True):
            if x[7] is None:
                parts = [np.full(n, x[k]) for k in (2, 3, 4, 5)]
            else:
                parts = list(x[7])
                if any(len(part) != n for part in parts):
                    raise AssertionError(f"{x[0]}: {len(parts[0])} window labels for {n} windows")
            for column, part in zip(columns, parts, strict=True):
                column.append(part)
        dtypes = (np.float32, np.float32, np.int8, np.int8)
        return tuple(
            np.concatenate(c).astype(d) if c else np.zeros(0, d)
            for c, d in zip(columns, dtypes, strict=True)
        )
