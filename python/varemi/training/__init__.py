"""Fine-tuning, generation, evaluation and serving: the only layer that imports torch.

Modules, each named after what it owns: :mod:`~varemi.training.errors` (the errors and
the optional imports), :mod:`~varemi.training.run` (the run folder and ``run.json``),
:mod:`~varemi.training.model` (the model, its vocabulary, ``generation_config.json``),
:mod:`~varemi.training.data` (splits, the collator, the samplers, :func:`torch_dataset`),
:mod:`~varemi.training.finetune` (``transformers.Trainer`` with varemi's pieces),
:mod:`~varemi.training.generation` (prompts, labels to bins, sampling, decoding),
:mod:`~varemi.training.evaluation` (controllability figures) and
:mod:`~varemi.training.serve` (the HTTP service). torch, transformers and accelerate are
imported inside the functions that need them.

``varemi.training.finetune`` is the module; the function is
``varemi.training.finetune.finetune`` (and ``varemi.finetune``).
"""

from varemi.training.data import Collator, collator, torch_dataset
from varemi.training.errors import MissingExtraError, TrainError
from varemi.training.evaluation import evaluate, format_evaluation
from varemi.training.finetune import FinetuneParams, FinetuneResult
from varemi.training.generation import (
    SamplingParams,
    bins_for_labels,
    decode,
    generate,
    prompt_ids,
)

__all__ = [
    "Collator",
    "FinetuneParams",
    "FinetuneResult",
    "MissingExtraError",
    "SamplingParams",
    "TrainError",
    "bins_for_labels",
    "collator",
    "decode",
    "evaluate",
    "format_evaluation",
    "generate",
    "prompt_ids",
    "torch_dataset",
]
