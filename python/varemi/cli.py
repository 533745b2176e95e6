"""Command line: ``python -m varemi labels | build | verify | finetune | generate | evaluate``.

The parsers come from the option declarations (:mod:`varemi._base.options`); each
command calls one entry point (:func:`varemi.pipeline.labelling.label_corpus` or
:func:`varemi.pipeline.labelling.fit_corpus`, :func:`varemi.pipeline.build.build`,
:func:`varemi.dataset.verify.verify`,
:mod:`varemi.training`). This is the one place where errors become ``error:`` lines
and exit statuses: a varemi error (a bad parameter or input) exits 2, a failing file
system 1, anything else (a bug) 70 with one line that asks for a bug report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

from varemi._base.errors import VaremiError
from varemi._base.options import (
    BUILD_OPTIONS,
    BUILTIN_TOKENIZER,
    EVALUATE_OPTIONS,
    FINETUNE_OPTIONS,
    GENERATE_OPTIONS,
    LABELS_OPTIONS,
    SAMPLING_OPTIONS,
    SERVE_OPTIONS,
    VERIFY_OPTIONS,
    add_options,
    path_arg,
    values,
)
from varemi._base.version import __version__
from varemi.dataset.info import is_demo_dataset
from varemi.dataset.verify import verify
from varemi.music.demo import write_demo_corpus
from varemi.pipeline.build import build
from varemi.pipeline.labelling import fit_corpus, label_corpus
from varemi.pipeline.params import BuildParams, check_params
from varemi.training.evaluation import evaluate, format_evaluation
from varemi.training.finetune import FinetuneParams, finetune
from varemi.training.generation import SamplingParams, generate
from varemi.training.run import resume_hint
from varemi.training.serve import serve

DEMO_DIR = Path("varemi-demo")
_EVAL_SAMPLING = tuple(
    dataclasses.replace(o, default=512) if o.dest == "max_new_tokens" else o
    for o in SAMPLING_OPTIONS
)
"""evaluate samples 512 new tokens by default."""


# Path options (by dest) as the user types them, for the empty-path refusal.
_PATH_OPTIONS = {
    "midi_dir": "--midi-dir",
    "out": "--out",
    "labels": "--labels",
    "labeller": "--labeller",
    "fit": "--fit",
    "cache_dir": "--cache-dir",
    "plot": "--plot",
    "data": "DATA",
    "run": "RUN",
}

_EPILOG = """\
examples:
  python -m varemi build                       # the built-in demo, offline
  python -m varemi labels --midi-dir midi/ --out labels.csv
  python -m varemi labels --fit human.csv --midi-dir rated/ --out labeller.json
  python -m varemi build --midi-dir midi/ --out data/ --labeller labeller.json
  python -m varemi build --midi-dir midi/ --out data/ --labels labels.csv
  python -m varemi verify data/ --plot va.png
  python -m varemi finetune data/ --model tiny --out run/ --max-steps 50
  python -m varemi generate run/ --valence 3 --arousal -2 --out midi_out/
  python -m varemi evaluate run/ --grid 3 --n-per-cell 8
  python -m varemi serve run/ --port 8000
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m varemi",
        description="Build valence/arousal-conditioned REMI+BPE datasets for fine-tuning "
        "Natooz/Maestro-REMI-bpe20k: label MIDI files, tokenise them, cut windows, prefix "
        "[VAL=v] [ARO=a] tokens, split by group and export a Hugging Face dataset.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    ap.add_argument("--version", action="version", version=f"varemi {__version__}")
    sub = ap.add_subparsers(
        dest="command", metavar="{labels,build,verify,finetune,generate,evaluate,serve}"
    )

    lab = sub.add_parser(
        "labels",
        allow_abbrev=False,  # `--window 8` must not silently mean `--window-size 8`
        help="write valence/arousal labels for a MIDI folder, or fit a labeller (--fit)",
        description="Label every MIDI file of a folder with valence and arousal in [-1, 1] "
        "from musical features (mode, register, tempo, note density, velocity, articulation), "
        "by varemi's heuristic or a labeller fitted to human labels (--labeller). A file's "
        "labels depend on that file alone. With --fit HUMAN_CSV, fit such a labeller to the "
        "human labels of the files of --midi-dir instead, and write it to --out (JSON).",
    )
    add_options(lab, LABELS_OPTIONS)
    lab.add_argument("--seed", dest="old_seed", type=int, default=None, help=argparse.SUPPRESS)

    b = sub.add_parser(
        "build",
        allow_abbrev=False,
        help="build the dataset (with no --midi-dir: the built-in offline demo)",
        description="Tokenise a MIDI folder, cut windows, prefix conditioning tokens, split by "
        "group (duplicates and --groups share a split) and save a Hugging Face DatasetDict "
        f"(train, val). Without --midi-dir, builds the built-in demo corpus into {DEMO_DIR}/ "
        "with the built-in tokenizer.",
    )
    add_options(b, BUILD_OPTIONS, grouped=True)

    v = sub.add_parser(
        "verify",
        allow_abbrev=False,
        help="print statistics and check every invariant of a dataset",
        description="Print statistics, decode a few examples and check every invariant. "
        "Exit 0 when all hold, 1 otherwise.",
    )
    v.add_argument("out", type=path_arg, help="dataset folder written by build")
    add_options(v, VERIFY_OPTIONS)
    _train_parsers(sub)
    return ap


