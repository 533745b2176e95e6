"""From dataset to a mood-controlled model: ``finetune``, ``generate``, ``evaluate``, ``decode``.

:func:`finetune` trains a causal language model (``Natooz/Maestro-REMI-bpe20k`` by default,
a local folder, or ``tiny``: a small random GPT-2) on a varemi dataset and writes a *run
folder*; :func:`generate` samples pieces of a requested mood from a run; :func:`evaluate`
measures how well the run obeys the requested moods; :func:`decode` turns token ids into a
:class:`symusic.Score`.

The training loop is a plain torch loop rather than ``transformers.Trainer``: the data
order (length-grouped, optionally balanced over bins) must be reproducible across
``--resume``, validation must report the loss per valence x arousal bin, and early
stopping keeps the best checkpoint; a loop of a hundred lines does all three with no
``accelerate`` dependency and nothing hidden.

torch and transformers are imported lazily (the optional extra ``varemi[train]``), so
``import varemi`` and ``build`` never need them.

A run folder holds the best model (``config.json``, ``model.safetensors``), the dataset's
``tokenizer.json`` (conditioning tokens included) and a copy of its ``dataset_info.json``
(so :func:`varemi.load_tokenizer` reads a run like a dataset), ``run.json`` (what was
trained, how, and the best step), ``training_log.csv``, ``loss.png``,
``val_loss_by_bin.json`` / ``.csv`` and ``checkpoint/`` (the last state, for ``--resume``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from varemi._base.errors import BinsError, VaremiError
from varemi._base.fileio import read_json, write_json
from varemi.core import conditioning
from varemi.core.conditioning import bin_token_ids
from varemi.dataset import info as info_module
from varemi.dataset.info import half_width, prefix_length
from varemi.dataset.vocabulary import load_tokenizer
from varemi.labelling.heuristic import LabelError, label_score
from varemi.music.models import DEFAULT_MODEL
from varemi.music.tokenizer import (
    HUB_TIMEOUT_S,
    SPECIAL_TOKENS,
    DecodeError,
    _hub_offline,
    _looks_like_path,
    decode_music,
)

if TYPE_CHECKING:
    from symusic import Score

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoint"
TINY = "tiny"
RESUME_OVERRIDES = ("epochs", "max_steps", "eval_steps", "patience")
"""Options a ``--resume`` may change (to train longer); the rest come from the run."""


class TrainError(VaremiError):
    """Bad input to ``finetune``, ``generate`` or ``evaluate`` (one line for the user)."""


class MissingExtraError(TrainError):
    """torch or transformers is not installed."""


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingExtraError(
            f"fine-tuning needs torch and transformers ({e.name} is not installed): "
            "pip install 'varemi[train]'"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return torch, transformers


# --------------------------------------------------------------------------- datasets, runs
def read_dataset_info(data: Path, option: str = "DATA") -> dict:
    """The ``dataset_info.json`` of a varemi dataset with its vocabulary sizes, or one clear error.

    Args:
        data: The dataset folder.
        option: How the user named it (for the message).

    Returns:
        The parsed ``dataset_info.json`` (:func:`varemi.dataset.info.read_dataset_info`).

    Raises:
        DatasetInfoError: ``data`` is not a varemi dataset, or its info is malformed.
    """
    info = info_module.read_dataset_info(data, option)
    info_module.tokenizer_sizes(info, data)
    return info


def _special_ids(tokenizer) -> dict[str, int]:
    return {
        k: int(tokenizer.vocab[f"{k}_None"])
        for k in SPECIAL_TOKENS
        if f"{k}_None" in tokenizer.vocab
    }


def read_run(run: Path, option: str = "RUN") -> dict:
    """The ``run.json`` of a finetune output that holds a model, or one clear error.

    Args:
        run: The run folder.
        option: How the user named it (for the message).

    Returns:
        The parsed ``run.json``.

    Raises:
        TrainError: ``run`` is not a finetune output, or holds no model yet.
    """
    try:
        meta = read_json(run / RUN_FILE)
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or "varemi_run" not in meta:
        raise TrainError(
            f"{option} {run} is not a varemi finetune output (no readable {RUN_FILE}): "
            "train one with python -m varemi finetune DATA --out RUN"
        )
    if not (run / "config.json").is_file() or not (run / "dataset_info.json").is_file():
        raise TrainError(f"{option} {run} holds no model yet (its training saved none)")
    return meta


def _flat_ids(split) -> tuple[np.ndarray, np.ndarray]:
    """A split's ``input_ids`` as flat int64 values and offsets (no Python list per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = split.data.table.column("input_ids")
    col = col.combine_chunks() if col.num_chunks else pa.array([], pa.list_(pa.int32()))
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return values, offsets


@dataclass
class _Split:
    values: np.ndarray
    offsets: np.ndarray
    vbin: np.ndarray
    abin: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def _load_split(dd, name: str) -> _Split:
    ds = dd[name]
    values, offsets = _flat_ids(ds)
    t = ds.data.table
    return _Split(
        values,
        offsets,
        t.column("valence_bin").to_numpy().astype(np.int64),
        t.column("arousal_bin").to_numpy().astype(np.int64),
    )


