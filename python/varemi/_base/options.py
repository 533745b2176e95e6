"""Every command-line option of ``labels``, ``build`` and ``verify``, declared once.

Each :class:`Option` names its destination, default, allowed values, help and the
``--help`` group it belongs to. From these declarations come the command-line parsers
(:mod:`varemi.cli`), the fields and defaults of
:class:`varemi.pipeline.params.BuildParams` (a test holds them equal) and the
``params`` record of ``dataset_info.json`` (:func:`record`). The checks stay with the
modules that own the parameters (``--window-size`` in :mod:`varemi.core.params`,
``--pitch-policy`` in :mod:`varemi.core.pitch` ...); the allowed values they check
against are the tuples declared here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "Natooz/Maestro-REMI-bpe20k"
"""The model varemi prepares data for, and the default tokenizer and model id."""

BUILTIN_TOKENIZER = "builtin"
"""``--tokenizer builtin``: the small offline tokenizer packaged with varemi."""

# Allowed values, each declared once; the owning modules check against these.
BINNINGS = ("uniform", "quantile")
"""The values of ``--binning``."""
LABEL_SCOPES = ("file", "window")
"""The values of ``build --label-scope``."""
LABEL_TIMES = ("auto", "beats", "seconds")
"""The values of ``build --label-time``: on what time base computed labels are taken
(``auto``: the file's label in seconds, each window's, with ``--label-scope window``, in
beats, as before the option existed)."""
PITCH_POLICIES = ("clamp", "fold", "drop")
"""The values of ``--pitch-policy``."""
TRACK_MODES = ("merge", "first")
ENCODERS = ("auto", "native", "miditok")
DEDUP_MODES = ("group", "drop", "off")
GROUP_BY = ("parent",)
FORMATS = ("arrow", "parquet")
"""The values of ``--format``: ``save_to_disk``'s Arrow layout, or Parquet shards."""
ENGINES = ("local", "ray")
"""The values of ``--engine``."""
WINDOW_ALIGNS = ("token", "bar")
"""The values of ``--window-align``: windows start every stride tokens, or at bars."""

GROUPS = (
    "input",
    "labels",
    "tokens and windows",
    "split and duplicates",
    "augmentation",
    "output",
    "engine",
)
"""The ``--help`` sections of ``build``, in order: the stages an option belongs to."""


def path_arg(text: str) -> Path | str:
    """A path option; an empty string stays ``""`` so that it can be refused.

    ``Path("")`` is ``Path(".")``: ``--midi-dir ""`` would silently mean the current folder.

    Args:
        text: What the user typed.

    Returns:
        ``Path(text)``, or ``""``.
    """
    return Path(text) if text else ""


