"""The model: where it comes from, its vocabulary, and what it must never sample.

``--model`` is a hub id, a local folder or ``tiny`` (a 2-layer random GPT-2 with the
dataset's vocabulary). The embeddings are extended with the conditioning tokens (new
rows at the mean of the existing ones); ``generation_config.json`` suppresses the
conditioning and special ids, so that a plain ``model.generate`` never samples them.
"""

from __future__ import annotations

from pathlib import Path

from varemi.music.tokenizer import HUB_TIMEOUT_S, SPECIAL_TOKENS, _hub_offline, _looks_like_path
from varemi.training.errors import TrainError, one_line, require_torch

TINY = "tiny"


def special_ids(tokenizer) -> dict[str, int]:
    """The special-token ids a tokenizer has (PAD, MASK, BOS, EOS, SEP).

    Args:
        tokenizer: A MidiTok tokenizer.

    Returns:
        ``{"PAD": 0, "BOS": 1, ...}`` for those it holds.
    """
    return {
        k: int(tokenizer.vocab[f"{k}_None"])
        for k in SPECIAL_TOKENS
        if f"{k}_None" in tokenizer.vocab
    }


def suppressed_ids(info: dict, special: dict[str, int]) -> list[int]:
    """Ids a generation must never sample: the conditioning and special ids but EOS.

    Args:
        info: The dataset's ``dataset_info.json``.
        special: Its special-token ids.

    Returns:
        Sorted ids.
    """
    eos = special.get("EOS")
    ids = set(int(i) for i in info["conditioning_tokens"].values()) | set(special.values())
    return sorted(i for i in ids if i != eos)


def positions(model) -> int:
    """How many positions a model has (2048 when its config does not say).

    Args:
        model: A transformers model.

    Returns:
        Its context length.
    """
    c = model.config
    return getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None) or 2048


def generation_config(model, info: dict, special: dict[str, int]):
    """The ``generation_config.json`` of a run: sampling, special ids, and what to suppress.

    Args:
        model: The fine-tuned model.
        info: The dataset's ``dataset_info.json``.
        special: Its special-token ids.

    Returns:
        A ``transformers.GenerationConfig``.
    """
    _, transformers = require_torch()
    suppress = suppressed_ids(info, special)
    return transformers.GenerationConfig(
        do_sample=True,
        top_k=50,
        max_length=positions(model),
        bos_token_id=special.get("BOS"),
        eos_token_id=special.get("EOS"),
        pad_token_id=special.get("PAD", 0),
        suppress_tokens=suppress,
        bad_words_ids=[[i] for i in suppress],
    )


def load_pretrained(spec: str, transformers):
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
            raise TrainError(f"--model {spec}: cannot load it ({one_line(e)})") from None
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
                f"cannot load model {spec!r} from the Hugging Face hub ({one_line(e)}); {hint}"
            ) from None
        return model
    try:
        return auto.from_pretrained(spec)
    except Exception as e:
        raise TrainError(f"cannot load model {spec!r}: {one_line(e)}") from None


def tiny_config(vocab_size: int, n_positions: int, special: dict[str, int]):
    """The ``tiny`` model: a 2-layer, 2-head, 64-wide GPT-2 (random weights).

    Args:
        vocab_size: The base tokenizer's vocabulary size.
        n_positions: Position embeddings (at least the longest example).
        special: Special-token ids (PAD, BOS, EOS).

    Returns:
        A ``transformers.GPT2Config``.
    """
    _, transformers = require_torch()
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


def model_for(spec: str, info: dict, special: dict[str, int], transformers, max_len: int, seed=0):
    """The starting model, checked against the dataset's vocabulary."""
    base = int(info["tokenizer"]["base_vocab_size"])
    full = int(info["tokenizer"]["vocab_size"])
    if spec == TINY:
        transformers.set_seed(seed)
        return transformers.GPT2LMHeadModel(tiny_config(base, max(max_len, 64), special))
    model = load_pretrained(spec, transformers)
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
    torch, _ = require_torch()
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