# --------------------------------------------------------------------------- models
def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _load_pretrained(spec: str, transformers):
    """A causal LM from a local folder or the hub; one clear error when it cannot be had."""
    auto = transformers.AutoModelForCausalLM
    local = Path(spec).expanduser()
    hint = f"pass --model PATH (a local model folder) or --model {TINY}"
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise TrainError(f"--model {spec}: the folder has no config.json")
        try:
            return auto.from_pretrained(local)
        except Exception as e:  # damaged weights, unknown architecture ...
            raise TrainError(f"--model {spec}: cannot load it ({_one_line(e)})") from None
    if local.exists() or _looks_like_path(spec):
        raise TrainError(f"--model {spec}: no such model folder")

    def cached():
        try:
            return auto.from_pretrained(spec, local_files_only=True)
        except Exception:
            return None

    if _hub_offline():
        model = cached()
        if model is None:
            raise TrainError(
                f"cannot load model {spec!r}: the Hugging Face hub is switched off "
                f"(HF_HUB_OFFLINE) and the model is not in the local cache; {hint}"
            )
        return model
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(spec, "config.json"), timeout=HUB_TIMEOUT_S)
    except Exception as e:  # unreachable, not found, gated
        model = cached()
        if model is None:
            raise TrainError(
                f"cannot load model {spec!r} from the Hugging Face hub ({_one_line(e)}); {hint}"
            ) from None
        return model
    try:
        return auto.from_pretrained(spec)
    except Exception as e:
        raise TrainError(f"cannot load model {spec!r}: {_one_line(e)}") from None


def tiny_config(vocab_size: int, n_positions: int, special: dict[str, int]):
    """The ``tiny`` model: a 2-layer, 2-head, 64-wide GPT-2 (random weights).

    Args:
        vocab_size: The base tokenizer's vocabulary size.
        n_positions: Position embeddings (at least the longest example).
        special: Special-token ids (PAD, BOS, EOS).

    Returns:
        A ``transformers.GPT2Config``.
    """
    _, transformers = _require_torch()
    return transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_layer=2,
        n_head=2,
        n_embd=64,
        bos_token_id=special.get("BOS", 0),
        eos_token_id=special.get("EOS", 0),
        pad_token_id=special.get("PAD", 0),
    )


def _model_for(spec: str, info: dict, special: dict[str, int], transformers, max_len: int, seed=0):
    """The starting model, checked against the dataset's vocabulary."""
    base = int(info["tokenizer"]["base_vocab_size"])
    full = int(info["tokenizer"]["vocab_size"])
    if spec == TINY:
        transformers.set_seed(seed)
        return transformers.GPT2LMHeadModel(tiny_config(base, max(max_len, 64), special))
    model = _load_pretrained(spec, transformers)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    if vocab not in (base, full):
        raise TrainError(
            f"--model {spec} has a vocabulary of {vocab} ids, but the dataset's base tokenizer "
            f"({info['tokenizer'].get('source')}) has {base}: the model was not trained with "
            "this tokenizer; build the dataset with the model's own tokenizer"
        )
    tok_file = Path(spec) / "tokenizer.json"
    want = info["tokenizer"].get("sha256")
    if vocab == base and tok_file.is_file() and want:
        import hashlib

        got = hashlib.sha256(tok_file.read_bytes()).hexdigest()
        if got != want:
            raise TrainError(
                f"--model {spec}: its tokenizer.json (sha256 {got[:12]}...) is not the dataset's "
                f"base tokenizer (sha256 {want[:12]}...)"
            )
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if positions is not None and positions < max_len:
        raise TrainError(
            f"--model {spec} has {positions} positions, shorter than the dataset's examples "
            f"({max_len} ids): rebuild with a smaller --window-size"
        )
    return model


