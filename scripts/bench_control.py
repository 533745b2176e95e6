"""Controllability benchmark and ablation: which data and training choices give mood control?

One corpus, one model size, one budget; only the arm's choice changes:

1. build a varemi dataset (``--bos``, heuristic labels, quantile bins) of a real corpus
   (default ``../shared/corpora/pop909``) with the built-in tokenizer, once per arm's
   data settings (cached in ``--work``);
2. pre-train a small GPT-2 from scratch on the default dataset's windows *without* the
   conditioning tokens (``[BOS] + window``), standing in for Maestro-REMI-bpe20k, which
   cannot be downloaded here; made once and reused by every arm (cached by its settings);
3. fine-tune it with ``varemi.finetune`` on each arm's dataset;
4. ``varemi.evaluate`` each arm (at each of its guidance scales) and print a table:
   Spearman rho of requested against measured arousal and valence with 95% intervals,
   the shuffled-prompt baseline, quadrant accuracy, and the conditioning gain.

Arms (``--arms``, comma-separated; default all):

- ``defaults``: what ``build`` and ``finetune`` do by default (``--label-scope file``,
  ``--window-align token``);
- ``bar-windows``: ``--window-align bar``;
- ``beat-labels``: ``--label-time beats`` (file labels on the music as the tokens hold it);
- ``window-labels``: ``--label-scope window``;
- ``window-labels-bar``: ``--label-scope window --window-align bar``;
- ``cond-dropout``: ``--dropout-base``'s data with ``finetune --cond-dropout 0.2``,
  evaluated at ``--guidance`` 1, 1.5 and 3;
- ``key-to-c``: the cond-dropout arm on a copy of the corpus with every file transposed
  so that its estimated key's tonic is C (Krumhansl-Kessler profiles over its
  duration-weighted pitch classes), so that major and minor differ by which pitch
  tokens occur (E or E flat, A or A flat, B or B flat) rather than by their relation to
  a tonic the model would first have to infer (``varemi.music.key.to_c``, what
  ``build --key-to-c`` does; with this arm's data and dropout: ``--preset control``).

Presets set the size; every knob can be overridden::

    python scripts/bench_control.py --preset quick      # a smoke run: minutes on 2 cores
    python scripts/bench_control.py --preset ablation   # every arm: about 30 min on 2 cores
    python scripts/bench_control.py --preset cpu --arms cond-dropout,key-to-c  # goal run
    bash scripts/bench_control_gpu.sh OUT               # --preset gpu under a timeout

``--stage train`` builds and fine-tunes only, ``--stage evaluate`` evaluates the runs
already in ``--work``. The labeller that measures the generations is the one that
labelled the training data, so this measures whether the model learned to reproduce what
the labeller sees, not whether listeners would agree.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

PRESETS = {
    "quick": dict(
        files=120, window=128, layers=2, heads=2, d_model=64, pretrain_steps=150,
        finetune_steps=100, grid=3, n_per_cell=6, max_new_tokens=128, batch_size=16,
        seeds=1,
    ),
    "ablation": dict(
        files=300, window=128, layers=3, heads=4, d_model=128, pretrain_steps=600,
        finetune_steps=500, grid=3, n_per_cell=12, max_new_tokens=128, batch_size=16,
        seeds=1,
    ),
    "cpu": dict(
        files=909, window=128, layers=4, heads=4, d_model=128, pretrain_steps=1500,
        finetune_steps=2000, grid=3, n_per_cell=16, max_new_tokens=128, batch_size=16,
        seeds=2,
    ),
    "gpu": dict(
        files=909, window=384, layers=12, heads=8, d_model=512, pretrain_steps=4000,
        finetune_steps=2000, grid=5, n_per_cell=16, max_new_tokens=384, batch_size=32,
        seeds=2,
    ),
}  # fmt: skip

ARMS = {
    "defaults": {},
    "bar-windows": {"window_align": "bar"},
    "beat-labels": {"label_time": "beats"},
    "window-labels": {"label_scope": "window"},
    "window-labels-bar": {"label_scope": "window", "window_align": "bar"},
    "cond-dropout": {"cond_dropout": 0.2, "guidance": (1.0, 1.5, 3.0)},
    "key-to-c": {"cond_dropout": 0.2, "guidance": (1.0, 3.0), "corpus": "key-to-c"},
}
"""Each arm's difference from the defaults (build options, ``cond_dropout``, ``guidance``)."""