@dataclass(frozen=True)
class Option:
    """One option: where it goes, its default, what it accepts and how ``--help`` shows it.

    Attributes:
        dest: The parameter name (``window_size``); the option is ``--window-size``.
        default: The default value of the parameter.
        help: One line for ``--help``.
        group: Its ``--help`` section (one of :data:`GROUPS` for ``build``).
        type: Parses the command-line text (None: a string).
        choices: The allowed values, when they are a fixed list.
        nargs: How many values the option takes (None: one).
        metavar: How ``--help`` names the value(s).
        flag: A switch without a value (``--bos``).
        negated: The switch that turns a True default off (``--no-cache`` for ``cache``).
        record: Whether ``dataset_info.json`` keeps it under ``params``.
        cli: Whether the command line offers it (``midi_dir`` of the API is ``--midi-dir``;
            every option is offered today).
        shown_default: What ``--help`` says the default is, when it is not ``default``
            itself (``all cores`` for ``workers=None``).
        checked_by_owner: The allowed values are checked by the owning module, not by
            argparse (its message, ``--label-scope must be one of ...``, is the one shown).
        required: The command line refuses to run without it.
    """

    dest: str
    default: Any = None
    help: str = ""
    group: str = "output"
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    nargs: int | None = None
    metavar: str | tuple[str, ...] | None = None
    flag: bool = False
    negated: str | None = None
    record: bool = True
    cli: bool = True
    shown_default: str | None = None
    checked_by_owner: bool = False
    required: bool = False

    @property
    def name(self) -> str:
        """The command-line spelling: ``--window-size``."""
        return self.negated or "--" + self.dest.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser | Any) -> None:
        """Add this option to an argparse parser or argument group.

        The parser's default is always None (or False for a switch), so the caller can
        tell an option the user gave from one left out; :func:`values` fills in the
        declared default.

        Args:
            parser: An ``ArgumentParser`` or one of its argument groups.
        """
        if self.flag:
            parser.add_argument(self.name, dest=self.dest, action="store_true", help=self.help)
            return
        shown = self.shown_default
        if shown is None and self.default is not None:
            value = self.default
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        text = self.help + (f" (default: {shown})" if shown is not None else "")
        parser.add_argument(
            self.name,
            dest=self.dest,
            type=self.type,
            choices=None if self.checked_by_owner else self.choices,
            nargs=self.nargs,
            metavar=self.metavar
            or ("{" + ",".join(self.choices) + "}" if self.checked_by_owner else None),
            default=None,
            required=self.required,
            help=text,
        )

    def value(self, given: Any) -> Any:
        """The parameter's value from what the parser stored.

        Args:
            given: The parsed value (None or False when the user left the option out).

        Returns:
            The declared default when not given; a tuple for a multi-value option; the
            inverse of a negated switch.
        """
        if self.negated:
            return not given
        if self.flag:
            return bool(given)
        if given is None:
            return self.default
        return tuple(given) if self.nargs else given


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], grouped: bool = False
) -> None:
    """Add declared options to a parser, in :data:`GROUPS` sections when ``grouped``.

    Args:
        parser: The (sub)command's parser.
        options: The declarations.
        grouped: One ``--help`` section per group.
    """
    if not grouped:
        for o in options:
            if o.cli:
                o.add_to(parser)
        return
    for name in GROUPS:
        members = [o for o in options if o.cli and o.group == name]
        if members:
            section = parser.add_argument_group(name)
            for o in members:
                o.add_to(section)


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "control": {
        "build": {"label_scope": "window", "window_align": "bar", "bos": True, "key_to_c": True},
        "finetune": {"cond_dropout": 0.2},
    },
}
"""Named sets of option values (``--preset``), per command. ``control`` is what the
ablation of issue 19 found gives mood control (README, "Mood control"): window labels,
bar-aligned windows, BOS first, every piece in C (the only setting under which the
valence token was learned), and condition dropout for ``--guidance``. Without a
preset every default stays the seed's contract (file labels, token windows)."""


def preset_values(name: str | None, command: str) -> dict[str, Any]:
    """The option values a preset sets for a command (empty without a preset).

    Args:
        name: The preset (a key of :data:`PRESETS`) or None.
        command: ``build`` or ``finetune``.

    Returns:
        ``{dest: value}``; options given explicitly win over these.
    """
    return dict(PRESETS[name].get(command, {})) if name else {}


def values(
    namespace: argparse.Namespace, options: Sequence[Option], command: str | None = None
) -> dict[str, Any]:
    """The parameters of parsed arguments, defaults filled in from the declarations.

    With ``--preset`` (``command`` names whose preset values apply), an option the user
    left out takes the preset's value instead of its default.

    Args:
        namespace: What ``parse_args`` returned.
        options: The declarations the parser was made from.
        command: ``build`` or ``finetune`` for their presets; None ignores presets.

    Returns:
        ``{dest: value}`` for every declared option.
    """
    out = {o.dest: o.value(getattr(namespace, o.dest, None)) for o in options}
    if command is not None:
        for dest, value in preset_values(out.get("preset"), command).items():
            if getattr(namespace, dest, None) in (None, False):  # not given: the preset's
                out[dest] = value
    return out