def _train_parsers(sub) -> None:
    f = sub.add_parser(
        "finetune",
        allow_abbrev=False,
        help="fine-tune a model on a dataset (needs varemi[train])",
        description="Fine-tune a causal LM on a varemi dataset with transformers.Trainer: "
        "conditioning tokens added to its vocabulary (new rows at the mean embedding), loss on "
        "the music tokens only, length-grouped batches, validation every --eval-steps, early "
        "stopping, the best model kept in OUT. Several devices: accelerate launch -m varemi "
        "finetune ... or torchrun --nproc_per_node N -m varemi finetune ...",
    )
    f.add_argument("data", type=path_arg, help="dataset folder written by build")
    add_options(f, FINETUNE_OPTIONS)

    g = sub.add_parser(
        "generate",
        allow_abbrev=False,
        help="sample MIDI files of a mood from a fine-tuned run",
        description="Sample pieces from a finetune run, prompted with the dataset's prefix "
        "for the requested mood (bins, or labels in [-1, 1] mapped with the dataset's "
        "binning), and write them as MIDI files named by bins and index.",
    )
    g.add_argument("run", type=path_arg, help="run folder written by finetune")
    add_options(g, GENERATE_OPTIONS + SAMPLING_OPTIONS)

    e = sub.add_parser(
        "evaluate",
        allow_abbrev=False,
        help="measure how well a run follows requested moods",
        description="For each (valence, arousal) of a grid, generate pieces (--seeds times), "
        "label them with the dataset's labeller and report Spearman rho, quadrant accuracy "
        "and per-feature responses (95% bootstrap intervals, permutation p-values), bin "
        "error and the valid fraction, against a shuffled-prompt baseline and pieces "
        "sampled with no mood. Writes evaluate.json and evaluate.png.",
    )
    e.add_argument("run", type=path_arg, help="run folder written by finetune")
    add_options(e, EVALUATE_OPTIONS + _EVAL_SAMPLING)

    v = sub.add_parser(
        "serve",
        allow_abbrev=False,
        help="serve generation over HTTP (needs varemi[serve])",
        description="An HTTP service over a run: POST /generate (JSON mood, bars or tokens, "
        "seed, sampling) returns audio/midi; GET /health; GET / a page with a "
        "valence-arousal pad, playback and a piano roll. The model is loaded once; requests "
        "are queued, and one beyond --queue gets 503.",
    )
    v.add_argument("run", type=path_arg, help="run folder written by finetune")
    add_options(v, SERVE_OPTIONS)


