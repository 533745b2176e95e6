"""Type stubs for ``varemi._native``, the Rust kernels.

Built by maturin from ``crates/varemi-python``, over the kernels of ``crates/varemi-core``.

Every array kernel function has a pure-Python twin in :mod:`varemi.core.reference`, its
executable specification: same arguments, same results, and the same exception class
for the same bad input. ``RemiEncoder`` and ``BpeModel`` have no Python twin: their
specification is MidiTok itself, and tests hold their ids equal to MidiTok's. Arrays
are borrowed without copying, so they must be 1-D, C-contiguous and aligned, of
exactly the documented dtype; anything else raises :class:`TypeError`
(:mod:`varemi.core.kernels` copies non-contiguous views first). The work runs with the GIL
released.
"""

from collections.abc import Iterable
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__version__: Final[str]
source_hash: Final[str]
"""A hash of the native sources (both crates' .rs and Cargo.toml, Cargo.lock), baked in at build."""
build_profile: Final[Literal["release", "debug"]]

_PitchArray = (
    npt.NDArray[np.int8]
    | npt.NDArray[np.uint8]
    | npt.NDArray[np.int16]
    | npt.NDArray[np.int32]
    | npt.NDArray[np.int64]
)

def normalize_pitches(
    pitches: _PitchArray,
    low: int = 21,
    high: int = 108,
    policy: str = "clamp",
) -> tuple[_PitchArray, npt.NDArray[np.bool_]]:
    """Move pitches into the inclusive range ``[low, high]`` (docs/contracts.md contract 3).

    Args:
        pitches: 1-D array of MIDI pitches: int8, uint8, int16, int32 or int64.
        low: Lowest pitch kept, inclusive, in 0..127.
        high: Highest pitch kept, inclusive, in 0..127.
        policy: ``clamp`` moves a pitch to the nearest bound; ``fold`` moves it by whole
            octaves until it is inside (the range must span at least 12 semitones);
            ``drop`` leaves the pitch as it is and marks it to be removed.

    Returns:
        The new pitches (a new array, same dtype and length) and a boolean keep mask
        (all True except for the notes ``drop`` removes).

    Raises:
        TypeError: ``pitches`` is not a 1-D, contiguous array of a supported dtype.
        PitchRangeError: unknown policy, ``low > high``, bounds outside 0..127, or
            ``fold`` on a range narrower than an octave.
    """

