"""varemi: emotion-conditioned REMI+BPE datasets for symbolic-music language models.

The pipeline is ``labels`` (valence/arousal per MIDI file), ``build`` (tokenise,
window, prefix conditioning tokens, split by file, export a Hugging Face dataset) and
``verify`` (statistics and invariants). Run it as ``python -m varemi``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varemi")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "conditioning_ids",
    "decode",
    "evaluate",
    "finetune",
    "generate",
    "load_tokenizer",
]


def __getattr__(name: str):  # lazy: importing varemi must not import MidiTok or torch
    if name in ("load_tokenizer", "conditioning_ids"):
        from varemi import vocab

        return getattr(vocab, name)
    if name in ("finetune", "generate", "evaluate", "decode"):
        from varemi import train

        return getattr(train, name)
    raise AttributeError(f"module 'varemi' has no attribute {name!r}")
