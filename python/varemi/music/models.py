"""What varemi knows about the models its datasets are for (no torch needed).

``build`` uses it to warn when windows are longer than the sequences a model was
pre-trained on; ``finetune`` uses it for the default model.
"""

from __future__ import annotations

from dataclasses import dataclass

from varemi._base.options import DEFAULT_MODEL


@dataclass(frozen=True)
class ModelFacts:
    """Facts about a pre-trained model, from its config and its authors' training code.

    Attributes:
        pretrained_tokens: The longest sequence it was pre-trained on (chunks of 256-384
            tokens for Maestro-REMI-bpe20k, BOS first).
        n_positions: Its position-embedding size.
        vocab_size: Its vocabulary size (the base tokenizer's).
    """

    pretrained_tokens: int
    n_positions: int
    vocab_size: int


KNOWN_MODELS: dict[str, ModelFacts] = {
    DEFAULT_MODEL: ModelFacts(pretrained_tokens=384, n_positions=2048, vocab_size=20000),
}
"""Models whose pre-training sequence length is known, by hub id (the tokenizer's too)."""


def window_warning(tokenizer_spec: str, window_size: int) -> str | None:
    """A warning when ``--window-size`` exceeds what the tokenizer's model was trained on.

    Args:
        tokenizer_spec: ``build --tokenizer`` as given (a hub id names its model).
        window_size: ``build --window-size``.

    Returns:
        One line, or None when the window fits or the model is unknown.
    """
    facts = KNOWN_MODELS.get(str(tokenizer_spec))
    if facts is None or window_size <= facts.pretrained_tokens:
        return None
    return (
        f"--window-size {window_size} exceeds the {facts.pretrained_tokens} tokens per "
        f"sequence {tokenizer_spec} was pre-trained on: it saw later positions rarely or "
        f"never; consider --window-size {facts.pretrained_tokens} "
        f"--stride {facts.pretrained_tokens // 2} (README: fine-tuning)"
    )