def record(params: Any, options: Sequence[Option]) -> dict[str, Any]:
    """The ``params`` record of ``dataset_info.json``: JSON values, in declaration order.

    Args:
        params: A parameter object (e.g. ``BuildParams``) with an attribute per option.
        options: The declarations.

    Returns:
        ``{dest: value}`` for each option with ``record``; paths as strings, tuples as
        lists.
    """
    out: dict[str, Any] = {}
    for o in options:
        if not o.record:
            continue
        v = getattr(params, o.dest)
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[o.dest] = v
    return out


_OFFSETS_HELP = "write = before a negative value"

BUILD_OPTIONS: tuple[Option, ...] = (
    Option("midi_dir", None, "folder of MIDI files, searched recursively (none: the demo)",
           "input", type=path_arg),
    Option("out", None, "output folder (required with --midi-dir)", "output", type=path_arg),
    Option("labels", None, "CSV filename,valence,arousal; without it labels are computed and "
           "written to OUT/labels.csv", "labels", type=path_arg),
    Option("label_range", None, "scale of the --labels CSV (e.g. 1 9), mapped linearly to "
           "[-1, 1]; values outside it are rejected as bad_label", "labels", type=float,
           nargs=2, metavar=("LOW", "HIGH"), shown_default="-1 1"),
    Option("tokenizer", DEFAULT_MODEL, "hub id, local folder or tokenizer.json, or 'builtin' "
           "(the demo uses builtin)", "tokens and windows"),
    Option("window_size", 1024, "tokens per window", "tokens and windows", type=int),
    Option("stride", 512, "distance between window starts", "tokens and windows", type=int),
    Option("min_window_tokens", 256, "shortest window kept", "tokens and windows", type=int),
    Option("bins", 9, "bins per axis (odd)", "labels", type=int),
    Option("binning", "uniform", "uniform bins over [-1, 1], or equal-count bins over the "
           "corpus", "labels", choices=BINNINGS),
    Option("train_split", 0.9, "fraction of files meant for train", "split and duplicates",
           type=float),
    Option("seed", 42, "split seed (which files go to val)", "split and duplicates", type=int),
    Option("pitch_policy", "clamp", "what happens to notes outside --pitch-range",
           "tokens and windows", choices=PITCH_POLICIES),
    Option("pitch_range", None, "inclusive pitch range", "tokens and windows", type=int,
           nargs=2, metavar=("LOW", "HIGH"), shown_default="the tokenizer's pitches, 21 108"),
    Option("tracks", "merge", "merge all non-drum tracks, or keep only the first",
           "tokens and windows", choices=TRACK_MODES),
    Option("bos", False, "start every example with BOS: [BOS] [VAL] [ARO] window (as the model "
           "was pre-trained)", "tokens and windows", flag=True),
    Option("encoder", "auto", "token ids from the native REMI+BPE encoder (same ids, much "
           "faster) or MidiTok's; auto uses native when it covers the tokenizer exactly",
           "tokens and windows", choices=ENCODERS),
    Option("max_minutes", 60.0, "reject longer files", "input", type=float),
    Option("max_file_mb", 64.0, "reject larger files", "input", type=float),
    Option("workers", None, "worker processes", "engine", type=int, shown_default="all cores"),
    Option("jitter", 0.0, "noise (standard deviation) on computed labels", "labels",
           type=float),
    Option("jitter_seed", 0, "seed of that noise", "labels", type=int),
    Option("cache_dir", None, "token cache folder", "engine", type=path_arg,
           shown_default="~/.cache/varemi"),
    Option("cache", True, "do not read or write the token cache", "engine", flag=True,
           negated="--no-cache"),
    Option("overwrite", False, "replace OUT if it holds a previous varemi dataset", "output",
           flag=True, record=False),
    Option("quiet", False, "no progress bars or summary", "output", flag=True, record=False),
    Option("profile", False, "print time per stage and peak memory (also in "
           "dataset_info.json)", "output", flag=True, record=False),
    Option("dedup", "group", "put exact, transposed and near duplicates in one split (group), "
           "keep only the first copy by path (drop), or find none (off)",
           "split and duplicates", choices=DEDUP_MODES),
    Option("groups", None, "CSV filename,group: the files of one group share a split",
           "split and duplicates", type=path_arg),
    Option("group_by", None, "parent: the files of one folder share a split (the folder is "
           "the piece)", "split and duplicates", choices=GROUP_BY),
    Option("augment_transpose", None, "add transposed copies, e.g. --augment-transpose=-3..3 "
           f"or =-2,2 (semitones; {_OFFSETS_HELP})", "augmentation", metavar="OFFSETS"),
    Option("augment_velocity", None, "add copies with velocities moved, e.g. "
           "--augment-velocity=-4,4", "augmentation", metavar="OFFSETS"),
    Option("augment_tempo", None, "add copies with every tempo changed, e.g. "
           "--augment-tempo=-10,10 (percent, within -50..50; same tokens, labels from the new "
           "timing)", "augmentation", metavar="PERCENTS"),
    Option("engine", "local", "local worker processes, or Ray Data (needs pip install "
           "'varemi[ray]')", "engine", choices=ENGINES),
    Option("ray_address", None, "with --engine ray: 'auto' or a cluster address to connect "
           "to", "engine", shown_default="start a local Ray with --workers CPUs"),
    Option("format", "arrow", "arrow: the datasets.save_to_disk layout (load_from_disk); "
           "parquet: Parquet shards OUT/train/*.parquet, OUT/val/*.parquet (load_dataset, "
           "streaming too)", "output", choices=FORMATS),
    Option("label_scope", "file", "file: every window carries its file's labels; window: each "
           "window is labelled from its own decoded music (computed labels only)", "labels",
           choices=LABEL_SCOPES, checked_by_owner=True),
    Option("window_align", "token", "token: windows start every --stride tokens; bar: each "
           "window starts at the first bar at or after each stride point (format 3)",
           "tokens and windows", choices=WINDOW_ALIGNS),
    Option("labeller", None, "a labeller file from labels --fit: computed labels come from it "
           "instead of the heuristic", "labels", type=path_arg, metavar="JSON",
           shown_default="the heuristic"),
    Option("label_time", "auto", "beats: label the music as the tokens hold it (decoded, no "
           "tempo: 120 qpm), files and windows; seconds: with the file's own tempo map, files "
           "and windows; auto: files in seconds, windows (--label-scope window) in beats "
           "(computed labels only)", "labels", choices=LABEL_TIMES, checked_by_owner=True),
    Option("preset", None, "control: --label-scope window --window-align bar --bos "
           "--key-to-c, what the mood-control ablation found works (options you give win); "
           "none: the seed's settings", "input", choices=tuple(PRESETS), shown_default="none"),
    Option("key_to_c", False, "move every file to a tonic of C (major to C major, minor to C "
           "minor; its estimated key, non-drum notes) before labels and tokens, so mode shows "
           "as which pitches occur; the file's own key is lost", "tokens and windows",
           flag=True),
)  # fmt: skip
"""The options of ``build``, in the order of ``BuildParams`` and ``dataset_info.params``."""

