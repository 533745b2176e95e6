"""``finetune``: a varemi dataset to a mood-conditioned model, on ``transformers.Trainer``.

varemi plugs its own pieces into ``Trainer``: the collator (labels -100 on padding and on
the prefix), the length-grouped (optionally bin-balanced) batch sampler, validation with
the loss per valence x arousal bin, early stopping on the val loss and the best model
kept (``load_best_model_at_end``), ``training_log.csv`` and ``loss.png``. Everything
else is ``Trainer``'s: AdamW with linear warm-up and decay, mixed precision, gradient
checkpointing, ``report_to``, checkpoint rotation and ``--resume``, and data-parallel
training under ``accelerate launch -m varemi finetune`` or ``torchrun -m varemi finetune``
(each process takes whole batches, round robin; validation runs on every process over
the same ``--max-eval-examples`` val examples).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from varemi._base.fileio import read_json, write_json
from varemi._base.options import PRESETS
from varemi.dataset import info as info_module
from varemi.dataset.info import prefix_length
from varemi.dataset.vocabulary import load_tokenizer
from varemi.music.models import DEFAULT_MODEL
from varemi.training.data import (
    Collator,
    LengthGroupedBatchSampler,
    read_splits,
    unconditioned_prefix,
    validate,
    validation_rows,
)
from varemi.training.errors import TrainError, require_accelerate, require_torch
from varemi.training.model import extend_embeddings, generation_config, model_for, special_ids
from varemi.training.run import (
    CHECKPOINTS,
    RUN_FILE,
    check_new_folder,
    last_checkpoint,
    make_readable,
    read_run_json,
    write_run_json,
)

RESUME_OVERRIDES = ("epochs", "max_steps", "eval_steps", "patience")
"""Options a ``--resume`` may change (to train longer); the rest come from the run."""
RESUME_FREE = ("resume", "quiet", "device", "out", "overwrite", "report_to", "save_total_limit")
"""Options that do not change what is trained: a ``--resume`` takes them as given."""


@dataclass
class FinetuneParams:
    """Every ``finetune`` option (dashes as underscores; declared in ``FINETUNE_OPTIONS``).

    Attributes:
        data: The dataset folder (``varemi build --out``); None on ``resume`` (the run's).
        out: The run folder to write.
        model: Hub id, local model folder, or ``tiny``.
        epochs: Passes over ``train`` (None: 3, or the run's on ``--resume``).
        max_steps: Optimizer steps; overrides ``epochs`` when given.
        lr: Peak learning rate (AdamW, weight decay 0.01, gradients clipped at 1).
        batch_size: Examples per micro-batch and device.
        grad_accum: Micro-batches per optimizer step.
        warmup: Linear warm-up steps; then linear decay to 0.
        seed: Seed of the data order, dropout and the ``tiny`` model's random weights.
        eval_steps: Validate and checkpoint every this many optimizer steps (None: 200).
        patience: Stop after this many validations without a better val loss (None: 3;
            0 never stops early).
        max_eval_examples: Validate on at most this many ``val`` examples (evenly spread).
        balance_bins: Sample ``train`` evenly over the valence x arousal bins present.
        cond_dropout: Fraction of training examples whose mood tokens are dropped
            (``[BOS] music``), the unconditioned side of ``--guidance``.
        gradient_checkpointing: Recompute activations in the backward pass.
        report_to: ``none``, ``tensorboard`` or ``wandb``.
        save_total_limit: Checkpoints kept in ``out/checkpoints`` (the best one too).
        resume: Continue the run in ``out`` from its last checkpoint.
        overwrite: Replace ``out`` if it holds a previous run.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        quiet: No progress bar or summary.
        preset: The ``--preset`` the options came from (recorded; see
            :func:`varemi._base.options.preset_values`).
    """

    data: Path | None
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
    cond_dropout: float = 0.0
    gradient_checkpointing: bool = False
    report_to: str = "none"
    save_total_limit: int = 2
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    quiet: bool = False
    preset: str | None = None


_DEFAULTS = {"epochs": 3.0, "eval_steps": 200, "patience": 3}
LOG_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "conditioning_gain", "elapsed_s")


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


def check_finetune_params(p: FinetuneParams) -> None:
    """Refuse bad values, naming the option.

    Args:
        p: The options.

    Raises:
        TrainError: a value out of range.
    """
    finite = [("--epochs", p.epochs), ("--lr", p.lr), ("--cond-dropout", p.cond_dropout)]
    for name, value in finite:
        if value is not None and not math.isfinite(value):
            raise TrainError(f"{name} must be finite, got {value}")
    checks = [
        ("--epochs", p.epochs, p.epochs is None or p.epochs > 0, "> 0"),
        ("--max-steps", p.max_steps, p.max_steps is None or p.max_steps >= 1, ">= 1"),
        ("--lr", p.lr, p.lr > 0, "> 0"),
        ("--batch-size", p.batch_size, p.batch_size >= 1, ">= 1"),
        ("--grad-accum", p.grad_accum, p.grad_accum >= 1, ">= 1"),
        ("--warmup", p.warmup, p.warmup >= 0, ">= 0"),
        ("--eval-steps", p.eval_steps, p.eval_steps is None or p.eval_steps >= 1, ">= 1"),
        ("--patience", p.patience, p.patience is None or p.patience >= 0, ">= 0"),
        ("--max-eval-examples", p.max_eval_examples, p.max_eval_examples >= 1, ">= 1"),
        ("--seed", p.seed, 0 <= p.seed < 2**32, "in 0..2**32-1"),
        ("--save-total-limit", p.save_total_limit, p.save_total_limit >= 1, ">= 1"),
        ("--cond-dropout", p.cond_dropout, 0 <= p.cond_dropout < 1, "in [0, 1)"),
    ]
    for name, value, ok, want in checks:
        if not ok:
            raise TrainError(f"{name} must be {want}, got {value}")
    if p.device not in ("auto", "cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {p.device!r}")
    if p.report_to not in ("none", "tensorboard", "wandb"):
        raise TrainError(f"--report-to must be none, tensorboard or wandb, got {p.report_to!r}")
    if p.preset is not None and p.preset not in PRESETS:
        raise TrainError(f"--preset must be one of {', '.join(PRESETS)}, got {p.preset!r}")
    if p.resume and p.overwrite:
        raise TrainError("--resume and --overwrite cannot be used together")
    if str(p.out) == "" or (p.data is not None and str(p.data) == ""):
        raise TrainError("a path is empty; give a path (. for the current folder)")


def _check_out(p: FinetuneParams) -> dict | None:
    """Refuse an output folder that would lose work; the stored run when resuming."""
    out = p.out
    if p.resume:
        meta = read_run_json(out)
        if meta is None or last_checkpoint(out) is None:
            raise TrainError(
                f"--resume: --out {out} holds no finetune checkpoint to resume"
                + (" (it was stopped before its first one)" if meta is not None else "")
            )
        return meta
    check_new_folder(out, "--out")
    if out.exists() and any(out.iterdir()):
        if not (out / RUN_FILE).is_file():
            raise TrainError(
                f"--out {out} is a non-empty folder that is not a varemi run: "
                "choose a new or empty folder"
            )
        if not p.overwrite:
            hint = "pass --resume to continue it or " if last_checkpoint(out) else ""
            raise TrainError(
                f"--out {out} already holds a run; {hint}pass --overwrite to replace it"
            )
    return None


def _merge_resume(p: FinetuneParams, stored: dict) -> FinetuneParams:
    """The run's own options, with what a resume may change; refuse the rest, named."""
    defaults = {f.name: f.default for f in fields(FinetuneParams)}
    params = stored.get("params", {})
    refused = []
    if p.data is not None and Path(p.data).resolve() != Path(stored["data"]).resolve():
        refused.append(f"DATA {p.data} (the run's is {stored['data']})")
    for f in fields(p):
        k = f.name
        if k in RESUME_OVERRIDES or k in RESUME_FREE or k == "data" or k not in params:
            continue
        given = getattr(p, k)
        if given != defaults[k] and given != params[k]:
            refused.append(f"--{k.replace('_', '-')} {given} (the run's is {params[k]})")
    if refused:
        raise TrainError(
            "--resume cannot change what is trained: "
            + "; ".join(refused)
            + "; only --epochs, --max-steps, --eval-steps and --patience may change "
            "(or start a new run with another --out)"
        )
    given = {k: getattr(p, k) for k in RESUME_OVERRIDES}
    for k, v in params.items():
        if k in defaults and k not in RESUME_FREE:
            setattr(p, k, v if k not in given or given[k] is None else given[k])
    p.data = Path(stored["data"])
    return p


def _world() -> tuple[int, int]:
    """(rank, world size) as ``torchrun`` or ``accelerate launch`` set them."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _warn(text: str) -> None:
    if _world()[0] == 0:
        print(f"warning: {text}", file=sys.stderr)


def _after_checkpoint(step: int) -> None:
    """Called after every checkpoint is written (a hook for tests)."""


def _trainer_classes(transformers, torch):
    """The ``Trainer`` subclass and the callback, built once transformers is imported."""
    from torch.utils.data import DataLoader

    class VaremiTrainer(transformers.Trainer):
        """``Trainer`` with varemi's batch sampler and its per-bin validation."""

        def __init__(
            self, *a, varemi_val=None, varemi_rows=None, varemi_sampler=None,
            varemi_collate=None, **kw,
        ):  # fmt: skip
            super().__init__(*a, **kw)
            self.varemi_val, self.varemi_rows = varemi_val, varemi_rows
            self.varemi_collate = varemi_collate  # validation never drops the mood tokens
            self.varemi_sampler = varemi_sampler
            self.varemi_per_bin: dict = {}
            self.varemi_started = time.perf_counter()
            self.varemi_elapsed_base = 0.0

        def get_train_dataloader(self):
            loader = DataLoader(
                self.train_dataset,
                batch_sampler=self.varemi_sampler,
                collate_fn=self.data_collator,
                num_workers=0,
            )
            return self.accelerator.prepare(loader)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            with self.accelerator.autocast():
                loss, per_bin, gain = validate(
                    self.model,
                    self.varemi_val,
                    self.varemi_rows,
                    self.varemi_collate,
                    self.args.per_device_eval_batch_size,
                    self.args.device,
                    resamples=0,
                )
            self.varemi_per_bin = per_bin
            elapsed = self.varemi_elapsed_base + time.perf_counter() - self.varemi_started
            metrics = {
                f"{metric_key_prefix}_loss": loss,
                f"{metric_key_prefix}_conditioning_gain": gain["nats_per_token"],
                "elapsed_s": round(elapsed, 2),
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(
                self.args, self.state, self.control, metrics
            )
            return metrics

    class Hooks(transformers.TrainerCallback):
        """Logs at the last step; the checkpoint hook."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_log = True
            return control

        def on_save(self, args, state, control, **kw):
            _after_checkpoint(state.global_step)
            return control

    return VaremiTrainer, Hooks


def _precision(p: FinetuneParams, torch) -> tuple[str, str | None]:
    """(device, precision): bf16 on a GPU that has it, else fp16; fp32 on CPU."""
    cuda = torch.cuda.is_available()
    if p.device == "cuda" and not cuda:
        raise TrainError("--device cuda: no CUDA device is available")
    if p.device == "cuda" or (p.device == "auto" and cuda):
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "cpu", None


def _check_report_to(report_to: str) -> None:
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(report_to)
    if module is None:
        return
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TrainError(
            f"--report-to {report_to} needs the {module} package: pip install {module}"
        )


def finetune(p: FinetuneParams) -> FinetuneResult:
    """Fine-tune a model on a varemi dataset with ``transformers.Trainer``; write ``p.out``.

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
            lost. ``MissingExtraError`` when torch, transformers or accelerate is missing.
    """
    p = dataclasses.replace(
        p, data=None if p.data is None else Path(p.data), out=Path(p.out)
    )  # the caller's stays as it was
    check_finetune_params(p)
    if not p.resume:
        if p.data is None:
            raise TrainError("DATA is required (the dataset folder written by build)")
        info_module.read_dataset_info(p.data)  # a bad DATA is named before anything else
    stored = _check_out(p)
    if stored is not None:
        p = _merge_resume(p, stored)
    for k, v in _DEFAULTS.items():
        if getattr(p, k) is None:
            setattr(p, k, v)
    _check_report_to(p.report_to)
    info = info_module.read_dataset_info(p.data, "DATA" if stored is None else "the run's dataset")
    info_module.tokenizer_sizes(info, p.data)
    torch, transformers = require_torch()
    require_accelerate()
    rank, world = _world()
    device, precision = _precision(p, torch)

    tokenizer = load_tokenizer(p.data)
    special = special_ids(tokenizer)
    prefix = prefix_length(info)
    max_len = int(info["params"]["window_size"]) + prefix
    splits = read_splits(p.data, info)
    train, val = splits["train"], splits["val"]
    if len(train) == 0:
        raise TrainError(f"DATA {p.data} has no training examples")
    if len(val) == 0:
        _warn(
            f"DATA {p.data} has an empty val split: no validation, no early stopping, "
            "and the last model (not the best) is kept; rebuild with a smaller --train-split"
        )
    out, ckpt_dir = p.out, p.out / CHECKPOINTS
    resume_from = last_checkpoint(out) if stored is not None else None
    if resume_from is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(resume_from)
    else:
        model = model_for(p.model, info, special, transformers, max_len, p.seed)
        extend_embeddings(model, len(tokenizer))
    model.config.pad_token_id = special.get("PAD", 0)
    for name in ("bos", "eos"):
        if name.upper() in special:
            setattr(model.config, f"{name}_token_id", special[name.upper()])
    model.generation_config = generation_config(model, info, special)

    sampler = LengthGroupedBatchSampler(
        train.lengths, train.bins, p.batch_size, p.seed, p.balance_bins
    )
    per_epoch = -(-len(sampler) // world)  # batches per process and epoch
    updates_per_epoch = max(1, per_epoch // p.grad_accum)
    total = p.max_steps or max(1, math.ceil(p.epochs * updates_per_epoch))
    if p.warmup >= total:
        _warn(
            f"--warmup {p.warmup} >= the {total} training steps: the learning rate never "
            f"reaches --lr {p.lr} (it peaks at {p.lr * total / max(p.warmup, 1):.3g})"
        )
    rows = validation_rows(len(val), p.max_eval_examples)

    validating = len(rows) > 0
    options = dict(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        warmup_steps=p.warmup,
        num_train_epochs=p.epochs,
        max_steps=p.max_steps or -1,
        eval_strategy="steps" if validating else "no",
        eval_steps=p.eval_steps,
        eval_on_start=validating and resume_from is None,
        save_strategy="steps",
        save_steps=p.eval_steps,
        save_total_limit=p.save_total_limit,
        load_best_model_at_end=validating,
        metric_for_best_model="eval_loss" if validating else None,
        greater_is_better=False,
        logging_strategy="steps",
        logging_steps=p.eval_steps,
        report_to=[] if p.report_to == "none" else [p.report_to],
        logging_dir=str(out / "logs"),
        seed=p.seed,
        data_seed=p.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=p.quiet or rank != 0,
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    known = inspect.signature(transformers.TrainingArguments.__init__).parameters
    if p.gradient_checkpointing:  # renamed in transformers 5
        name = "activation_checkpointing" if "activation_checkpointing" in known else None
        options[name or "gradient_checkpointing"] = True
    args = transformers.TrainingArguments(**{k: v for k, v in options.items() if k in known})
    trainer_cls, hooks = _trainer_classes(transformers, torch)
    callbacks = [hooks()]
    if validating and p.patience:
        callbacks.append(transformers.EarlyStoppingCallback(early_stopping_patience=p.patience))
    transformers.set_seed(p.seed)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val if validating else None,
        data_collator=Collator(
            pad=special.get("PAD", 0),
            prefix=prefix,
            cond_dropout=p.cond_dropout,
            unconditioned=tuple(unconditioned_prefix(special)) if p.cond_dropout else (),
            seed=p.seed,
        ),  # fmt: skip
        callbacks=callbacks,
        varemi_collate=Collator(pad=special.get("PAD", 0), prefix=prefix),
        varemi_val=val,
        varemi_rows=rows,
        varemi_sampler=sampler,
    )
    if rank == 0 and stored is None:
        if out.exists() and any(out.iterdir()):  # a previous run, and --overwrite was given
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p.data / "tokenizer.json", out / "tokenizer.json")
        shutil.copyfile(p.data / "dataset_info.json", out / "dataset_info.json")
    if p.quiet or rank != 0:  # no progress bar, no printed log dicts
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
    if resume_from is not None:
        history = read_json(resume_from / "trainer_state.json").get("log_history", [])
        trainer.varemi_elapsed_base = max([r.get("elapsed_s", 0.0) for r in history] or [0.0])
    meta = {
        **(stored or {}),
        "varemi_run": 2,
        "trainer": f"transformers.Trainer (transformers {transformers.__version__})",
        "data": str(p.data.resolve()),
        "model": p.model,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(p).items()},
        "prefix": prefix,
        "special_tokens": special,
        "device": str(args.device),
        "precision": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32"),
        "parameters": sum(t.numel() for t in model.parameters()),
        "world_size": world,
        "per_device_batch": p.batch_size,
        "global_batch": p.batch_size * p.grad_accum * world,
        "total_steps": total,
        "status": "running",
    }
    for k in ("overwrite", "resume", "data", "out", "quiet"):
        meta["params"].pop(k)
    if rank == 0:
        write_run_json(out, meta)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        if rank == 0 and out.is_dir():
            write_run_json(out, {**meta, "status": "interrupted"})
        raise
    state = trainer.state
    best_val = state.best_metric if validating else None
    best_step = state.global_step
    if validating and state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
    if state.global_step < total:
        stopped = "early_stopping"
    else:
        stopped = "max_steps" if p.max_steps else "epochs"
    per_bin: dict = {}
    if validating:  # the kept (best) model's figures per bin
        _, per_bin, _ = validate(trainer.model, val, rows, trainer.varemi_collate,
                                 p.batch_size, args.device, resamples=0)  # fmt: skip
    log = _log_rows(state.log_history)
    if trainer.is_world_process_zero():
        trainer.model.generation_config = model.generation_config
        trainer.save_model(str(out))
        note = _write_log(out, log, per_bin)
        meta.update(
            status="done", stopped=stopped, steps=state.global_step, best_step=best_step,
            best_val_loss=best_val,
        )  # fmt: skip
        write_run_json(out, meta)
        make_readable(out)
        if not p.quiet:
            print(
                f"varemi finetune: {out}\n  {state.global_step} steps ({stopped}, {world} "
                f"process{'es' if world > 1 else ''}, global batch {meta['global_batch']}); "
                f"best val loss {_fmt(best_val)} at step {best_step} (saved)"
                + (f"\n  {note}" if note else "")
                + f"\n  next: python -m varemi generate {out} --valence 3 --arousal 3 --out DIR",
                file=sys.stderr,
            )
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(out, best_step, best_val, state.global_step, stopped, log)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _log_rows(history: list[dict]) -> list[dict]:
    """``training_log.csv`` rows from ``Trainer``'s log history: one per validation."""
    train_loss, lr, rows = None, 0.0, []
    for r in history:
        if "loss" in r:
            train_loss, lr = r["loss"], r.get("learning_rate", lr)
        if "eval_loss" in r:
            rows.append(
                {
                    "step": int(r["step"]),
                    "epoch": round(float(r.get("epoch", 0.0)), 4),
                    "lr": lr if r["step"] else 0.0,
                    "train_loss": train_loss if r["step"] else None,
                    "val_loss": r["eval_loss"],
                    "conditioning_gain": r.get("eval_conditioning_gain"),
                    "elapsed_s": r.get("elapsed_s"),
                }
            )
            train_loss = None
    if history and "loss" in history[-1] and train_loss is not None:  # no validation
        r = history[-1]
        epoch = round(float(r.get("epoch", 0.0)), 4)
        rows.append(
            {"step": int(r["step"]), "epoch": epoch, "lr": lr, "train_loss": train_loss,
             "val_loss": None, "conditioning_gain": None, "elapsed_s": None}
        )  # fmt: skip
    return rows


def _write_log(out: Path, log: list[dict], per_bin: dict) -> str | None:
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
            f,
            fieldnames=[
                "valence_bin",
                "arousal_bin",
                "examples",
                "tokens",
                "loss",
                "conditioning_gain",
            ],  # fmt: skip
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
    if tr or va:  # a run with no logged loss yet has nothing to name
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return None
