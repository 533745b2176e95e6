"""The build parameters and their checks (each by the module that owns the parameter)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from varemi._base.errors import VaremiError
from varemi._base.options import (
    BUILD_OPTIONS,
    ENGINES,
    LABEL_SCOPES,
    LABEL_TIMES,
    PRESETS,
    defaults,
)
from varemi._base.workers import check_workers
from varemi.core import conditioning
from varemi.core.params import check_split_params, check_window_align, check_window_params
from varemi.core.pitch import PITCH_POLICIES, check_pitch_params
from varemi.corpus.cache import default_cache_dir
from varemi.corpus.grouping import check_options
from varemi.dataset.export import (
    FORMATS,
)
from varemi.dataset.info import is_varemi_dataset
from varemi.dataset.staging import check_inputs_outside, check_output_folder, resolve_out
from varemi.labelling.fitted import load_labeller
from varemi.labelling.heuristic import check_label_params
from varemi.labelling.label_csv import check_label_range
from varemi.music import augment
from varemi.music.encoder import check_encode_params


class MidiDirError(VaremiError):
    """The MIDI folder is missing or holds no MIDI file."""


_DEFAULTS = defaults(BUILD_OPTIONS)


@dataclass
class BuildParams:
    """Every build parameter, under its command-line option name (dashes as underscores).

    The fields, their order and their defaults are those of
    :data:`varemi._base.options.BUILD_OPTIONS` (a test holds them equal).

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
            :mod:`varemi.pipeline.ray_engine`: every option, the same rows as ``local``, in two
            passes over the corpus).
        ray_address: With ``ray``: None starts a local Ray; ``auto`` or an address
            connects to a running cluster.
        format: ``arrow`` (``save_to_disk`` layout) or ``parquet`` (Parquet shards).
        window_align: ``token`` (windows start every ``stride`` tokens) or ``bar`` (each
            window starts at the first bar at or after each stride point).
        label_scope: ``file`` (every window carries its file's labels) or ``window``
            (every window is labelled from its own decoded music; computed labels only).
        labeller: A labeller file written by ``labels --fit``
            (:mod:`varemi.labelling.fitted`): computed labels come from it; None: the
            heuristic.
        label_time: ``auto`` (the file's label in seconds with its tempo map, each
            window's, with window scope, in beats: the behaviour before the option),
            ``beats`` (file and window labels from the music as the tokens hold it:
            decoded, no tempo) or ``seconds`` (file and window labels with the file's
            own tempo map); see :func:`label_times`.
        preset: The ``--preset`` the options came from (recorded; the command line
            fills options left out from it, see
            :func:`varemi._base.options.preset_values`; in Python pass its values
            yourself: ``BuildParams(**preset_values("control", "build"), ...)``).
        key_to_c: Move every file to a tonic of C (its estimated key,
            :mod:`varemi.music.key`) before labelling, augmentation and tokenisation.
    """

    midi_dir: Path
    out: Path
    labels: Path | None = _DEFAULTS["labels"]
    label_range: tuple[float, float] | None = _DEFAULTS["label_range"]
    tokenizer: str = _DEFAULTS["tokenizer"]
    window_size: int = _DEFAULTS["window_size"]
    stride: int = _DEFAULTS["stride"]
    min_window_tokens: int = _DEFAULTS["min_window_tokens"]
    bins: int = _DEFAULTS["bins"]
    binning: str = _DEFAULTS["binning"]
    train_split: float = _DEFAULTS["train_split"]
    seed: int = _DEFAULTS["seed"]
    pitch_policy: str = _DEFAULTS["pitch_policy"]
    pitch_range: tuple[int, int] | None = _DEFAULTS["pitch_range"]
    tracks: str = _DEFAULTS["tracks"]
    bos: bool = _DEFAULTS["bos"]
    encoder: str = _DEFAULTS["encoder"]
    max_minutes: float = _DEFAULTS["max_minutes"]
    max_file_mb: float = _DEFAULTS["max_file_mb"]
    workers: int | None = _DEFAULTS["workers"]
    jitter: float = _DEFAULTS["jitter"]
    jitter_seed: int = _DEFAULTS["jitter_seed"]
    cache_dir: Path | None = _DEFAULTS["cache_dir"]
    cache: bool = _DEFAULTS["cache"]
    overwrite: bool = _DEFAULTS["overwrite"]
    quiet: bool = _DEFAULTS["quiet"]
    profile: bool = _DEFAULTS["profile"]
    dedup: str = _DEFAULTS["dedup"]
    groups: Path | None = _DEFAULTS["groups"]
    group_by: str | None = _DEFAULTS["group_by"]
    augment_transpose: str | None = _DEFAULTS["augment_transpose"]
    augment_velocity: str | None = _DEFAULTS["augment_velocity"]
    augment_tempo: str | None = _DEFAULTS["augment_tempo"]
    engine: str = _DEFAULTS["engine"]
    ray_address: str | None = _DEFAULTS["ray_address"]
    format: str = _DEFAULTS["format"]
    label_scope: str = _DEFAULTS["label_scope"]
    window_align: str = _DEFAULTS["window_align"]
    labeller: Path | None = _DEFAULTS["labeller"]
    label_time: str = _DEFAULTS["label_time"]
    preset: str | None = _DEFAULTS["preset"]
    key_to_c: bool = _DEFAULTS["key_to_c"]


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


def check_label_time(time: str, labels: Path | None) -> None:
    """Refuse a ``--label-time`` that is unknown or that the other options exclude.

    Args:
        time: ``auto``, ``beats`` or ``seconds``.
        labels: The ``--labels`` CSV, or None.

    Raises:
        VaremiError: an unknown value, or ``beats``/``seconds`` with ``--labels``.
    """
    if time not in LABEL_TIMES:
        raise VaremiError(f"--label-time must be one of {', '.join(LABEL_TIMES)}, got {time!r}")
    if time != "auto" and labels is not None:
        raise VaremiError(
            f"--label-time {time} says how computed labels are measured; a --labels CSV "
            "gives the labels: drop --label-time, or drop --labels"
        )


def label_times(p: BuildParams) -> tuple[str | None, str | None]:
    """The time base of the file labels and of the window labels, ``--label-time`` resolved.

    ``beats``: the music as the tokens hold it (the file's or window's ids decoded: no
    tempo, MidiTok's 120 qpm, quantised to the tokenizer's positions). ``seconds``: with
    the file's own tempo map (a file's label from the parsed file itself; a window's from
    its decoded ids given the file's tempos over the bars it holds). ``auto`` is the
    behaviour before the option: files in seconds, windows in beats.

    Args:
        p: The build parameters (checked).

    Returns:
        ``(file, window)``: each ``beats`` or ``seconds``; ``file`` is None with a
        ``--labels`` CSV (the user's labels), ``window`` None unless ``--label-scope
        window``.
    """
    if p.labels is not None:
        return None, None
    file_time = "seconds" if p.label_time == "auto" else p.label_time
    if p.label_scope != "window":
        return file_time, None
    return file_time, ("beats" if p.label_time == "auto" else p.label_time)


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
    check_window_align(p.window_align)
    conditioning.check_bins(p.bins)
    conditioning.check_binning(p.binning)
    check_split_params(p.seed, p.train_split)
    check_encode_params(p.encoder, p.tracks, p.max_minutes, p.max_file_mb)
    if p.pitch_range is not None:
        check_pitch_params(p.pitch_policy, *p.pitch_range)
    elif p.pitch_policy not in PITCH_POLICIES:
        check_pitch_params(p.pitch_policy, 21, 108)
    check_workers(p.workers)

    check_label_params(p.jitter, p.jitter_seed, "--jitter", "--jitter-seed")
    if p.label_range is not None:
        if p.labels is None:
            raise VaremiError("--label-range gives the scale of a --labels CSV; there is none")
        check_label_range(p.label_range)
    check_engine(p.engine, p.ray_address)
    check_label_scope(p.label_scope, p.labels)
    if p.preset is not None and p.preset not in PRESETS:
        raise VaremiError(f"--preset must be one of {', '.join(PRESETS)}, got {p.preset!r}")
    check_label_time(p.label_time, p.labels)
    if p.format not in FORMATS:
        raise VaremiError(f"--format must be one of {', '.join(FORMATS)}, got {p.format!r}")
    if p.jitter and p.labels is not None:
        raise VaremiError(
            "--jitter applies to computed labels only; it cannot be used with --labels"
        )
    if p.labeller is not None:
        if p.labels is not None:
            raise VaremiError(
                "--labeller computes the labels and --labels gives them: use one of the two"
            )
        load_labeller(p.labeller)  # a missing or malformed file is refused before any work
    if midi_dir and not p.midi_dir.is_dir():
        raise MidiDirError(f"--midi-dir {p.midi_dir} is not a folder")
    if p.labels is not None and not p.labels.is_file():
        raise VaremiError(f"--labels {p.labels} is not a file")

    check_options(p.dedup, p.groups, p.group_by)
    augmentations(p)
    check_output_folder(p.out, p.overwrite)
    if p.overwrite and is_varemi_dataset(p.out):  # never replace an input with the output
        cache = (p.cache_dir or default_cache_dir()) if p.cache else None
        inputs = {
            "--midi-dir": p.midi_dir,
            "--labels": p.labels,
            "--labeller": p.labeller,
            "--cache-dir": cache,
        }
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
    file_time, window_time = label_times(p)
    if p.augment_tempo is not None and (window_time or file_time) == "beats":
        lines.append(
            f"--augment-tempo with labels in beats (--label-time {p.label_time}): with a "
            "tokenizer without tempo tokens a tempo copy has its source's tokens and so "
            "its labels; the copies only repeat rows"
        )
    if p.stride > p.window_size:
        lines.append(
            f"--stride {p.stride} is larger than --window-size {p.window_size}: "
            f"{p.stride - p.window_size} tokens between windows are never used"
        )
    return lines


def augmentations(p: BuildParams) -> tuple[str, ...]:
    """The names of the augmented copies (``t+2``, ``v-4``), in string order."""
    transpose = augment.parse_offsets(p.augment_transpose, "--augment-transpose", 24)
    velocity = augment.parse_offsets(p.augment_velocity, "--augment-velocity", 64)
    tempo = augment.parse_offsets(p.augment_tempo, "--augment-tempo", 50)
    return augment.names(transpose, velocity, tempo)


class ClusterError(VaremiError):
    """Ray is missing, cannot be reached, or a block failed on the cluster."""


def check_engine(engine: str, ray_address: str | None) -> None:
    """Refuse ``--engine`` / ``--ray-address`` values that cannot work, before any work.

    Args:
        engine: ``local`` or ``ray`` (``--engine``).
        ray_address: ``--ray-address`` (None: start a local Ray).

    Raises:
        ClusterError: an unknown engine, ``--ray-address`` without ``--engine ray``, or
            Ray Data not installed.
    """
    if engine not in ENGINES:
        raise ClusterError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        if ray_address is not None:
            raise ClusterError("--ray-address applies to --engine ray only")
        return
    if importlib.util.find_spec("ray") is None:
        raise ClusterError("--engine ray needs Ray Data: pip install 'varemi[ray]'")