def window_spans(
    tokens: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    window_size: int = 1024,
    stride: int = 512,
    min_window_tokens: int = 256,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    """Cut every file of a batch into windows (docs/contracts.md contract 5).

    File ``f`` holds ``tokens[offsets[f]:offsets[f+1]]``. Windows of a file of length
    ``n`` start at ``i = 0, stride, 2*stride, ...``; the window is ``t[i:i+window_size]``,
    kept iff its length is at least ``min_window_tokens``; iteration stops after the
    first ``i`` with ``i + window_size >= n``.

    Args:
        tokens: Flat int32 token ids of all files (only its length is read).
        offsets: int64 array of ``n_files + 1`` non-decreasing positions into ``tokens``.
        window_size: Tokens per window, at least 1.
        stride: Distance between window starts, at least 1.
        min_window_tokens: Shortest window kept, in 1..window_size.

    Returns:
        ``(file_index, window_index, start, stop)``, one entry per kept window in file
        order then window order: int64, int32 (0.. within each file), and int64
        absolute positions into ``tokens``.

    Raises:
        TypeError: ``tokens`` is not int32 or ``offsets`` is not int64 (1-D, contiguous).
        WindowParameterError: a window parameter out of range.
        OffsetsError: offsets empty, negative, decreasing or past the end of ``tokens``.
    """

def prepend_conditioning(
    tokens: npt.NDArray[np.int32],
    file_index: npt.NDArray[np.int64],
    start: npt.NDArray[np.int64],
    stop: npt.NDArray[np.int64],
    valence_ids: npt.NDArray[np.int32],
    arousal_ids: npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Write ``[VAL id, ARO id] + window`` for every window into one flat array.

    Args:
        tokens: Flat int32 token ids of all files.
        file_index: int64 file of each window (indexes ``valence_ids``/``arousal_ids``).
        start: int64 absolute start of each window in ``tokens``.
        stop: int64 absolute end (exclusive) of each window in ``tokens``.
        valence_ids: int32 valence conditioning id per file.
        arousal_ids: int32 arousal conditioning id per file.

    Returns:
        ``(values, offsets)``: int32 values (all examples back to back, allocated once at
        their exact size) and int64 offsets (``n_windows + 1`` entries from 0), the
        layout of an Arrow list array.

    Raises:
        TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
        ConditioningError: arrays of different lengths, a window outside ``tokens``, or
            a file index without conditioning ids.
        MemoryError: the output cannot be allocated.
    """

def split_hashes(keys: Iterable[str], seed: int = 42) -> npt.NDArray[np.uint64]:
    """Keyed BLAKE2b of each key (docs/contracts.md contract 6), as unsigned 64-bit integers.

    Args:
        keys: File paths relative to the MIDI root, POSIX separators.
        seed: The split seed in 0..2**64-1, used little-endian as the 8-byte BLAKE2b key.

    Returns:
        uint64 array: the 8-byte digest of each key's UTF-8 bytes, read little-endian.

    Raises:
        SplitParameterError: seed outside 0..2**64-1.
        TypeError: a key that is not a string.
        UnicodeEncodeError: a key that is not valid Unicode (a lone surrogate).
    """

def val_mask(
    keys: Iterable[str], seed: int = 42, train_split: float = 0.9
) -> npt.NDArray[np.bool_]:
    """Which files go to the validation split (docs/contracts.md contract 6).

    Args:
        keys: File paths relative to the MIDI root, POSIX separators.
        seed: The split seed in 0..2**64-1.
        train_split: Fraction of files meant for ``train``, in (0, 1].

    Returns:
        Boolean array, True where the file belongs to ``val``:
        ``hash < floor((1 - train_split) * 2**64)`` in float64.

    Raises:
        SplitParameterError: seed or train_split out of range.
        TypeError: a key that is not a string.
        UnicodeEncodeError: a key that is not valid Unicode (a lone surrogate).
    """

def label_features(
    time: npt.NDArray[np.float64],
    duration: npt.NDArray[np.float64],
    pitch: npt.NDArray[np.int64],
    velocity: npt.NDArray[np.float64],
    note_tracks: npt.NDArray[np.int64],
    pedal_time: npt.NDArray[np.float64],
    pedal_duration: npt.NDArray[np.float64],
    pedal_tracks: npt.NDArray[np.int64],
    tempo_time: npt.NDArray[np.float64],
    tempo_qpm: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The label features of a score's note arrays, in ``FEATURE_NAMES`` order.

    (:data:`varemi.core.label_features.FEATURE_NAMES`)

    The twin is :func:`varemi.core.label_features.features_reference` (the fields of
    :class:`varemi.core.label_features.NoteArrays`, in order).

    Raises:
        TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
        LabelInputError: no notes, arrays of different lengths, or track offsets that
            do not start at 0, decrease, or do not end at the number of entries.
    """

class RemiEncoder:
    """MidiTok 3.1 REMI base-token encoding over fixed vocabulary tables.

    Built by :meth:`varemi.music.encoder.remi.NativeREMI.from_tokenizer` from the tokenizer's own
    tables; use that class rather than this one.
    """

    def __init__(
        self,
        tpq: int,
        bar_id: int,
        bar_end_id: int | None,
        trailing_bars: bool,
        position_ids: list[int],
        pitch_tables: list[tuple[int, list[int]]],
        velocities: tuple[list[int], list[int]] | None,
        durations: tuple[list[int], list[int]],
        remove_duplicated_notes: bool,
    ) -> None:
        """Check and keep the tables.

        Args:
            tpq: The tokenizer's ticks per quarter (``config.max_num_pos_per_beat``).
            bar_id: Id of ``Bar_None``.
            bar_end_id: Id of ``Bar_End`` (``use_bar_end_tokens``), else None.
            trailing_bars: Add the bars up to the last note's end (``add_trailing_bars``).
            position_ids: Ids of ``Position_0`` .. ``Position_{4*tpq-1}``.
            pitch_tables: ``(low, ids)`` per pitch kind: ``ids[p - low]`` is the id of
                pitch ``p``; index 0 for ``Pitch``, 1 for ``PitchDrum`` if used.
            velocities: Non-decreasing velocity values and their ids, or None when
                velocities are off.
            durations: Non-decreasing durations in ticks (at ``tpq``) and their ids.
            remove_duplicated_notes: ``config.remove_duplicated_notes``.

        Raises:
            ValueError: inconsistent tables.
        """

    def encode_track(
        self,
        time: npt.NDArray[np.int32],
        duration: npt.NDArray[np.int32],
        pitch: npt.NDArray[np.int8],
        velocity: npt.NDArray[np.int8],
        ticks_per_quarter: int,
        pitch_table: int,
        use_durations: bool,
    ) -> npt.NDArray[np.int32] | None:
        """One track's base ids, as MidiTok gives them, or None if MidiTok drops it.

        Args:
            time: Onsets in ticks (``track.notes.numpy()["time"]``).
            duration: Durations in ticks.
            pitch: MIDI pitches.
            velocity: Velocities.
            ticks_per_quarter: The score's resolution (resampled to ``tpq``).
            pitch_table: Which pitch table the track uses.
            use_durations: Whether the track's program has ``Duration`` tokens.

        Returns:
            int32 ids, or None when no note is left in the pitch range.

        Raises:
            TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
            ValueError: ``pitch_table`` out of range.
            UnsupportedScore: MidiTok must encode this score itself (arrays of different
                lengths, a negative onset, ticks outside int32 after resampling).
        """

class BpeModel:
    """MidiTok's BPE step over base ids, built once per tokenizer (:mod:`varemi.music.encoder.bpe`).

    Use :meth:`varemi.music.encoder.bpe.NativeBPE.from_tokenizer`, which computes the arguments
    from a
    MidiTok tokenizer and refuses the models this class does not reproduce exactly. The
    results of distinct chunks are cached across calls (a mutex guards the cache, so one
    model may serve several threads); encoding runs with the GIL released.
    """

    def __init__(
        self,
        symbols: npt.NDArray[np.int64],
        added: npt.NDArray[np.bool_],
        prefix: int | None,
        merges_left: npt.NDArray[np.int64],
        merges_right: npt.NDArray[np.int64],
        merges_new: npt.NDArray[np.int64],
    ) -> None:
        """Build the model.

        Args:
            symbols: Per base id: the model id of its character, -1 for an id that is
                not a base id, -2 for a character the model does not know (dropped).
            added: Per base id: True when its character is an added token (it splits
                the chunk and becomes ``symbols[id]``).
            prefix: Model id of the ``Metaspace`` replacement put before every piece, or
                None.
            merges_left: Left ids of the merges, in rank order.
            merges_right: Right ids of the merges, in rank order.
            merges_new: Ids the merges produce, in rank order.

        Raises:
            TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
            UnsupportedConfig: arrays of different lengths, or an id outside int32.
        """

    def encode(
        self, base_ids: npt.NDArray[np.int32], split_offsets: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int32]:
        """Encode base ids cut into chunks at ``split_offsets``.

        Args:
            base_ids: int32 base ids of one sequence.
            split_offsets: int64 chunk offsets: first 0, last ``len(base_ids)``, never
                decreasing (empty chunks give nothing).

        Returns:
            int32 ids after BPE, chunk after chunk.

        Raises:
            TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
            UnknownTokenIdError: a base id the model does not know.
            OffsetsError: offsets that do not cover ``base_ids`` in order.
        """

    def clear_cache(self) -> None:
        """Empty the chunk cache."""

    @property
    def cache_size(self) -> int:
        """Number of distinct chunks cached."""

    @property
    def base_vocab_size(self) -> int:
        """Number of base ids the table covers."""

def pitch_minhash(
    pitches: npt.NDArray[np.int64],
    n: int,
    a: npt.NDArray[np.uint64],
    b: npt.NDArray[np.uint64],
) -> npt.NDArray[np.uint32]:
    """MinHash of the pitch-interval n-grams (tag 1) of ``pitches`` (transposition-invariant).

    Twin: ``varemi.music.fingerprint._pitch_minhash_py``. Permutation k maps a shingle x to
    the high 32 bits of ``a[k] * x + b[k]`` (mod 2**64); the signature has
    ``min(len(a), len(b))`` values, ``2**32 - 1`` each when there is no shingle.

    Raises:
        TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
    """

def fingerprint_notes(
    time: npt.NDArray[np.int64],
    pitch: npt.NDArray[np.int64],
    duration: npt.NDArray[np.int64],
    tpq: int,
    resolution: int,
    n: int,
    a: npt.NDArray[np.uint64],
    b: npt.NDArray[np.uint64],
) -> tuple[bytes, bytes, npt.NDArray[np.uint32]]:
    """A file's fingerprint: exact digest, transposed digest, MinHash signature.

    Twin: ``varemi.music.fingerprint._fingerprint_notes_py``. Onsets and durations (ticks,
    ``tpq`` per quarter) are rounded half to even to ``resolution`` steps per quarter;
    the notes sorted by (onset, pitch, duration) are hashed with BLAKE2b-64 as
    little-endian int64 triples, then again with onsets from the first note and pitches
    from the lowest; the MinHash is :func:`pitch_minhash` of the sorted pitches.

    Raises:
        TypeError: an array of the wrong dtype, not 1-D, or not contiguous.
        ValueError: the three note arrays differ in length.
    """