LABELS_OPTIONS: tuple[Option, ...] = (
    Option("midi_dir", None, "folder of .mid/.midi files", "input", type=path_arg,
           required=True),
    Option("out", None, "CSV to write (with --fit: the labeller file, .json)", "output",
           type=path_arg, required=True),
    Option("workers", None, "worker processes", "engine", type=int, shown_default="all cores"),
    Option("jitter", 0.0, "label noise (standard deviation)", "labels", type=float),
    Option("jitter_seed", 0, "seed of the noise", "labels", type=int),
    Option("quiet", False, "no progress bar", "output", flag=True),
    Option("labeller", None, "a labeller file from labels --fit: label with it instead of the "
           "heuristic", "labels", type=path_arg, metavar="JSON", shown_default="the heuristic"),
    Option("fit", None, "fit a labeller to these human labels (CSV filename,valence,arousal "
           "or filename,quadrant) of the files of --midi-dir and write it to --out (JSON)",
           "labels", type=path_arg, metavar="HUMAN_CSV"),
    Option("label_range", None, "with --fit: the scale of the human CSV's values (e.g. 1 9), "
           "mapped linearly to [-1, 1]", "labels", type=float, nargs=2,
           metavar=("LOW", "HIGH"), shown_default="-1 1"),
    Option("groups", None, "with --fit: files of one group share a cross-validation fold; a "
           "CSV filename,group or the name of a column of the --fit CSV", "labels",
           metavar="CSV|COLUMN", shown_default="each file its own group"),
)  # fmt: skip
"""The options of ``labels`` (``--jitter-seed`` as in ``build``; ``--seed`` is its old name).

With ``--fit`` it fits a labeller (:mod:`varemi.labelling.fitted`) instead of labelling."""