def extend_embeddings(model, new_size: int) -> int:
    """Resize the token embeddings; the new rows start at the mean of the existing ones.

    Args:
        model: A transformers model.
        new_size: The new vocabulary size (base + conditioning tokens).

    Returns:
        How many rows were added.
    """
    torch, _ = _require_torch()
    old = int(model.get_input_embeddings().weight.shape[0])
    if new_size == old:
        return 0
    model.resize_token_embeddings(new_size, mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[old:] = emb[:old].mean(dim=0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[old:] = out.weight[:old].mean(dim=0, keepdim=True)
            if getattr(out, "bias", None) is not None:
                out.bias[old:] = out.bias[:old].mean()
    return new_size - old


# --------------------------------------------------------------------------- finetune
@dataclass
class FinetuneParams:
    """Every ``finetune`` option (dashes as underscores).

    Attributes:
        data: The dataset folder (``varemi build --out``).
        out: The run folder to write.
        model: Hub id, local model folder, or ``tiny``.
        epochs: Passes over ``train`` (None: 3, or the run's on ``--resume``).
        max_steps: Optimizer steps; overrides ``epochs`` when given.
        lr: Peak learning rate (AdamW, weight decay 0.01).
        batch_size: Examples per micro-batch.
        grad_accum: Micro-batches per optimizer step.
        warmup: Linear warm-up steps; then linear decay to 0.
        seed: Seed of the data order, dropout and the ``tiny`` model's random weights.
        eval_steps: Validate every this many optimizer steps (None: 200).
        patience: Stop after this many validations without a better val loss (None: 3;
            0 never stops early).
        max_eval_examples: Validate on at most this many ``val`` examples (evenly spread).
        balance_bins: Sample ``train`` evenly over the valence x arousal bins present.
        resume: Continue the run in ``out`` from its last checkpoint.
        overwrite: Replace ``out`` if it holds a previous run.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        quiet: No progress bar or summary.
    """

    data: Path
    out: Path
    model: str = DEFAULT_MODEL
    epochs: float | None = None
    max_steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 8
    grad_accum: int = 1
    warmup: int = 100
    seed: int = 0
    eval_steps: int | None = None
    patience: int | None = None
    max_eval_examples: int = 1024
    balance_bins: bool = False
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    quiet: bool = False


_DEFAULTS = {"epochs": 3.0, "eval_steps": 200, "patience": 3}


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes:
        out: The run folder.
        best_step: The optimizer step of the saved (best) model.
        best_val_loss: Its val loss (None without a val split).
        steps: Optimizer steps done in all.
        stopped: ``max_steps``, ``epochs`` or ``early_stopping``.
        log: The rows of ``training_log.csv``.
    """

    out: Path
    best_step: int
    best_val_loss: float | None
    steps: int
    stopped: str
    log: list[dict] = field(default_factory=list)


def _check_finetune_params(p: FinetuneParams) -> None:
    checks = [
        ("--epochs", p.epochs, p.epochs is None or p.epochs > 0, "> 0"),
        ("--max-steps", p.max_steps, p.max_steps is None or p.max_steps >= 1, ">= 1"),
        ("--lr", p.lr, p.lr > 0 and math.isfinite(p.lr), "> 0"),
        ("--batch-size", p.batch_size, p.batch_size >= 1, ">= 1"),
        ("--grad-accum", p.grad_accum, p.grad_accum >= 1, ">= 1"),
        ("--warmup", p.warmup, p.warmup >= 0, ">= 0"),
        ("--eval-steps", p.eval_steps, p.eval_steps is None or p.eval_steps >= 1, ">= 1"),
        ("--patience", p.patience, p.patience is None or p.patience >= 0, ">= 0"),
        ("--max-eval-examples", p.max_eval_examples, p.max_eval_examples >= 1, ">= 1"),
        ("--seed", p.seed, 0 <= p.seed < 2**32, "in 0..2**32-1"),
    ]
    for name, value, ok, want in checks:
        if not ok:
            raise TrainError(f"{name} must be {want}, got {value}")
    if p.device not in ("auto", "cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {p.device!r}")
    if p.resume and p.overwrite:
        raise TrainError("--resume and --overwrite cannot be used together")


def _check_out(p: FinetuneParams) -> dict | None:
    """Refuse an output folder that would lose work; the stored run when resuming."""
    out = p.out
    if p.resume:
        meta = None
        try:
            meta = read_json(out / RUN_FILE)
        except (OSError, ValueError):
            pass
        if not isinstance(meta, dict) or not (out / CHECKPOINT_DIR / "state.json").is_file():
            raise TrainError(f"--resume: --out {out} holds no finetune checkpoint to resume")
        return meta
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not out.is_dir():
            raise TrainError(f"--out {out} exists and is not a folder")
        if not (out / RUN_FILE).is_file():
            raise TrainError(
                f"--out {out} is a non-empty folder that is not a varemi run: "
                "choose a new or empty folder"
            )
        if not p.overwrite:
            raise TrainError(
                f"--out {out} already holds a run; pass --resume to continue it "
                "or --overwrite to replace it"
            )
    return None


def _batch_plan(lengths: np.ndarray, bins: np.ndarray, p: FinetuneParams, epoch: int) -> list:
    """One epoch's micro-batches: length-grouped, reproducible from (seed, epoch)."""
    rng = np.random.default_rng([p.seed, epoch])
    n = len(lengths)
    if p.balance_bins:  # every bin present is drawn equally often
        _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    else:
        order = rng.permutation(n)
    mega = p.batch_size * 50  # sort by length within chunks of 50 batches (HF's rule)
    batches = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + p.batch_size] for i in range(0, len(chunk), p.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _collate(split: _Split, rows, pad: int, prefix: int, torch):
    length = int(max(split.lengths[rows]))
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for k, r in enumerate(rows):
        row = torch.from_numpy(split.row(int(r)))
        ids[k, : len(row)] = row
        mask[k, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prefix] = -100  # the model is told the mood (and BOS), never asked for it
    return ids, mask, labels


def _lr_at(step: int, p: FinetuneParams, total: int) -> float:
    if step < p.warmup:
        return p.lr * (step + 1) / (p.warmup + 1)
    return p.lr * max(0.0, (total - step) / max(1, total - p.warmup))


def _validate(model, val: _Split, rows: np.ndarray, pad, prefix, p, device, autocast, torch):
    """Token-weighted val loss, in all and per (valence bin, arousal bin)."""
    model.eval()
    loss_sum = np.zeros(len(rows))
    tokens = np.zeros(len(rows))
    order = rows[np.argsort(-val.lengths[rows], kind="stable")]
    with torch.no_grad():
        for start in range(0, len(order), p.batch_size):
            chunk = order[start : start + p.batch_size]
            ids, mask, labels = _collate(val, chunk, pad, prefix, torch)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with autocast():
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits, target = logits[:, :-1].float(), labels[:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            ).view(target.shape)
            keep = target != -100
            at = np.searchsorted(rows, chunk)  # rows is sorted
            loss_sum[at] = (ce * keep).sum(dim=1).double().cpu().numpy()
            tokens[at] = keep.sum(dim=1).double().cpu().numpy()
    model.train()
    total = float(loss_sum.sum() / max(tokens.sum(), 1))
    per_bin = {}
    for vb, ab in sorted(set(zip(val.vbin[rows].tolist(), val.abin[rows].tolist(), strict=True))):
        sel = (val.vbin[rows] == vb) & (val.abin[rows] == ab)
        per_bin[(vb, ab)] = {
            "examples": int(sel.sum()),
            "tokens": int(tokens[sel].sum()),
            "loss": float(loss_sum[sel].sum() / max(tokens[sel].sum(), 1)),
        }
    return total, per_bin


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _device(p: FinetuneParams, torch):
    if p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA device is available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), dtype
    return torch.device("cpu"), None


LOG_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "elapsed_s")