FINETUNE_KEYS = ("cond_dropout", "guidance", "corpus")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "pop909"


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default all)")
    bases = [arm for arm in ARMS if arm != "cond-dropout"]
    ap.add_argument(
        "--dropout-base", default="window-labels-bar", choices=bases,
        help="the data the cond-dropout arm is trained on",
    )  # fmt: skip
    ap.add_argument("--stage", choices=["all", "train", "evaluate"], default="all")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=Path("bench-control"), help="scratch folder")
    for key, value in PRESETS["quick"].items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    ap.add_argument("--bins", type=int, default=5)
    ap.add_argument("--binning", default="quantile", choices=["uniform", "quantile"])
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = ap.parse_args(argv)
    for key, value in PRESETS[a.preset].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = [x for x in a.arms if x not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    return a


def _subset(corpus: Path, n: int, folder: Path) -> Path:
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))[:n]
    if not files:
        sys.exit(f"error: no MIDI files under {corpus}")
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def _key_to_c(midi: Path, folder: Path) -> Path:
    """A copy of the MIDI subset with each file transposed so its key's tonic is C.

    The transposition of ``build --key-to-c`` (:func:`varemi.music.key.to_c`), written out
    as files so that the arm's corpus is a folder of its own.
    """
    import symusic

    from varemi.music.key import to_c

    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(midi.iterdir()):
        out = folder / f.name
        if out.exists():
            continue
        score = symusic.Score(str(f))
        to_c(score)
        score.dump_midi(str(out))
    return folder


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _data_settings(a, arm: str) -> dict:
    """The build options of an arm (the cond-dropout arms take their base arm's)."""
    spec = ARMS[a.dropout_base if "cond_dropout" in ARMS[arm] else arm]
    return {k: v for k, v in spec.items() if k not in FINETUNE_KEYS}


def _corpus_of(arm: str) -> dict:
    """The corpus variant of an arm, as part of its dataset's cache key (not an option)."""
    return {"corpus": ARMS[arm]["corpus"]} if "corpus" in ARMS[arm] else {}


def _build(a, midi: Path, settings: dict) -> Path:
    """The dataset of these build settings, built once (cached by them in ``--work``)."""
    from varemi.pipeline.build import build
    from varemi.pipeline.params import BuildParams

    common = dict(
        window_size=a.window, stride=a.window // 2, min_window_tokens=a.window // 4,
        bins=a.bins, binning=a.binning, bos=True,
    )  # fmt: skip
    key = _key([str(a.corpus), a.files, common, settings])
    data = a.work / f"data-{key}"
    if (data / "dataset_info.json").is_file():
        return data
    print(f"  build {data.name}: {settings or 'defaults'}", file=sys.stderr)
    options = {k: v for k, v in settings.items() if k != "corpus"}
    build(BuildParams(midi_dir=midi, out=data, tokenizer="builtin", overwrite=True, quiet=True,
                      cache=False, **common, **options))  # fmt: skip
    return data