VERIFY_OPTIONS: tuple[Option, ...] = (
    Option("num_examples", 3, "examples to decode", "output", type=int),
    Option("plot", None, "write a PNG heat map of the bins", "output", type=path_arg),
)  # fmt: skip
"""The options of ``verify`` (besides the dataset folder)."""


def defaults(options: Sequence[Option]) -> dict[str, Any]:
    """``{dest: default}`` of declared options.

    Args:
        options: The declarations.

    Returns:
        The defaults.
    """
    return {o.dest: o.default for o in options}


DEVICES = ("auto", "cpu", "cuda")
"""The values of ``--device`` (auto: CUDA when present)."""
REPORT_TO = ("none", "tensorboard", "wandb")
"""The values of ``finetune --report-to`` (transformers' integrations)."""

FINETUNE_OPTIONS: tuple[Option, ...] = (
    Option("data", None, "dataset folder written by build", "input", type=path_arg, cli=False),
    Option("out", None, "run folder to write", "output", type=path_arg, required=True),
    Option("model", DEFAULT_MODEL, "hub id, local model folder, or 'tiny' (a small random "
           "GPT-2, offline)", "input"),
    Option("epochs", None, "passes over train", "training", type=float, shown_default="3"),
    Option("max_steps", None, "optimizer steps (overrides --epochs)", "training", type=int),
    Option("lr", 5e-5, "peak learning rate, AdamW", "training", type=float),
    Option("batch_size", 8, "examples per micro-batch and device", "training", type=int),
    Option("grad_accum", 1, "micro-batches per optimizer step", "training", type=int),
    Option("warmup", 100, "linear warm-up steps (then linear decay to 0)", "training",
           type=int),
    Option("seed", 0, "data order, dropout and tiny-model seed", "training", type=int),
    Option("eval_steps", None, "validate (and checkpoint) every N steps", "training", type=int,
           shown_default="200"),
    Option("patience", None, "stop after N validations without improvement (0: never)",
           "training", type=int, shown_default="3"),
    Option("max_eval_examples", 1024, "val examples used per validation", "training",
           type=int),
    Option("balance_bins", False, "sample evenly over valence x arousal bins", "training",
           flag=True),
    Option("cond_dropout", 0.0, "drop the mood tokens of this fraction of training "
           "examples (they start with [BOS] alone), so that generate --guidance can contrast "
           "with and without a mood; MusicGen uses 0.2", "training", type=float),
    Option("gradient_checkpointing", False, "recompute activations in the backward pass "
           "(less memory, slower)", "training", flag=True),
    Option("report_to", "none", "also log to TensorBoard or Weights & Biases", "output",
           choices=REPORT_TO),
    Option("save_total_limit", 2, "checkpoints kept in OUT/checkpoints (the best is always "
           "kept)", "output", type=int),
    Option("resume", False, "continue the run in --out from its last checkpoint", "output",
           flag=True),
    Option("overwrite", False, "replace a previous run in --out", "output", flag=True),
    Option("device", "auto", "device (auto: CUDA when present)", "engine", choices=DEVICES),
    Option("quiet", False, "no progress bar or summary", "output", flag=True),
    Option("preset", None, "control: --cond-dropout 0.2, for generate --guidance 3 (options "
           "you give win); none: no preset", "training", choices=tuple(PRESETS),
           shown_default="none"),
)  # fmt: skip
"""The options of ``finetune``, in the order of ``FinetuneParams``."""

