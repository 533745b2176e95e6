"""varemi: emotion-conditioned REMI+BPE datasets for symbolic-music language models.

The pipeline is ``labels`` (valence/arousal per MIDI file), ``build`` (tokenise,
window, prefix conditioning tokens, split by group, export a Hugging Face dataset) and
``verify`` (statistics and invariants), then ``finetune``, ``generate`` and
``evaluate``. Run it as ``python -m varemi``.

The package is layered (:mod:`varemi._base` -> ``core`` -> ``music`` -> ``labelling`` ->
``corpus`` -> ``dataset`` -> ``pipeline`` -> ``training`` -> ``cli``). The public
functions below are resolved on first use (PEP 562), so ``import varemi`` stays cheap
and imports neither MidiTok nor torch.
"""

from __future__ import annotations

import importlib

from varemi._base.version import __version__

_PUBLIC = {
    "load_tokenizer": "varemi.dataset.vocabulary",
    "conditioning_ids": "varemi.dataset.vocabulary",
    "finetune": "varemi.training.finetune",
    "generate": "varemi.training.generation",
    "evaluate": "varemi.training.evaluation",
    "decode": "varemi.training.generation",
    "prompt_ids": "varemi.training.generation",
    "bins_for_labels": "varemi.training.generation",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'varemi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
