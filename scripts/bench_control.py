"""Controllability benchmark: does a varemi dataset give a model any control over mood?

1. build a varemi dataset (``--bos``, heuristic labels) of a real corpus
   (default ``../shared/corpora/pop909``) with the built-in tokenizer;
2. pre-train a small GPT-2 from scratch on the same windows *without* the conditioning
   tokens (``[BOS] + window``), standing in for Maestro-REMI-bpe20k, which cannot be
   downloaded here;
3. fine-tune it with ``varemi.finetune`` on the conditioned dataset;
4. run ``varemi.evaluate`` and print the figures, conditioned against the shuffled-prompt
   baseline.

A preset sets the size; every knob can be overridden::

    python scripts/bench_control.py --preset quick   # a few minutes on 2 CPU cores
    python scripts/bench_control.py --preset cpu     # about 30 minutes on 2 CPU cores
    python scripts/bench_control.py --preset gpu     # the 12 x 512 (8 heads) architecture

The labeller that measures the generations is the one that labelled the training data,
so this measures whether the model learned to reproduce what the labeller sees, not
whether listeners would agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

PRESETS = {
    #         files, window, layers, heads, d, pretrain steps, finetune steps, grid, n/cell, new
    "quick": dict(
        files=120, window=128, layers=2, heads=2, d_model=64, pretrain_steps=150,
        finetune_steps=100, grid=3, n_per_cell=6, max_new_tokens=128, batch_size=16,
    ),
    "cpu": dict(
        files=909, window=256, layers=4, heads=4, d_model=128, pretrain_steps=1200,
        finetune_steps=600, grid=3, n_per_cell=12, max_new_tokens=256, batch_size=16,
    ),
    "gpu": dict(
        files=909, window=384, layers=12, heads=8, d_model=512, pretrain_steps=4000,
        finetune_steps=2000, grid=5, n_per_cell=16, max_new_tokens=384, batch_size=32,
    ),
}  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "pop909"


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=Path("bench-control"), help="scratch folder")
    for key, value in PRESETS["quick"].items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    ap.add_argument("--bins", type=int, default=5)
    ap.add_argument("--binning", default="quantile", choices=["uniform", "quantile"])
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = ap.parse_args(argv)
    for key, value in PRESETS[a.preset].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
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


def _pretrain(a, data: Path, out: Path, torch, transformers) -> dict:
    """A GPT-2 from scratch on [BOS] + window (conditioning tokens removed), base vocabulary."""
    from varemi.music.tokenizer import builtin_tokenizer_path
    from varemi.training import data as tdata

    info = json.loads((data / "dataset_info.json").read_text())
    import datasets

    split = tdata.split_of(datasets.load_from_disk(str(data))["train"])
    keep = np.ones(len(split.values), dtype=bool)  # drop VAL, ARO (positions 1, 2)
    keep[split.offsets[:-1] + 1] = False
    keep[split.offsets[:-1] + 2] = False
    plain = tdata.Split(
        split.values[keep],
        split.offsets - 2 * np.arange(len(split.offsets)),
        split.vbin,
        split.abin,
    )
    special = info["special_tokens"]
    config = transformers.GPT2Config(
        vocab_size=info["tokenizer"]["base_vocab_size"],
        n_positions=max(a.window + 3, 64),
        n_layer=a.layers,
        n_head=a.heads,
        n_embd=a.d_model,
        bos_token_id=special["BOS"],
        eos_token_id=special["EOS"],
        pad_token_id=special["PAD"],
    )
    torch.manual_seed(a.seed)
    model = transformers.GPT2LMHeadModel(config)
    device = torch.device("cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=a.pretrain_lr, weight_decay=0.01)
    rng = np.random.default_rng(a.seed)
    started, losses = time.perf_counter(), []
    for step in range(a.pretrain_steps):
        lr = (
            a.pretrain_lr
            * min(1.0, (step + 1) / 50)
            * 0.5
            * (1 + math.cos(math.pi * step / a.pretrain_steps))
        )
        for g in optim.param_groups:
            g["lr"] = lr
        rows = rng.integers(0, len(plain), a.batch_size)
        batch = tdata.Collator(pad=special["PAD"], prefix=1)([plain.row(int(r)) for r in rows])
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            ).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        if (step + 1) % max(1, a.pretrain_steps // 10) == 0:
            print(
                f"  pretrain step {step + 1}/{a.pretrain_steps}: loss {np.mean(losses[-20:]):.3f}",
                file=sys.stderr,
            )
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes(builtin_tokenizer_path().read_bytes())
    return {
        "steps": a.pretrain_steps,
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv=None) -> int:
    a = _args(argv)
    import torch
    import transformers

    from varemi.pipeline.build import build
    from varemi.pipeline.params import BuildParams
    from varemi.training import evaluation, generation
    from varemi.training import finetune as finetuning

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    t0 = time.perf_counter()
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    midi = _subset(a.corpus, a.files, work / "midi")
    data = work / "data"
    print(f"[1/4] build {data} from {a.files} files of {a.corpus}", file=sys.stderr)
    build(
        BuildParams(
            midi_dir=midi, out=data, tokenizer="builtin", window_size=a.window,
            stride=a.window // 2, min_window_tokens=a.window // 4, bins=a.bins,
            binning=a.binning, bos=True, overwrite=True, quiet=True, cache=False,
        )
    )  # fmt: skip
    info = json.loads((data / "dataset_info.json").read_text())
    t_build = time.perf_counter() - t0
    print(
        f"[2/4] pre-train {a.layers}x{a.d_model} GPT-2, {a.pretrain_steps} steps", file=sys.stderr
    )
    base = work / "pretrained"
    pre = _pretrain(a, data, base, torch, transformers)
    print(f"[3/4] finetune {a.finetune_steps} steps", file=sys.stderr)
    run = work / "run"
    ft = finetuning.finetune(
        finetuning.FinetuneParams(
            data=data, out=run, model=str(base), max_steps=a.finetune_steps,
            eval_steps=max(1, a.finetune_steps // 4), patience=0, lr=a.finetune_lr,
            warmup=max(1, a.finetune_steps // 10), batch_size=a.batch_size, seed=a.seed,
            max_eval_examples=256, overwrite=True, device=a.device, quiet=True,
        )
    )  # fmt: skip
    print(f"[4/4] evaluate: grid {a.grid}, {a.n_per_cell} per cell", file=sys.stderr)
    sampling = generation.SamplingParams(max_new_tokens=a.max_new_tokens, seed=a.seed)
    res = evaluation.evaluate(
        run, grid=a.grid, n_per_cell=a.n_per_cell, sampling=sampling, quiet=True
    )
    total = time.perf_counter() - t0
    summary = {
        "command": "python scripts/bench_control.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "settings": {k: getattr(a, k) for k in PRESETS["quick"]},
        "device": "cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu",
        "examples": info["counts"]["examples"],
        "pretrain": pre,
        "finetune": {
            "steps": ft.steps,
            "best_step": ft.best_step,
            "best_val_loss": ft.best_val_loss,
            "val_loss_step0": ft.log[0]["val_loss"],
        },
        "evaluate": {k: res[k] for k in ("valid_fraction", "conditioned", "shuffled_baseline")},
        "seconds": {"build": round(t_build, 1), "total": round(total, 1)},
    }
    (work / "bench_control.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(evaluation.format_evaluation(res))
    print(
        f"pre-train loss {pre['final_loss']:.3f} ({pre['parameters']:,} parameters); "
        f"fine-tune val loss {ft.log[0]['val_loss']:.3f} -> {finetuning._fmt(ft.best_val_loss)}; "
        f"{summary['examples']} examples; {total:.0f} s in all on {summary['device']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