def _pretrain(a, data: Path, torch, transformers) -> tuple[Path, dict]:
    """A GPT-2 from scratch on [BOS] + window (conditioning tokens removed), cached."""
    import datasets

    from varemi.music.tokenizer import builtin_tokenizer_path
    from varemi.training import data as tdata

    settings = {k: getattr(a, k) for k in ("files", "window", "layers", "heads", "d_model",
                                           "pretrain_steps", "batch_size", "pretrain_lr",
                                           "seed")}  # fmt: skip
    settings["corpus"] = str(a.corpus)
    out = a.work / f"pretrained-{_key(settings)}"
    if (out / "pretrain.json").is_file():
        return out, json.loads((out / "pretrain.json").read_text())
    print(f"  pre-train {a.layers}x{a.d_model} GPT-2, {a.pretrain_steps} steps", file=sys.stderr)
    info = json.loads((data / "dataset_info.json").read_text())
    split = tdata.split_of(datasets.load_from_disk(str(data))["train"])
    keep = np.ones(len(split.values), dtype=bool)  # drop VAL, ARO (positions 1, 2)
    keep[split.offsets[:-1] + 1] = False
    keep[split.offsets[:-1] + 2] = False
    plain = tdata.Split(
        split.values[keep], split.offsets - 2 * np.arange(len(split.offsets)), split.vbin,
        split.abin,
    )  # fmt: skip
    special = info["special_tokens"]
    config = transformers.GPT2Config(
        vocab_size=info["tokenizer"]["base_vocab_size"], n_positions=max(a.window + 3, 64),
        n_layer=a.layers, n_head=a.heads, n_embd=a.d_model, bos_token_id=special["BOS"],
        eos_token_id=special["EOS"], pad_token_id=special["PAD"],
    )  # fmt: skip
    torch.manual_seed(a.seed)
    model = transformers.GPT2LMHeadModel(config)
    device = torch.device("cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=a.pretrain_lr, weight_decay=0.01)
    rng = np.random.default_rng(a.seed)
    collate = tdata.Collator(pad=special["PAD"], prefix=1)
    started, losses = time.perf_counter(), []
    for step in range(a.pretrain_steps):
        lr = a.pretrain_lr * min(1.0, (step + 1) / 50)
        lr *= 0.5 * (1 + math.cos(math.pi * step / a.pretrain_steps))
        for g in optim.param_groups:
            g["lr"] = lr
        rows = rng.integers(0, len(plain), a.batch_size)
        batch = collate([plain.row(int(r)) for r in rows])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        if (step + 1) % max(1, a.pretrain_steps // 10) == 0:
            print(f"    step {step + 1}: loss {np.mean(losses[-20:]):.3f}", file=sys.stderr)
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes(builtin_tokenizer_path().read_bytes())
    record = {
        "settings": settings,
        "steps": a.pretrain_steps,
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    return out, record


def _finetune(a, arm: str, data: Path, base: Path) -> Path:
    from varemi.training import finetune as finetuning

    run = a.work / f"run-{arm}-{_key([data.name, base.name, a.finetune_steps, a.finetune_lr])}"
    if (run / "run.json").is_file() and json.loads((run / "run.json").read_text()).get(
        "status"
    ) == "done":
        return run
    print(f"  fine-tune {arm}: {a.finetune_steps} steps", file=sys.stderr)
    finetuning.finetune(
        finetuning.FinetuneParams(
            data=data, out=run, model=str(base), max_steps=a.finetune_steps,
            eval_steps=max(1, a.finetune_steps // 4), patience=0, lr=a.finetune_lr,
            warmup=max(1, a.finetune_steps // 10), batch_size=a.batch_size, seed=a.seed,
            max_eval_examples=256, overwrite=True, device=a.device, quiet=True,
            cond_dropout=ARMS[arm].get("cond_dropout", 0.0),
        )
    )  # fmt: skip
    return run


def _evaluate(a, arm: str, run: Path, guidance: float) -> dict:
    from varemi.training import evaluation, generation

    out = run / f"evaluate-g{guidance:g}-n{a.n_per_cell}-s{a.seeds}"
    if (out / "evaluate.json").is_file():
        return json.loads((out / "evaluate.json").read_text())
    print(f"  evaluate {arm} at guidance {guidance:g}", file=sys.stderr)
    sampling = generation.SamplingParams(
        max_new_tokens=a.max_new_tokens, seed=a.seed, guidance=guidance
    )
    extra = {}
    if "seeds" in inspect.signature(evaluation.evaluate).parameters:
        extra["seeds"] = a.seeds
    res = evaluation.evaluate(
        run, grid=a.grid, n_per_cell=a.n_per_cell, sampling=sampling, out=out, quiet=True,
        device=a.device, **extra,
    )  # fmt: skip
    print(evaluation.format_evaluation(res), file=sys.stderr)
    return json.loads((out / "evaluate.json").read_text())


def _ceiling(a, data: Path) -> dict:
    """What ``evaluate`` would measure if the model wrote its own val windows back.

    For each grid cell, up to ``n_per_cell`` val windows carrying those bins; their
    first ``max_new_tokens`` music tokens are decoded and labelled like a generation,
    and scored with ``evaluate``'s own figures. No model is involved: this is the most
    the evaluation can show at this length with these labels, and the chance level is
    the shuffled baseline.
    """
    from varemi.dataset.info import half_width, prefix_length, read_dataset_info
    from varemi.dataset.vocabulary import load_tokenizer
    from varemi.labelling.heuristic import LabelError, label_score
    from varemi.music.tokenizer import DecodeError, decode_music
    from varemi.training import data as tdata
    from varemi.training import evaluation, generation

    info = read_dataset_info(data)
    val = tdata.read_splits(data, info)["val"]
    tokenizer, prefix, half = load_tokenizer(data), prefix_length(info), half_width(info)
    axis = evaluation.grid_bins(a.grid, half)
    rng = np.random.default_rng(a.seed)
    req, mea, feats = [], [], []
    for v in axis:
        for ar in axis:
            rows = np.nonzero((val.vbin == v) & (val.abin == ar))[0]
            for r in rng.permutation(rows)[: a.n_per_cell * a.seeds]:
                ids = val.row(int(r))[prefix : prefix + a.max_new_tokens]
                try:
                    label = label_score(decode_music(tokenizer, ids.tolist()), "w")
                except (DecodeError, LabelError):
                    continue
                req.append((v, ar))
                mea.append((label.valence, label.arousal))
                f = label.features
                feats.append((f["major_corr"] - f["minor_corr"], f["note_density"]))
    req = np.array(req, dtype=np.int64).reshape(-1, 2)
    mea = np.array(mea, dtype=np.float64).reshape(-1, 2)
    res = evaluation.control_metrics(req, mea, generation.labels_to_bins(info, mea), half)
    feats = np.array(feats).reshape(-1, 2)
    res["spearman_valence_major_fit"] = evaluation.spearman(req[:, 0], feats[:, 0])
    res["spearman_arousal_note_density"] = evaluation.spearman(req[:, 1], feats[:, 1])
    return res


def _f(x, sign: bool = True, gain: bool = False) -> str:
    if x is None:
        return "-"
    if gain:  # nats per token: small numbers
        return f"{x:+.4f}"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _ci(res: dict, key: str) -> str:
    value = res["conditioned"].get(key)
    ci = (res["conditioned"].get("ci95") or {}).get(key)
    text = "-" if value is None else f"{value:+.3f}"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _row(arm: str, guidance: float, res: dict, ft: dict) -> dict:
    c, b = res["conditioned"], res["shuffled_baseline"]
    gain = res.get("conditioning_gain") or {}
    features = res.get("features") or {}
    return {
        "arm": arm,
        "guidance": guidance,
        "rho_arousal": c.get("spearman_arousal"),
        "rho_valence": c.get("spearman_valence"),
        "ci95": c.get("ci95"),
        "shuffled_arousal": b.get("spearman_arousal"),
        "shuffled_valence": b.get("spearman_valence"),
        "shuffled_ci95": b.get("ci95"),
        "quadrant_accuracy": c.get("quadrant_accuracy"),
        "mae_bins_arousal": c.get("mae_bins_arousal"),
        "conditioning_gain": gain.get("nats_per_token"),
        "conditioning_gain_ci95": gain.get("ci95"),
        "conditioning_gain_valence": (gain.get("valence") or {}).get("nats_per_token"),
        "conditioning_gain_arousal": (gain.get("arousal") or {}).get("nats_per_token"),
        "unconditioned": res.get("unconditioned"),
        "features": {k: v.get("rho") for k, v in features.items() if isinstance(v, dict)},
        "val_loss": ft,
        "valid_fraction": res.get("valid_fraction"),
        "text": {
            "arousal": _ci(res, "spearman_arousal"),
            "valence": _ci(res, "spearman_valence"),
            "quadrant": _ci(res, "quadrant_accuracy"),
        },
    }


def _table(rows: list[dict]) -> str:
    lines = [
        "| arm | guidance | rho arousal [95% CI] (shuffled) | rho valence [95% CI] (shuffled) "
        "| quadrant [95% CI] | arousal bin error | conditioning gain: both / VAL / ARO "
        "| val loss start -> best | data ceiling rho arousal / valence |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        vl = r["val_loss"]
        lines.append(
            f"| {r['arm']} | {r['guidance']:g} | {r['text']['arousal']} "
            f"({_f(r['shuffled_arousal'])}) | {r['text']['valence']} ({_f(r['shuffled_valence'])}) "
            f"| {r['text']['quadrant']} | {_f(r['mae_bins_arousal'], False)} "
            f"| {_f(r['conditioning_gain'], gain=True)} / "
            f"{_f(r['conditioning_gain_valence'], gain=True)} / "
            f"{_f(r['conditioning_gain_arousal'], gain=True)} "
            f"| {vl['start']:.3f} -> {vl['best']:.3f} "
            f"| {_f(r['ceiling']['spearman_arousal'])} / {_f(r['ceiling']['spearman_valence'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    a = _args(argv)
    import torch
    import transformers

    torch.set_num_threads(max(1, torch.get_num_threads()))
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    midi = _subset(a.corpus, a.files, a.work / f"midi-{a.files}")
    print(f"[1/4] build: {a.files} files of {a.corpus}", file=sys.stderr)
    default_data = _build(a, midi, {})
    corpora = {"key-to-c": lambda: _key_to_c(midi, a.work / f"midi-{a.files}-key-to-c")}
    datas = {
        arm: _build(a, corpora[ARMS[arm]["corpus"]]() if "corpus" in ARMS[arm] else midi,
                    _data_settings(a, arm) | _corpus_of(arm))
        for arm in a.arms
    }  # fmt: skip
    print("[2/4] pre-train (cached)", file=sys.stderr)
    base, pre = _pretrain(a, default_data, torch, transformers)
    print("[3/4] fine-tune", file=sys.stderr)
    runs, timings = {}, {}
    for arm in a.arms:
        started = time.perf_counter()
        if a.stage == "evaluate":
            runs[arm] = next(iter(sorted(a.work.glob(f"run-{arm}-*"))), None)
            if runs[arm] is None:
                sys.exit(f"error: no fine-tuned run of {arm} in {a.work}: run --stage train")
        else:
            runs[arm] = _finetune(a, arm, datas[arm], base)
        timings[arm] = round(time.perf_counter() - started, 1)
    if a.stage == "train":
        print(f"trained {len(runs)} arms in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0
    print("[4/4] evaluate", file=sys.stderr)
    rows, ceilings = [], {}
    for arm in a.arms:
        name = datas[arm].name
        if name not in ceilings:
            ceilings[name] = _ceiling(a, datas[arm])
            c = ceilings[name]
            print(
                f"  ceiling of {arm}'s data (its own val windows, first {a.max_new_tokens} "
                f"tokens): rho arousal {_f(c['spearman_arousal'])}, valence "
                f"{_f(c['spearman_valence'])}, quadrant {_f(c['quadrant_accuracy'])}, n {c['n']}",
                file=sys.stderr,
            )
        meta = json.loads((runs[arm] / "run.json").read_text())
        log = list(
            __import__("csv").DictReader(open(runs[arm] / "training_log.csv", encoding="utf-8"))
        )
        ft = {"start": float(log[0]["val_loss"]), "best": float(meta["best_val_loss"])}
        for g in ARMS[arm].get("guidance", (1.0,)):
            started = time.perf_counter()
            res = _evaluate(a, arm, runs[arm], g)
            row = _row(arm, g, res, ft)
            row["evaluate_seconds"] = round(time.perf_counter() - started, 1)
            row["data"] = _data_settings(a, arm) | _corpus_of(arm)
            row["ceiling"] = ceilings[name]
            row["run"] = str(runs[arm])
            rows.append(row)
    summary = {
        "command": "python scripts/bench_control.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "settings": {k: getattr(a, k) for k in PRESETS["quick"]}
        | {"bins": a.bins, "binning": a.binning, "corpus": str(a.corpus)},
        "device": "cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu",
        "pretrain": pre,
        "finetune_seconds": timings,
        "arms": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (a.work / "bench_control.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(_table(rows))
    print(
        f"pre-train loss {pre['final_loss']:.3f} ({pre['parameters']:,} parameters); "
        f"{summary['seconds']:.0f} s in all on {summary['device']}; "
        f"report: {a.work / 'bench_control.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