def _labels(a: argparse.Namespace) -> int:

    if not a.midi_dir.is_dir():
        raise VaremiError(f"--midi-dir {a.midi_dir} is not a folder")
    if a.old_seed is not None:
        print(
            "warning: labels --seed is now --jitter-seed (the seed of the noise)", file=sys.stderr
        )
        a.jitter_seed = a.jitter_seed if a.jitter_seed is not None else a.old_seed
    o = values(a, LABELS_OPTIONS)
    if o["fit"] is not None:
        for dest, name in (("labeller", "--labeller"), ("jitter", "--jitter")):
            if o[dest]:
                raise VaremiError(f"{name} labels files; --fit fits a labeller: use one of them")
        fit_corpus(
            o["fit"],
            o["midi_dir"],
            o["out"],
            label_range=o["label_range"],
            groups=o["groups"],
            workers=o["workers"],
            quiet=o["quiet"],
        )
        return 0
    for dest, name in (("label_range", "--label-range"), ("groups", "--groups")):
        if o[dest] is not None:
            raise VaremiError(f"{name} applies to labels --fit (the human CSV) only")
    n, rejects = label_corpus(
        o["midi_dir"],
        o["out"],
        workers=o["workers"],
        jitter=o["jitter"],
        jitter_seed=o["jitter_seed"],
        labeller=o["labeller"],
        quiet=o["quiet"],
    )
    print(f"labels: {n} files labelled into {a.out}", file=sys.stderr)
    for name, reason, detail in rejects:
        print(f"  skipped {name}: {reason} {detail}", file=sys.stderr)
    return 0


def _build(a: argparse.Namespace) -> int:

    demo = a.midi_dir is None
    replace_demo = False
    if demo:
        a.midi_dir = DEMO_DIR / "midi"
        # The demo may replace its own previous output; a user's --out never silently.
        replace_demo = a.out is None and is_demo_dataset(DEMO_DIR / "dataset", a.midi_dir)
        a.out = a.out or DEMO_DIR / "dataset"
        a.tokenizer = a.tokenizer or BUILTIN_TOKENIZER
    elif a.out is None:
        raise VaremiError("--out is required with --midi-dir")
    given = values(a, BUILD_OPTIONS, "build")
    given["overwrite"] = given["overwrite"] or replace_demo
    params = BuildParams(**given)
    if demo:
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

    o = values(a, VERIFY_OPTIONS)
    report = verify(a.out, num_examples=o["num_examples"], plot=o["plot"])
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
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _finetune(a: argparse.Namespace) -> int:
    o = values(a, FINETUNE_OPTIONS, "finetune")
    o["data"] = a.data
    finetune(FinetuneParams(**o))
    return 0


def _sampling(a: argparse.Namespace, options=SAMPLING_OPTIONS) -> SamplingParams:
    return SamplingParams(**values(a, options))


def _generate(a: argparse.Namespace) -> int:
    o = values(a, GENERATE_OPTIONS)
    paths = generate(
        a.run, o["valence"], o["arousal"], o["out"], n=o["n"], sampling=_sampling(a),
        valence_label=o["valence_label"], arousal_label=o["arousal_label"], bars=o["bars"],
        batch_size=o["batch_size"], device=o["device"], allow_unfinished=o["allow_unfinished"],
    )  # fmt: skip
    for path in paths:
        print(path)
    print(f"generate: {len(paths)} of {o['n']} pieces written to {o['out']}", file=sys.stderr)
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    o = values(a, EVALUATE_OPTIONS)
    result = evaluate(
        a.run, grid=o["grid"], n_per_cell=o["n_per_cell"], sampling=_sampling(a, _EVAL_SAMPLING),
        out=o["out"], quiet=o["quiet"], device=o["device"],
        allow_unfinished=o["allow_unfinished"], seeds=o["seeds"],
        unconditioned=o["unconditioned"],
    )  # fmt: skip
    print(format_evaluation(result))
    return 0


def _serve(a: argparse.Namespace) -> int:
    serve(a.run, **values(a, SERVE_OPTIONS))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 verification failed (or the file system failed),
        2 bad parameters or input, 70 an internal error (a bug, reported in one line),
        130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
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
            "serve": _serve,
        }
        return commands[a.command](a)
    except VaremiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        if a.command == "finetune" and getattr(a, "out", None):
            print(resume_hint(a.out, a.data, how), file=sys.stderr)
        elif a.command == "serve":
            print(f"{how}: the service stopped", file=sys.stderr)
        else:
            print(f"{how}: nothing was replaced; any previous output is intact", file=sys.stderr)
        return code
    except OSError as e:  # the file system failed us (not a bad parameter)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug: one line, not a traceback (unless asked)
        if os.environ.get("VAREMI_TRACEBACK"):
            raise
        print(
            f"error: internal error ({type(e).__name__}: {_first_line(e)}); this is a bug in "
            f"varemi {__version__}: please report it with the command that caused it "
            "(VAREMI_TRACEBACK=1 shows the traceback)",
            file=sys.stderr,
        )
        return 70
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


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
