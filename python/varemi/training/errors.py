"""The errors of the training layer, and the one import of its optional dependencies.

torch, transformers and accelerate (the extra ``varemi[train]``) are imported only by
:func:`require_torch`, inside the functions that need them, so ``import varemi``,
``build`` and ``verify`` never pay for them.
"""

from __future__ import annotations

from varemi._base.errors import VaremiError


class TrainError(VaremiError):
    """Bad input to ``finetune``, ``generate``, ``evaluate`` or ``serve`` (one line)."""


class MissingExtraError(TrainError):
    """torch, transformers or accelerate (or, for ``serve``, starlette or uvicorn) is missing."""


def require_torch():
    """Torch and transformers, or one clear error naming the extra.

    Returns:
        ``(torch, transformers)``.

    Raises:
        MissingExtraError: one of them is not installed.
    """
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


def require_accelerate() -> None:
    """Refuse early when ``accelerate`` (needed by ``transformers.Trainer``) is missing.

    Raises:
        MissingExtraError: it is not installed.
    """
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "finetune runs on transformers.Trainer, which needs accelerate (not installed): "
            "pip install 'varemi[train]'"
        ) from None


def one_line(error: BaseException) -> str:
    """``Type: first line`` of an exception (for an ``error:`` line).

    Args:
        error: The exception.

    Returns:
        One line.
    """
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