def finetune(p: FinetuneParams) -> FinetuneResult:
    """Fine-tune a model on a varemi dataset; write the run folder ``p.out``.

    The conditioning tokens are added to the model's vocabulary (new embedding rows at
    the mean of the existing ones); the loss ignores padding and the prefix (BOS and
    the two conditioning tokens). Validation runs at step 0, every ``eval_steps`` and at
    the end; the model with the best val loss is the one saved in ``p.out``.

    Args:
        p: The options.

    Returns:
        The best step, its val loss and the log.

    Raises:
        TrainError: A bad option, a folder that is not a varemi dataset, a model whose
            vocabulary does not match the dataset's, or an output folder that would be
            lost. ``MissingExtraError`` when torch or transformers is missing.
    """
    p = dataclasses.replace(p, data=Path(p.data), out=Path(p.out))  # the caller's stays as it was
    _check_finetune_params(p)
    if not p.resume:
        read_dataset_info(p.data)  # a bad DATA is named before anything else
    stored = _check_out(p)
    if stored is not None:  # the run's own parameters, except what a resume may change
        given = {k: getattr(p, k) for k in RESUME_OVERRIDES}
        for k, v in stored["params"].items():
            if k in {f.name for f in fields(p)} and k not in ("resume", "quiet", "device", "out"):
                setattr(p, k, v if k not in given or given[k] is None else given[k])
        p.data = Path(p.data)
    for k, v in _DEFAULTS.items():
        if getattr(p, k) is None:
            setattr(p, k, v)
    info = read_dataset_info(p.data, "DATA" if stored is None else "the run's dataset")
    torch, transformers = _require_torch()
    import datasets

    tokenizer = load_tokenizer(p.data)
    special = _special_ids(tokenizer)
    pad = special.get("PAD", 0)
    prefix = prefix_length(info)
    max_len = int(info["params"]["window_size"]) + prefix
    datasets.disable_progress_bars()
    dd = datasets.load_from_disk(str(p.data))
    train, val = _load_split(dd, "train"), _load_split(dd, "val")
    if len(train) == 0:
        raise TrainError(f"DATA {p.data} has no training examples")

    out, ckpt = p.out, p.out / CHECKPOINT_DIR
    if stored is not None:  # the last state, already extended
        model = transformers.AutoModelForCausalLM.from_pretrained(ckpt)
    else:
        model = _model_for(p.model, info, special, transformers, max_len, p.seed)
        extend_embeddings(model, len(tokenizer))
    model.config.pad_token_id = pad
    for name in ("bos", "eos"):
        if name.upper() in special:
            setattr(model.config, f"{name}_token_id", special[name.upper()])
    device, amp_dtype = _device(p, torch)
    model.to(device)

    def autocast():
        if amp_dtype is None:
            return _no_autocast()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    optim = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.01)
    bins = train.vbin * 1000 + train.abin
    per_epoch = len(_batch_plan(train.lengths, bins, p, 0))
    total = p.max_steps or max(1, math.ceil(p.epochs * per_epoch / p.grad_accum))
    if len(val):
        val_rows = np.unique(np.linspace(0, len(val) - 1, min(len(val), p.max_eval_examples)))
        val_rows = val_rows.astype(np.int64)
    else:
        val_rows = np.zeros(0, dtype=np.int64)

    state = {"step": 0, "micro": 0, "best_step": 0, "best_val": None, "bad_evals": 0}
    log: list[dict] = []
    if stored is not None:
        state = read_json(ckpt / "state.json")
        optim.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device))
        torch.set_rng_state(torch.load(ckpt / "rng.pt"))
        if torch.cuda.is_available() and (ckpt / "cuda_rng.pt").is_file():
            torch.cuda.set_rng_state_all(torch.load(ckpt / "cuda_rng.pt"))
        if scaler is not None and (ckpt / "scaler.pt").is_file():
            scaler.load_state_dict(torch.load(ckpt / "scaler.pt"))
        log = state.pop("log")
        per_bin_rows = state.pop("per_bin")
    else:
        if out.exists() and any(out.iterdir()):  # a previous run, and --overwrite was given
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p.data / "tokenizer.json", out / "tokenizer.json")
        shutil.copyfile(p.data / "dataset_info.json", out / "dataset_info.json")
        torch.manual_seed(p.seed)
    meta = {
        "varemi_run": 1,
        "data": str(p.data.resolve()),
        "model": p.model,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(p).items()},
        "prefix": prefix,
        "special_tokens": special,
        "device": str(device),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        "parameters": sum(t.numel() for t in model.parameters()),
        "total_steps": total,
        "status": "running",
    }
    meta["params"].pop("overwrite")
    meta["params"].pop("resume")
    write_json(out / RUN_FILE, {**(stored or {}), **meta})

    started = time.perf_counter() - (log[-1]["elapsed_s"] if log else 0.0)
    per_bin_best: dict = {}
    if stored is not None:
        per_bin_best = {
            (r["valence_bin"], r["arousal_bin"]): {k: r[k] for k in ("examples", "tokens", "loss")}
            for r in per_bin_rows
        }

    def evaluate_now(step: int, train_loss: float | None) -> bool:
        """Validate, log, keep the best; True when early stopping says stop."""
        nonlocal per_bin_best
        val_loss, per_bin = None, {}
        if len(val_rows):
            val_loss, per_bin = _validate(
                model, val, val_rows, pad, prefix, p, device, autocast, torch
            )
        log.append(_log_row(step, state, per_epoch, p, total, train_loss, val_loss, started))
        better = val_loss is not None and (
            state["best_val"] is None or val_loss < state["best_val"]
        )
        if better or val_loss is None:
            state["best_val"], state["best_step"], state["bad_evals"] = val_loss, step, 0
            model.save_pretrained(out)
            per_bin_best = per_bin
        else:
            state["bad_evals"] += 1
        return bool(p.patience) and state["bad_evals"] >= p.patience

    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=state["step"], desc="finetune", unit="step", disable=p.quiet,
        file=sys.stderr,
    )  # fmt: skip
    stopped = "max_steps" if p.max_steps else "epochs"
    if state["step"] == 0 and not log:
        evaluate_now(0, None)
    model.train()
    plans: dict[int, list] = {}
    running: list[float] = []
    while state["step"] < total:
        optim.zero_grad(set_to_none=True)
        lr = _lr_at(state["step"], p, total)
        for g in optim.param_groups:
            g["lr"] = lr
        step_loss = 0.0
        for _ in range(p.grad_accum):
            epoch, pos = divmod(state["micro"], per_epoch)
            if epoch not in plans:
                plans = {epoch: _batch_plan(train.lengths, bins, p, epoch)}
            ids, mask, labels = _collate(train, plans[epoch][pos], pad, prefix, torch)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with autocast():
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss = loss / p.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            step_loss += loss.item()
            state["micro"] += 1
        if scaler:
            scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        state["step"] += 1
        running.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", best_val=_fmt(state["best_val"]))
        if state["step"] % p.eval_steps == 0 or state["step"] == total:
            stop = evaluate_now(state["step"], float(np.mean(running)))
            running = []
            _write_log(out, log, per_bin_best, quiet=p.quiet)
            rows = [{"valence_bin": v, "arousal_bin": a, **d} for (v, a), d in per_bin_best.items()]
            saved = {**state, "log": log, "per_bin": rows}
            _save_checkpoint(model, optim, saved, ckpt, torch, scaler)
            if stop:
                stopped = "early_stopping"
                break
    bar.close()
    note = _write_log(out, log, per_bin_best, quiet=p.quiet)
    meta.update(
        status="done", stopped=stopped, steps=state["step"], best_step=state["best_step"],
        best_val_loss=state["best_val"],
    )  # fmt: skip
    write_json(out / RUN_FILE, {**(stored or {}), **meta})
    if not p.quiet:
        print(
            f"varemi finetune: {out}\n  {state['step']} steps ({stopped}); best val loss "
            f"{_fmt(state['best_val'])} at step {state['best_step']} (saved)"
            + (f"\n  {note}" if note else "")
            + f"\n  next: python -m varemi generate {out} --valence 3 --arousal 3 --out DIR",
            file=sys.stderr,
        )
    return FinetuneResult(out, state["best_step"], state["best_val"], state["step"], stopped, log)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _log_row(step, state, per_epoch, p, total, train_loss, val_loss, started) -> dict:
    return {
        "step": step,
        "epoch": round(state["micro"] / per_epoch, 4),
        "lr": _lr_at(max(step - 1, 0), p, total) if step else 0.0,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _save_checkpoint(model, optim, state: dict, ckpt: Path, torch, scaler=None) -> None:
    """Model, optimizer, RNG and counters (with the log), swapped in whole (never half)."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp)
    torch.save(optim.state_dict(), tmp / "optimizer.pt")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    if torch.cuda.is_available():
        torch.save(torch.cuda.get_rng_state_all(), tmp / "cuda_rng.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    write_json(tmp / "state.json", state)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _write_log(out: Path, log: list[dict], per_bin: dict, quiet: bool) -> str | None:
    """training_log.csv, val_loss_by_bin.json/.csv and loss.png; a note when no PNG."""
    with open(out / "training_log.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        w.writeheader()
        for r in log:
            w.writerow({k: "" if r[k] is None else r[k] for k in LOG_COLUMNS})
    rows = [{"valence_bin": v, "arousal_bin": a, **d} for (v, a), d in sorted(per_bin.items())]
    write_json(out / "val_loss_by_bin.json", {"bins": rows})
    with open(out / "val_loss_by_bin.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(
            f, fieldnames=["valence_bin", "arousal_bin", "examples", "tokens", "loss"]
        )
        w.writeheader()
        w.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "loss.png skipped: matplotlib is not installed (pip install 'varemi[plot]')"
    fig, ax = plt.subplots(figsize=(6, 4))
    tr = [(r["step"], r["train_loss"]) for r in log if r["train_loss"] is not None]
    va = [(r["step"], r["val_loss"]) for r in log if r["val_loss"] is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train", marker=".")
    if va:
        ax.plot(*zip(*va, strict=True), label="val", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- decode, generate
def decode(ids, data_or_run: str | Path) -> Score:
    """Token ids (a generation or an example) to a score, with the prefix stripped.

    Conditioning tokens and the special tokens (PAD, MASK, BOS, EOS, SEP) are removed
    before MidiTok decodes (it fails on them), and BPE ids are expanded.

    Args:
        ids: Token ids (any iterable of ints, a tensor row, a numpy array).
        data_or_run: A dataset folder or a finetune run folder (its tokenizer is used).

    Returns:
        The decoded :class:`symusic.Score`.
    """
    return decode_music(load_tokenizer(Path(data_or_run)), ids)


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    info: dict
    meta: dict
    device: Any
    torch: Any


def _load_run(run: Path, device: str = "auto") -> _Loaded:
    meta = read_run(run)
    torch, transformers = _require_torch()

    info = info_module.read_dataset_info(run, "RUN")
    tokenizer = load_tokenizer(run)
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    model = transformers.AutoModelForCausalLM.from_pretrained(run).to(dev).eval()
    return _Loaded(model, tokenizer, info, meta, dev, torch)


def _check_bin(info: dict, name: str, value: int) -> None:
    h = half_width(info)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or abs(value) > h:
        raise BinsError(
            f"{name} {value} is outside the dataset's bins {-h:+d}..{h:+d} "
            f"({2 * h + 1} bins per axis)"
        )


def _prompt(info: dict, special: dict[str, int], valence: int, arousal: int) -> list[int]:
    ids = [int(i) for i in bin_token_ids(info["conditioning_tokens"], valence, arousal)]
    return ([special["BOS"]] if prefix_length(info) == 3 else []) + ids


@dataclass
class SamplingParams:
    """How :func:`generate` and :func:`evaluate` sample.

    Attributes:
        max_new_tokens: Tokens to sample after the prompt (capped by the model's positions).
        temperature: Softmax temperature (> 0).
        top_k: Keep the k most likely tokens (0: all).
        top_p: Nucleus sampling mass in (0, 1].
        seed: Seed of the sampling.
    """

    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> None:
        """Refuse bad values, naming the option.

        Raises:
            TrainError: a value out of range.
        """
        if self.max_new_tokens < 1:
            raise TrainError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature > 0):
            raise TrainError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise TrainError(f"--top-k must be >= 0, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise TrainError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.seed < 2**32):
            raise TrainError(f"--seed must be in 0..2**32-1, got {self.seed}")


def _sample(r: _Loaded, prompt: list[int], n: int, s: SamplingParams, seed: int) -> list[list[int]]:
    """``n`` sampled continuations of ``prompt`` (prompt stripped), as id lists."""
    torch = r.torch
    positions = getattr(r.model.config, "n_positions", None) or getattr(
        r.model.config, "max_position_embeddings", 2048
    )
    new = min(s.max_new_tokens, positions - len(prompt))
    special = r.meta.get("special_tokens", {})
    suppress = sorted(set(r.info["conditioning_tokens"].values()) | set(special.values()))
    eos = special.get("EOS")
    suppress = [i for i in suppress if i != eos]
    torch.manual_seed(seed)
    ids = torch.tensor([prompt] * n, device=r.device)
    with torch.no_grad():
        gen = r.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            max_new_tokens=new,
            temperature=s.temperature,
            top_k=s.top_k or None,
            top_p=s.top_p,
            suppress_tokens=suppress,
            pad_token_id=special.get("PAD", 0),
            eos_token_id=eos,
        )
    out = []
    for row in gen[:, len(prompt) :].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        out.append(row)
    return out


def generate(
    run: str | Path,
    valence: int,
    arousal: int,
    out: str | Path,
    n: int = 4,
    sampling: SamplingParams | None = None,
) -> list[Path]:
    """Sample ``n`` pieces of a mood from a fine-tuned run and write them as MIDI files.

    The prompt is the dataset's prefix for those bins (``[BOS] [VAL=v] [ARO=a]`` when the
    dataset was built with ``--bos``, else ``[VAL=v] [ARO=a]``); conditioning and special
    tokens are never sampled. Files are named ``v+3_a-2_000.mid``.

    Args:
        run: A finetune run folder.
        valence: Valence bin in the dataset's range (``-4..4`` for 9 bins).
        arousal: Arousal bin.
        out: Folder to write the MIDI files into (created).
        n: How many pieces.
        sampling: How to sample (defaults: 1024 new tokens, temperature 1, top-k 50).

    Returns:
        The MIDI files written.

    Raises:
        TrainError: ``run`` is not a finetune output, or a bad option.
        BinsError: a bin outside the dataset's range.
    """
    s = sampling or SamplingParams()
    s.check()
    if n < 1:
        raise TrainError(f"--n must be >= 1, got {n}")
    run, out = Path(run), Path(out)
    meta = read_run(run)
    info = info_module.read_dataset_info(run, "RUN")
    _check_bin(info, "--valence", valence)
    _check_bin(info, "--arousal", arousal)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} exists and is not a folder")
    r = _load_run(run)
    prompt = _prompt(info, meta.get("special_tokens", {}), valence, arousal)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ids in enumerate(_sample(r, prompt, n, s, s.seed)):
        path = out / f"v{valence:+d}_a{arousal:+d}_{k:03d}.mid"
        try:
            score = decode_music(r.tokenizer, ids)
        except DecodeError as e:  # MidiTok on a sequence it cannot read
            print(f"warning: {path.name}: cannot decode ({_one_line(e)})", file=sys.stderr)
            continue
        score.dump_midi(str(path))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- evaluate
def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what scipy.stats.rankdata does by default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a, b) -> float | None:
    """Spearman's rho (ties averaged); None when either side is constant or too short.

    Args:
        a: Values.
        b: Values, paired with ``a``.

    Returns:
        rho in [-1, 1], or None.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def grid_bins(grid: int, half: int) -> list[int]:
    """``grid`` bins spread evenly over ``-half..half`` (both ends included).

    Args:
        grid: Points per axis (2 .. 2 * half + 1).
        half: The dataset's half-width h.

    Returns:
        Distinct increasing bins.
    """
    return sorted({int(round(x)) for x in np.linspace(-half, half, grid)})


def _measured_bins(info: dict, values: np.ndarray) -> np.ndarray:

    bins = 2 * half_width(info) + 1
    edges = (info.get("labels") or {}).get("binning_edges")
    if info.get("params", {}).get("binning") == "quantile" and edges:
        return np.stack(
            [
                conditioning.discretise_quantile(values[:, 0], edges["valence"], bins),
                conditioning.discretise_quantile(values[:, 1], edges["arousal"], bins),
            ],
            axis=1,
        ).astype(np.int64)
    return conditioning.discretise_uniform(values, bins).astype(np.int64)


def control_metrics(requested: np.ndarray, measured: np.ndarray, bins: np.ndarray, half: int):
    """Controllability figures for paired requested bins and measured labels.

    Args:
        requested: (n, 2) requested (valence, arousal) bins.
        measured: (n, 2) measured (valence, arousal) labels in [-1, 1].
        bins: (n, 2) measured bins.
        half: The dataset's half-width h.

    Returns:
        A dict: ``spearman_valence``, ``spearman_arousal``, ``quadrant_accuracy`` (over
        requests with both bins non-zero: the measured signs match), ``mae_bins_valence``,
        ``mae_bins_arousal``, ``normalised_l1`` (mean |requested / h - measured| / 2 over
        both axes, in [0, 1]) and ``n``.
    """
    res: dict[str, Any] = {"n": int(len(requested))}
    for axis, name in ((0, "valence"), (1, "arousal")):
        res[f"spearman_{name}"] = spearman(requested[:, axis], measured[:, axis])
        res[f"mae_bins_{name}"] = (
            float(np.abs(requested[:, axis] - bins[:, axis]).mean()) if len(bins) else None
        )
    quad = (requested[:, 0] != 0) & (requested[:, 1] != 0)
    if quad.any():
        same = np.sign(requested[quad]) == np.sign(measured[quad])
        res["quadrant_accuracy"] = float(same.all(axis=1).mean())
    else:
        res["quadrant_accuracy"] = None
    res["normalised_l1"] = (
        float((np.abs(requested / max(half, 1) - measured) / 2).mean()) if len(bins) else None
    )
    return res


def evaluate(
    run: str | Path,
    grid: int = 3,
    n_per_cell: int = 8,
    sampling: SamplingParams | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
) -> dict:
    """Controllability of a run: request moods on a grid, label what comes out.

    For each (valence, arousal) of a ``grid`` x ``grid`` grid over the dataset's bins,
    sample ``n_per_cell`` pieces, decode them, label each with varemi's own labeller
    (:func:`varemi.labelling.heuristic.label_score`) and compare requested with measured: Spearman
    rho per axis, quadrant accuracy, mean absolute bin error, normalised L1 error, and
    the fraction of generations that decode to music with notes. The same figures for
    a shuffled-prompt baseline (the requested bins permuted over the same generations)
    show the level of chance.

    Args:
        run: A finetune run folder.
        grid: Points per axis (2 .. bins).
        n_per_cell: Pieces per grid cell.
        sampling: How to sample (default: 512 new tokens, temperature 1, top-k 50).
        out: Folder for ``evaluate.json`` and ``evaluate.png`` (default: ``run``).
        quiet: No progress bar.

    Returns:
        The content of ``evaluate.json``.

    Raises:
        TrainError: ``run`` is not a finetune output, or a bad option.
    """
    from tqdm import tqdm

    s = sampling or SamplingParams(max_new_tokens=512)
    s.check()
    run = Path(run)
    out = Path(out) if out is not None else run
    meta = read_run(run)
    info = info_module.read_dataset_info(run, "RUN")
    half = half_width(info)
    if not (2 <= grid <= 2 * half + 1):
        raise TrainError(f"--grid must be in 2..{2 * half + 1} (the dataset's bins), got {grid}")
    if n_per_cell < 1:
        raise TrainError(f"--n-per-cell must be >= 1, got {n_per_cell}")
    r = _load_run(run)
    axis = grid_bins(grid, half)
    cells = [(v, a) for v in axis for a in axis]
    requested, measured, lengths = [], [], []
    attempts = 0
    bar = tqdm(cells, desc="evaluate", unit="cell", disable=quiet, file=sys.stderr)
    for c, (v, a) in enumerate(bar):
        prompt = _prompt(info, meta.get("special_tokens", {}), v, a)
        for k, ids in enumerate(_sample(r, prompt, n_per_cell, s, s.seed + c)):
            attempts += 1
            lengths.append(len(ids))
            try:
                score = decode_music(r.tokenizer, ids)
                label = label_score(score, f"v{v:+d}_a{a:+d}_{k}")
            except (DecodeError, LabelError):  # ids MidiTok cannot read, or no notes
                continue
            requested.append((v, a))
            measured.append((label.valence, label.arousal))
    req = np.array(requested, dtype=np.int64).reshape(-1, 2)
    mea = np.array(measured, dtype=np.float64).reshape(-1, 2)
    mbins = _measured_bins(info, mea) if len(mea) else np.zeros((0, 2), np.int64)
    result: dict[str, Any] = {
        "run": str(run),
        "grid": axis,
        "n_per_cell": n_per_cell,
        "sampling": asdict(s),
        "generations": attempts,
        "valid_fraction": len(req) / attempts if attempts else 0.0,
        "mean_new_tokens": float(np.mean(lengths)) if lengths else 0.0,
        "conditioned": control_metrics(req, mea, mbins, half),
    }
    rng = np.random.default_rng(s.seed)
    shuffled = req[rng.permutation(len(req))] if len(req) else req
    result["shuffled_baseline"] = control_metrics(shuffled, mea, mbins, half)
    result["cells"] = [
        {
            "valence_bin": v,
            "arousal_bin": a,
            "valid": int(sel.sum()),
            "measured_valence": float(mea[sel, 0].mean()) if sel.any() else None,
            "measured_arousal": float(mea[sel, 1].mean()) if sel.any() else None,
        }
        for v, a in cells
        for sel in [(req[:, 0] == v) & (req[:, 1] == a)]
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluate.json", result)
    result["report"] = str(out / "evaluate.json")
    result["plot"] = _heatmap(result, axis, out / "evaluate.png")
    return result


def _heatmap(result: dict, axis: list[int], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "evaluate.png skipped: matplotlib is not installed (pip install 'varemi[plot]')"
    g = len(axis)
    grids = {k: np.full((g, g), np.nan) for k in ("measured_valence", "measured_arousal")}
    for cell in result["cells"]:
        i, j = axis.index(cell["valence_bin"]), axis.index(cell["arousal_bin"])
        for k, m in grids.items():
            if cell[k] is not None:
                m[i, j] = cell[k]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (k, m) in zip(axes, grids.items(), strict=True):
        im = ax.imshow(m, origin="lower", cmap="coolwarm", vmin=-1, vmax=1)
        ax.set_xticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_yticks(range(g), [f"{b:+d}" for b in axis])
        ax.set_xlabel("requested arousal bin")
        ax.set_ylabel("requested valence bin")
        ax.set_title(k.replace("_", " "))
        for i in range(g):
            for j in range(g):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:+.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def format_evaluation(result: dict) -> str:
    """A table of :func:`evaluate`'s figures, conditioned against the shuffled baseline.

    Args:
        result: What :func:`evaluate` returned.

    Returns:
        Text to print.
    """
    c, b = result["conditioned"], result["shuffled_baseline"]
    g = len(result["grid"])
    lines = [
        f"varemi evaluate: {result['run']}  (grid {g}x{g}, bins {result['grid']}, "
        f"{result['n_per_cell']} per cell, {result['generations']} generations)",
        f"  valid fraction {result['valid_fraction']:.3f}, "
        f"mean new tokens {result['mean_new_tokens']:.0f}",
        f"  {'':22s} {'conditioned':>12s} {'shuffled':>12s}",
    ]
    for key in (
        "spearman_valence",
        "spearman_arousal",
        "quadrant_accuracy",
        "mae_bins_valence",
        "mae_bins_arousal",
        "normalised_l1",
    ):
        sign = key.startswith("spearman")
        lines.append(f"  {key:22s} {_num(c[key], sign):>12s} {_num(b[key], sign):>12s}")
    lines.append(f"  report: {result['report']}; plot: {result['plot']}")
    return "\n".join(lines)


def _num(x: float | None, sign: bool) -> str:
    return "-" if x is None else f"{x:+.3f}" if sign else f"{x:.3f}"
