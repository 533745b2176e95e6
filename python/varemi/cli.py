"""Command line: ``python -m varemi labels | build | verify | finetune | generate | evaluate``.

This module only parses arguments and calls :mod:`varemi.labels`,
:mod:`varemi.build`, :mod:`varemi.verify` and :mod:`varemi.train`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from varemi import __version__
from varemi.errors import VaremiError

DEMO_DIR = Path("varemi-demo")


def _path(text: str) -> Path | str:
    """A path option; an empty string stays ``""`` so :func:`main` can refuse it.

    ``Path("")`` is ``Path(".")``: ``--midi-dir ""`` would silently mean the current folder.
    """
    return Path(text) if text else ""


# Path options (by dest) as the user types them, for the empty-path refusal.
_PATH_OPTIONS = {
    "midi_dir": "--midi-dir",
    "out": "--out",
    "labels": "--labels",
    "cache_dir": "--cache-dir",
    "plot": "--plot",
}

_EPILOG = """\
examples:
  python -m varemi build                       # the built-in demo, offline
  python -m varemi labels --midi-dir midi/ --out labels.csv
  python -m varemi build --midi-dir midi/ --out data/ --labels labels.csv
  python -m varemi verify data/ --plot va.png
  python -m varemi finetune data/ --model tiny --out run/ --max-steps 50
  python -m varemi generate run/ --valence 3 --arousal -2 --out midi_out/
  python -m varemi evaluate run/ --grid 3 --n-per-cell 8
