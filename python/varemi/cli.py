"""Command line: ``python -m varemi labels | build | verify``.

This module only parses arguments and calls :mod:`varemi.labels`,
:mod:`varemi.build` and :mod:`varemi.verify`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from varemi import __version__
from varemi.errors import VaremiError

DEMO_DIR = Path("varemi-demo")

_EPILOG = """\
examples:
  python -m varemi build                       # the built-in demo, offline
  python -m varemi labels --midi-dir midi/ --out labels.csv
  python -m varemi build --midi-dir midi/ --out data/ --labels labels.csv
  python -m varemi verify data/ --plot va.png
"""


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
    sub = ap.add_subparsers(dest="command", metavar="{labels,build,verify}")

    lab = sub.add_parser(
        "labels",
        allow_abbrev=False,  # `--window 8` must not silently mean `--window-size 8`
        help="write valence/arousal labels for a MIDI folder (heuristic)",
        description="Label every MIDI file of a folder with valence and arousal in [-1, 1] "
        "from musical features (mode, register, tempo, note density, velocity, articulation). "
        "A file's labels depend on that file alone.",
    )
    lab.add_argument("--midi-dir", type=Path, required=True, help="folder of .mid/.midi files")
    lab.add_argument("--out", type=Path, required=True, help="CSV to write")
    lab.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    lab.add_argument("--jitter", type=float, default=0.0, help="label noise sigma (default 0)")
    lab.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    lab.add_argument("--quiet", action="store_true", help="no progress bar")

    b = sub.add_parser(
        "build",
        allow_abbrev=False,
        help="build the dataset (with no --midi-dir: the built-in offline demo)",
        description="Tokenise a MIDI folder, cut windows, prefix conditioning tokens, split by "
        "file and save a Hugging Face DatasetDict (train, val). Without --midi-dir, builds the "
        f"built-in demo corpus into {DEMO_DIR}/ with the built-in tokenizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    b.add_argument("--midi-dir", type=Path, default=None, help="folder of MIDI files (recursive)")
    b.add_argument(
        "--out", type=Path, default=None, help="output folder (required with --midi-dir)"
    )
    b.add_argument(
        "--labels",
        type=Path,
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
    b.add_argument("--train-split", type=float, default=0.9, help="fraction of files in train")
    b.add_argument("--seed", type=int, default=42, help="split seed")
    b.add_argument(
        "--pitch-policy",
        choices=["clamp", "fold", "drop"],
        default="clamp",
        help="what happens to notes outside --pitch-range",
    )
    b.add_argument(
        "--label-scope",
        choices=["file", "window"],
        default="file",
        help="file: every window carries its file's labels; window: each window is "
        "labelled from the music its tokens hold (computed labels only)",
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
    b.add_argument("--max-minutes", type=float, default=60.0, help="reject longer files")
    b.add_argument("--max-file-mb", type=float, default=64.0, help="reject larger files")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--jitter", type=float, default=0.0, help="noise on computed labels")
    b.add_argument("--jitter-seed", type=int, default=0, help="seed of that noise")
    b.add_argument(
        "--cache-dir", type=Path, default=None, help="token cache folder (default: ~/.cache/varemi)"
    )
    b.add_argument("--no-cache", action="store_true", help="do not read or write the token cache")
    b.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it holds a previous varemi dataset"
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
    v.add_argument("out", type=Path, help="dataset folder written by build")
    v.add_argument("--num-examples", type=int, default=3, help="examples to decode")
    v.add_argument("--plot", type=Path, default=None, help="write a PNG heat map of the bins")
    return ap


def _labels(a: argparse.Namespace) -> int:
    from varemi.labels import label_folder, write_labels_csv

    if not a.midi_dir.is_dir():
        raise VaremiError(f"--midi-dir {a.midi_dir} is not a folder")
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
    if demo:
        a.midi_dir = DEMO_DIR / "midi"
        a.out = a.out or DEMO_DIR / "dataset"
        a.tokenizer = a.tokenizer or "builtin"
    elif a.out is None:
        raise VaremiError("--out is required with --midi-dir")
    params = BuildParams(
        midi_dir=a.midi_dir,
        out=a.out,
        labels=a.labels,
        label_range=tuple(a.label_range) if a.label_range else None,
        label_scope=a.label_scope,
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
        encoder=a.encoder,
        max_minutes=a.max_minutes,
        max_file_mb=a.max_file_mb,
        workers=a.workers,
        jitter=a.jitter,
        jitter_seed=a.jitter_seed,
        cache_dir=a.cache_dir,
        cache=not a.no_cache,
        overwrite=a.overwrite,
        quiet=a.quiet,
        profile=a.profile,
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
            "--tokenizer builtin  (or a local Maestro-REMI-bpe20k tokenizer.json)",
            file=sys.stderr,
        )
    return 0


def _verify(a: argparse.Namespace) -> int:
    from varemi.verify import verify

    report = verify(a.out, num_examples=a.num_examples, plot=a.plot)
    print("\n".join(report.lines))
    for line in report.failures:
        print(line)
    print("verify: OK" if report.ok else f"verify: FAILED ({len(report.failures)} problems)")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 verification failed, 2 bad parameters or input,
        130 interrupted.
    """
    parser = _parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help()
        return 0
    try:
        return {"labels": _labels, "build": _build, "verify": _verify}[a.command](a)
    except VaremiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was replaced; any previous output is intact", file=sys.stderr)
        return 130