SAMPLING_OPTIONS: tuple[Option, ...] = (
    Option("max_new_tokens", 1024, "tokens to sample at most (capped by the model's "
           "positions)", "sampling", type=int),
    Option("temperature", 1.0, "softmax temperature (> 0, finite)", "sampling", type=float),
    Option("top_k", 50, "sample from the k likeliest, 0: all", "sampling", type=int),
    Option("top_p", 1.0, "nucleus sampling mass in (0, 1]", "sampling", type=float),
    Option("seed", 0, "sampling seed", "sampling", type=int),
    Option("guidance", 1.0, "classifier-free guidance G >= 0: the logits without the mood "
           "tokens plus G times the difference to the conditioned ones (1: plain sampling, "
           "0: unconditioned; > 1 needs a model trained with finetune --cond-dropout)",
           "sampling", type=float),
)  # fmt: skip
"""How ``generate``, ``evaluate`` and ``serve`` sample, in the order of ``SamplingParams``."""

GENERATE_OPTIONS: tuple[Option, ...] = (
    Option("valence", None, "valence bin, e.g. +3 (or give --valence-label)", "mood", type=int),
    Option("arousal", None, "arousal bin, e.g. -2 (or give --arousal-label)", "mood", type=int),
    Option("valence_label", None, "valence in [-1, 1], mapped to a bin with the dataset's "
           "own binning", "mood", type=float),
    Option("arousal_label", None, "arousal in [-1, 1], mapped likewise", "mood", type=float),
    Option("n", 4, "pieces to generate", "output", type=int),
    Option("out", None, "folder for the MIDI files", "output", type=path_arg, required=True),
    Option("bars", None, "stop each piece after N bars (within --max-new-tokens)", "sampling",
           type=int),
    Option("batch_size", None, "pieces sampled together", "sampling", type=int,
           shown_default="--n"),
    Option("device", "auto", "device (auto: CUDA when present)", "engine", choices=DEVICES),
    Option("allow_unfinished", False, "sample from a run whose training did not finish",
           "input", flag=True),
)  # fmt: skip
"""The options of ``generate`` (besides RUN and the sampling options)."""

EVALUATE_OPTIONS: tuple[Option, ...] = (
    Option("grid", 3, "requested bins per axis", "output", type=int),
    Option("n_per_cell", 8, "pieces per grid cell (per seed)", "output", type=int),
    Option("seeds", 1, "times the whole grid is sampled, each time with other seeds (seed k, "
           "cell c: --seed + k x cells + c)", "output", type=int),
    Option("unconditioned", None, "pieces sampled with no mood (guidance 0: the [BOS] prompt) "
           "as a baseline; 0: none", "output", type=int, shown_default="n-per-cell x grid"),
    Option("out", None, "folder for evaluate.json and evaluate.png", "output", type=path_arg,
           shown_default="RUN"),
    Option("device", "auto", "device (auto: CUDA when present)", "engine", choices=DEVICES),
    Option("allow_unfinished", False, "evaluate a run whose training did not finish", "input",
           flag=True),
    Option("quiet", False, "no progress bar", "output", flag=True),
)  # fmt: skip
"""The options of ``evaluate`` (besides RUN and the sampling options; 512 new tokens)."""

SERVE_OPTIONS: tuple[Option, ...] = (
    Option("host", "127.0.0.1", "address to listen on", "engine"),
    Option("port", 8000, "port to listen on (0: any free port)", "engine", type=int),
    Option("queue", 8, "requests waiting at most; one more gets 503", "engine", type=int),
    Option("max_bars", 32, "largest bars a request may ask for", "sampling", type=int),
    Option("device", "auto", "device (auto: CUDA when present)", "engine", choices=DEVICES),
    Option("allow_unfinished", False, "serve a run whose training did not finish", "input",
           flag=True),
)  # fmt: skip
"""The options of ``serve`` (besides RUN)."""