"""


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` only where it says something the help text does not.

    No default for flags (always off), for ``None`` (the help text says what happens)
    or when the help text already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m varemi",
        description="Build valence/arousal-conditioned REMI+BPE datasets for fine-tuning "
        "Natooz/Maestro-REMI-bpe20k: label MIDI files, tokenise them, cut windows, prefix "
        "[VAL=v] [ARO=a] tokens, split by file and export a Hugging Face dataset.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    ap.add_argument("--version", action="version", version=f"varemi {__version__}")
    sub = ap.add_subparsers(
        dest="command", metavar="{labels,build,verify,finetune,generate,evaluate}"
    )

    lab = sub.add_parser(
        "labels",
        allow_abbrev=False,  # `--window 8` must not silently mean `--window-size 8`
        help="write valence/arousal labels for a MIDI folder (heuristic)",
        description="Label every MIDI file of a folder with valence and arousal in [-1, 1] "
        "from musical features (mode, register, tempo, note density, velocity, articulation). "
        "A file's labels depend on that file alone.",
    )
    lab.add_argument("--midi-dir", type=_path, required=True, help="folder of .mid/.midi files")
    lab.add_argument("--out", type=_path, required=True, help="CSV to write")
    lab.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    lab.add_argument("--jitter", type=float, default=0.0, help="label noise sigma (default: 0)")
    lab.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    lab.add_argument("--quiet", action="store_true", help="no progress bar")

    b = sub.add_parser(
        "build",
        allow_abbrev=False,
        help="build the dataset (with no --midi-dir: the built-in offline demo)",
        description="Tokenise a MIDI folder, cut windows, prefix conditioning tokens, split by "
        "file and save a Hugging Face DatasetDict (train, val). Without --midi-dir, builds the "
        f"built-in demo corpus into {DEMO_DIR}/ with the built-in tokenizer.",
        formatter_class=_DefaultsHelpFormatter,
    )
    b.add_argument("--midi-dir", type=_path, default=None, help="folder of MIDI files (recursive)")
    b.add_argument(
        "--out", type=_path, default=None, help="output folder (required with --midi-dir)"
    )
    b.add_argument(
        "--labels",
        type=_path,
        default=None,
        help="CSV filename,valence,arousal; without it labels are computed "
        "and written to OUT/labels.csv",
    )
    b.add_argument(
        "--tokenizer",
        default=None,
        help="hub id, local folder or tokenizer.json, or 'builtin' "
        "(default: Natooz/Maestro-REMI-bpe20k; the demo uses builtin)",
    )
    b.add_argument("--window-size", type=int, default=1024, help="tokens per window")
    b.add_argument("--stride", type=int, default=512, help="distance between window starts")
    b.add_argument("--min-window-tokens", type=int, default=256, help="shortest window kept")
    b.add_argument("--bins", type=int, default=9, help="bins per axis (odd)")
    b.add_argument(
        "--binning",
        choices=["uniform", "quantile"],
        default="uniform",
        help="uniform bins over [-1, 1], or equal-count bins over the corpus",
    )
    b.add_argument(
        "--label-scope",
        default="file",
        metavar="{file,window}",
        help="file: every window carries its file's labels; window: each window is "
        "labelled from its own decoded music (computed labels only, not with --labels)",
    )
    b.add_argument("--train-split", type=float, default=0.9, help="fraction of files in train")
    b.add_argument("--seed", type=int, default=42, help="split seed")
    b.add_argument(
        "--pitch-policy",
        choices=["clamp", "fold", "drop"],
        default="clamp",
        help="what happens to notes outside --pitch-range",
    )
    b.add_argument(
        "--label-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="scale of the --labels CSV (e.g. 1 9), mapped linearly to [-1, 1]; "
        "values outside it are rejected as bad_label (default: -1 1)",
    )
    b.add_argument(
        "--pitch-range",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="inclusive pitch range (default: the tokenizer's pitches, 21 108)",
    )
    b.add_argument(
        "--tracks",
        choices=["merge", "first"],
        default="merge",
        help="merge all non-drum tracks, or keep only the first",
    )
    b.add_argument(
        "--encoder",
        choices=["auto", "native", "miditok"],
        default="auto",
        help="token ids from the native REMI+BPE encoder (same ids, much faster) or "
        "MidiTok's; auto uses native when it covers the tokenizer exactly",
    )
    b.add_argument(
        "--bos",
        action="store_true",
        help="start every example with BOS: [BOS] [VAL] [ARO] window (as the model was "
        "pre-trained)",
    )
    b.add_argument("--max-minutes", type=float, default=60.0, help="reject longer files")
    b.add_argument("--max-file-mb", type=float, default=64.0, help="reject larger files")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--jitter", type=float, default=0.0, help="noise on computed labels")
    b.add_argument("--jitter-seed", type=int, default=0, help="seed of that noise")
    b.add_argument(
        "--cache-dir",
        type=_path,
        default=None,
        help="token cache folder (default: ~/.cache/varemi)",
    )
    b.add_argument("--no-cache", action="store_true", help="do not read or write the token cache")
    b.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it holds a previous varemi dataset"
    )
    b.add_argument(
        "--dedup",
        choices=["group", "drop", "off"],
        default="group",
        help="put exact, transposed and near duplicates in one split "
        "(group), keep only the first copy by path (drop), or split by file alone (off)",
    )
    b.add_argument(
        "--groups",
        type=Path,
        default=None,
        help="CSV filename,group: the files of one group share a split",
    )
    b.add_argument(
        "--group-by",
        choices=["parent"],
        default=None,
        help="parent: the files of one folder share a split (the folder is the piece)",
    )
    b.add_argument(
        "--augment-transpose",
        default=None,
        metavar="OFFSETS",
        help="add transposed copies, e.g. --augment-transpose=-3..3 or =-2,2 (semitones; "
        "write = before a negative value)",
    )
    b.add_argument(
        "--augment-velocity",
        default=None,
        metavar="OFFSETS",
        help="add copies with velocities moved, e.g. --augment-velocity=-4,4",
    )
    b.add_argument(
        "--augment-tempo",
        default=None,
        metavar="PERCENTS",
        help="add copies with every tempo changed, e.g. --augment-tempo=-10,10 (percent, "
        "within -50..50; same tokens, labels from the new timing)",
    )
    b.add_argument(
        "--format",
        choices=["arrow", "parquet"],
        default="arrow",
        help="arrow: the datasets.save_to_disk layout (load_from_disk); parquet: Parquet "
        "shards OUT/train/*.parquet, OUT/val/*.parquet (load_dataset, streaming too)",
    )
    b.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local worker processes, or Ray Data (needs pip install 'varemi[ray]')",
    )
    b.add_argument(
        "--ray-address",
        default=None,
        help="with --engine ray: 'auto' or a cluster address to connect to "
        "(default: start a local Ray with --workers CPUs)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    b.add_argument(
        "--profile",
        action="store_true",
        help="print time per stage and peak memory (also in dataset_info.json)",
    )

    v = sub.add_parser(
        "verify",
        allow_abbrev=False,
        help="print statistics and check every invariant of a dataset",
        description="Print statistics, decode a few examples and check every invariant. "
        "Exit 0 when all hold, 1 otherwise.",
    )
    v.add_argument("out", type=_path, help="dataset folder written by build")
    v.add_argument("--num-examples", type=int, default=3, help="examples to decode (default: 3)")
    v.add_argument("--plot", type=_path, default=None, help="write a PNG heat map of the bins")
    _train_parsers(sub)
    return ap


def _sampling_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help="tokens to sample (default: %(default)s)",
    )
    p.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature (default: %(default)s)"
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=50,
        help="sample from the k likeliest, 0: all (default: %(default)s)",
    )
    p.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def _train_parsers(sub) -> None:
    f = sub.add_parser(
        "finetune",
        allow_abbrev=False,
        help="fine-tune a model on a dataset (needs varemi[train])",
        description="Fine-tune a causal LM on a varemi dataset: conditioning tokens added to "
        "its vocabulary (new rows at the mean embedding), loss on the music tokens only, "
        "length-grouped batches, validation every --eval-steps, early stopping, the best "
        "model kept in OUT.",
    )
    f.add_argument("data", type=Path, help="dataset folder written by build")
    f.add_argument(
        "--model",
        default="Natooz/Maestro-REMI-bpe20k",
        help="hub id, local model folder, or 'tiny' (a small random GPT-2, offline); "
        "default: %(default)s",
    )
    f.add_argument("--out", type=Path, required=True, help="run folder to write")
    f.add_argument("--epochs", type=float, default=None, help="passes over train (default: 3)")
    f.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)"
    )
    f.add_argument(
        "--lr", type=float, default=5e-5, help="peak learning rate, AdamW (default: %(default)s)"
    )
    f.add_argument(
        "--batch-size", type=int, default=8, help="examples per micro-batch (default: %(default)s)"
    )
    f.add_argument(
        "--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default: 1)"
    )
    f.add_argument(
        "--warmup", type=int, default=100, help="linear warm-up steps (default: %(default)s)"
    )
    f.add_argument("--seed", type=int, default=0, help="data order and dropout seed (default: 0)")
    f.add_argument(
        "--eval-steps", type=int, default=None, help="validate every N steps (default: 200)"
    )
    f.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after N validations without improvement (default: 3; 0: never)",
    )
    f.add_argument(
        "--max-eval-examples",
        type=int,
        default=1024,
        help="val examples used per validation (default: %(default)s)",
    )
    f.add_argument(
        "--balance-bins", action="store_true", help="sample evenly over valence x arousal bins"
    )
    f.add_argument("--resume", action="store_true", help="continue the run in --out")
    f.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    f.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="device (default: auto: CUDA when present)",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    g = sub.add_parser(
        "generate",
        allow_abbrev=False,
        help="sample MIDI files of a mood from a fine-tuned run",
        description="Sample pieces from a finetune run, prompted with the dataset's prefix "
        "for the requested bins, and write them as MIDI files named by bins and index.",
    )
    g.add_argument("run", type=Path, help="run folder written by finetune")
    g.add_argument("--valence", type=int, required=True, help="valence bin, e.g. +3")
    g.add_argument("--arousal", type=int, required=True, help="arousal bin, e.g. -2")
    g.add_argument("--n", type=int, default=4, help="pieces to generate (default: %(default)s)")
    g.add_argument("--out", type=Path, required=True, help="folder for the MIDI files")
    _sampling_args(g, 1024)

    e = sub.add_parser(
        "evaluate",
        allow_abbrev=False,
        help="measure how well a run follows requested moods",
        description="For each (valence, arousal) of a grid, generate pieces, label them with "
        "varemi's labeller and report Spearman rho, quadrant accuracy, bin error and the "
        "valid fraction, against a shuffled-prompt baseline. Writes evaluate.json and "
        "evaluate.png.",
    )
    e.add_argument("run", type=Path, help="run folder written by finetune")
    e.add_argument(
        "--grid", type=int, default=3, help="requested bins per axis (default: %(default)s)"
    )
    e.add_argument(
        "--n-per-cell", type=int, default=8, help="pieces per grid cell (default: %(default)s)"
    )
    e.add_argument("--out", type=Path, default=None, help="folder for the report (default: RUN)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    _sampling_args(e, 512)


def _labels(a: argparse.Namespace) -> int:
    from varemi.labels import label_folder, write_labels_csv
    from varemi.paths import check_labels_out

    if not a.midi_dir.is_dir():
        raise VaremiError(f"--midi-dir {a.midi_dir} is not a folder")
    check_labels_out(a.out)  # before any work: never a folder, a MIDI or someone's file
    df, rejects = label_folder(
        a.midi_dir, workers=a.workers, jitter=a.jitter, seed=a.seed, progress=not a.quiet
    )
    write_labels_csv(df, a.out)
    print(f"labels: {len(df)} files labelled into {a.out}", file=sys.stderr)
    for name, reason, detail in rejects:
        print(f"  skipped {name}: {reason} {detail}", file=sys.stderr)
    return 0


def _build(a: argparse.Namespace) -> int:
    from varemi.build import BuildParams, build, check_params

    demo = a.midi_dir is None
    replace_demo = False
    if demo:
        from varemi.demo import is_demo_dataset

        a.midi_dir = DEMO_DIR / "midi"
        # The demo may replace its own previous output; a user's --out never silently.
        replace_demo = a.out is None and is_demo_dataset(DEMO_DIR / "dataset", a.midi_dir)
        a.out = a.out or DEMO_DIR / "dataset"
        a.tokenizer = a.tokenizer or "builtin"
    elif a.out is None:
        raise VaremiError("--out is required with --midi-dir")
    params = BuildParams(
        midi_dir=a.midi_dir,
        out=a.out,
        labels=a.labels,
        label_range=tuple(a.label_range) if a.label_range else None,
        tokenizer=a.tokenizer or "Natooz/Maestro-REMI-bpe20k",
        window_size=a.window_size,
        stride=a.stride,
        min_window_tokens=a.min_window_tokens,
        bins=a.bins,
        binning=a.binning,
        train_split=a.train_split,
        seed=a.seed,
        pitch_policy=a.pitch_policy,
        pitch_range=tuple(a.pitch_range) if a.pitch_range else None,
        tracks=a.tracks,
        bos=a.bos,
        encoder=a.encoder,
        max_minutes=a.max_minutes,
        max_file_mb=a.max_file_mb,
        workers=a.workers,
        jitter=a.jitter,
        jitter_seed=a.jitter_seed,
        cache_dir=a.cache_dir,
        cache=not a.no_cache,
        overwrite=a.overwrite or replace_demo,
        quiet=a.quiet,
        profile=a.profile,
        dedup=a.dedup,
        groups=a.groups,
        group_by=a.group_by,
        augment_transpose=a.augment_transpose,
        augment_velocity=a.augment_velocity,
        augment_tempo=a.augment_tempo,
        engine=a.engine,
        ray_address=a.ray_address,
        format=a.format,
        label_scope=a.label_scope,
    )
    if demo:
        from varemi.demo import write_demo_corpus

        check_params(params, midi_dir=False)  # refuse bad options before writing anything
        write_demo_corpus(a.midi_dir)
        print(f"demo: wrote the built-in corpus to {a.midi_dir}/", file=sys.stderr)
    build(params)
    if demo and not a.quiet:
        print(
            f"\nnext: python -m varemi verify {a.out}\n"
            "your own music: python -m varemi build --midi-dir YOUR_MIDI --out YOUR_DATASET "
            "--tokenizer MODEL_TOKENIZER\n"
            "  MODEL_TOKENIZER: a local copy of Natooz/Maestro-REMI-bpe20k (its folder or its "
            "tokenizer.json; the default, the hub id, needs internet). Fine-tuning needs the "
            "model's own tokenizer: the builtin one of this demo is for trying things out, and "
            "no pre-trained model shares its vocabulary.",
            file=sys.stderr,
        )
    return 0


def _verify(a: argparse.Namespace) -> int:
    from varemi.verify import verify

    report = verify(a.out, num_examples=a.num_examples, plot=a.plot)
    try:
        print("\n".join(report.lines))
        for line in report.failures:
            print(line)
        print("verify: OK" if report.ok else f"verify: FAILED ({len(report.failures)} problems)")
        sys.stdout.flush()
    except BrokenPipeError:  # `verify DATA | head`: the reader has seen enough
        _silence_stdout()
    return 0 if report.ok else 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit cannot raise BrokenPipeError again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _finetune(a: argparse.Namespace) -> int:
    from varemi.train import FinetuneParams, finetune

    names = [k for k in vars(a) if k != "command"]
    finetune(FinetuneParams(**{k: getattr(a, k) for k in names}))
    return 0


def _sampling(a: argparse.Namespace):
    from varemi.train import SamplingParams

    return SamplingParams(a.max_new_tokens, a.temperature, a.top_k, a.top_p, a.seed)


def _generate(a: argparse.Namespace) -> int:
    from varemi.train import generate

    paths = generate(a.run, a.valence, a.arousal, a.out, n=a.n, sampling=_sampling(a))
    for path in paths:
        print(path)
    print(f"generate: {len(paths)} of {a.n} pieces written to {a.out}", file=sys.stderr)
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from varemi.train import evaluate, format_evaluation

    result = evaluate(
        a.run, grid=a.grid, n_per_cell=a.n_per_cell, sampling=_sampling(a), out=a.out,
        quiet=a.quiet,
    )  # fmt: skip
    print(format_evaluation(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 verification failed (or the file system failed),
        2 bad parameters or input, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    parser = _parser()
    a = parser.parse_args(argv)
    if a.command is None:  # a usage error, like any other missing argument
        parser.print_help(sys.stderr)
        return 2
    previous = _terminate_like_ctrl_c()
    try:
        for dest, option in _PATH_OPTIONS.items():
            if getattr(a, dest, None) == "":
                name = "the dataset folder" if (a.command, dest) == ("verify", "out") else option
                raise VaremiError(f"{name} is empty; give a path (. for the current folder)")
        commands = {
            "labels": _labels,
            "build": _build,
            "verify": _verify,
            "finetune": _finetune,
            "generate": _generate,
            "evaluate": _evaluate,
        }
        return commands[a.command](a)
    except VaremiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated: nothing was replaced; any previous output is intact", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if a.command == "finetune":
            print(
                f"interrupted: {a.out} keeps the last checkpoint; "
                f"python -m varemi finetune {a.data} --out {a.out} --resume continues it",
                file=sys.stderr,
            )
            return 130
        print("interrupted: nothing was replaced; any previous output is intact", file=sys.stderr)
        return 130
    except OSError as e:  # the file system failed us (not a bad parameter)
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, Slurm): unwinds like Ctrl-C, so the same cleanup runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _terminate_like_ctrl_c():
    """Turn SIGTERM into :class:`Terminated` in the main thread; the previous handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
