"""Sampling from a run: prompts, labels to bins, bars, batches, decoding.

The prompt of a mood is the dataset's whole prefix (``[BOS] [VAL=v] [ARO=a]`` with
``--bos``, else ``[VAL=v] [ARO=a]``): :func:`prompt_ids`. A mood is given either as bins
(``valence_bin``/``arousal_bin``, integers in the dataset's range) or as labels in
[-1, 1] (``valence``/``arousal``, mapped with the dataset's own binning:
:func:`bins_for_labels`); the two never mix. Conditioning and special tokens are never
sampled (EOS ends a piece); ``bars`` stops a piece before its (N+1)-th bar.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from varemi._base.errors import BinsError
from varemi._base.fileio import read_json, write_json
from varemi.core import conditioning
from varemi.core.conditioning import bin_token_ids
from varemi.dataset import info as info_module
from varemi.dataset.info import bins_of, half_width, prefix_length
from varemi.dataset.vocabulary import load_tokenizer
from varemi.music.tokenizer import DecodeError, decode_music, ids_to_tokens
from varemi.training.data import unconditioned_prefix
from varemi.training.errors import TrainError, one_line, require_torch
from varemi.training.model import positions, special_ids, suppressed_ids
from varemi.training.run import check_new_folder, model_folder, read_run

if TYPE_CHECKING:
    from symusic import Score

GENERATED_FILE = "generated.json"
"""What ``generate`` wrote into ``--out``: one record per piece (bins, labels, seed, bars)."""


@dataclass
class SamplingParams:
    """How :func:`generate`, :func:`evaluate` and ``serve`` sample (``SAMPLING_OPTIONS``).

    Attributes:
        max_new_tokens: Tokens to sample at most after the prompt (capped by the model).
        temperature: Softmax temperature (> 0, finite).
        top_k: Keep the k most likely tokens (0: all).
        top_p: Nucleus sampling mass in (0, 1].
        seed: Seed of the sampling.
        guidance: Classifier-free guidance scale G: each step samples from
            ``log p(x | no mood) + G * (log p(x | mood) - log p(x | no mood))``
            (:func:`unconditioned_prompt` is the context without the mood tokens). 1 is
            plain conditioned sampling, 0 unconditioned sampling; G > 1 strengthens the
            mood, meaningfully only for a model that also saw examples without mood
            tokens (``finetune --cond-dropout``).
    """

    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0
    guidance: float = 1.0

    def check(self) -> None:
        """Refuse bad values, naming the option.

        Raises:
            TrainError: a value out of range.
        """
        if _not_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise TrainError(f"--max-new-tokens must be an integer >= 1, got {self.max_new_tokens}")
        if not (isinstance(self.temperature, numbers.Real) and 0 < self.temperature < math.inf):
            raise TrainError(f"--temperature must be > 0 and finite, got {self.temperature}")
        if _not_int(self.top_k) or self.top_k < 0:
            raise TrainError(f"--top-k must be an integer >= 0, got {self.top_k}")
        if not (isinstance(self.top_p, numbers.Real) and 0 < self.top_p <= 1):
            raise TrainError(f"--top-p must be in (0, 1], got {self.top_p}")
        if _not_int(self.seed) or not (0 <= self.seed < 2**32):
            raise TrainError(f"--seed must be in 0..2**32-1, got {self.seed}")
        if not (isinstance(self.guidance, numbers.Real) and 0 <= self.guidance < math.inf):
            raise TrainError(f"--guidance must be >= 0 and finite, got {self.guidance}")


def _not_int(x) -> bool:
    return isinstance(x, bool) or not isinstance(x, numbers.Integral)


# --------------------------------------------------------------------------- moods
def check_bin(info: dict, name: str, value) -> int:
    """A bin in the dataset's range, or one clear error naming the option.

    Args:
        info: The dataset's ``dataset_info.json``.
        name: The option (``--valence``).
        value: The bin.

    Returns:
        The bin as an int.

    Raises:
        BinsError: not an integer in ``-h..h``.
    """
    h = half_width(info)
    if _not_int(value) or abs(int(value)) > h:
        raise BinsError(
            f"{name} {value} is outside the dataset's bins {-h:+d}..{h:+d} "
            f"({2 * h + 1} bins per axis)"
        )
    return int(value)


def labels_to_bins(info: dict, values: np.ndarray) -> np.ndarray:
    """Labels in [-1, 1] to the dataset's bins, with the dataset's own binning.

    ``--binning uniform``: equal-width bins over [-1, 1]; ``quantile``: the corpus edges
    recorded in ``dataset_info.json``.

    Args:
        info: The dataset's ``dataset_info.json``.
        values: (n, 2) valence and arousal labels.

    Returns:
        (n, 2) int64 bins.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    bins = bins_of(info)
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


def check_label(name: str, value) -> float:
    """A label in [-1, 1], or one clear error naming the option.

    Args:
        name: The option (``--valence-label``).
        value: The label.

    Returns:
        The label as a float.

    Raises:
        BinsError: not a finite number in [-1, 1].
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not -1 <= value <= 1:
        raise BinsError(f"{name} must be a number in [-1, 1], got {value}")
    return float(value)


def bins_for_labels(data_or_run: str | Path | dict, valence: float, arousal: float):
    """The bins a dataset gives to labels (valence, arousal) in [-1, 1].

    Args:
        data_or_run: A dataset or run folder, or its ``dataset_info.json`` content.
        valence: Valence label in [-1, 1].
        arousal: Arousal label in [-1, 1].

    Returns:
        ``(valence_bin, arousal_bin)``.

    Raises:
        BinsError: a label outside [-1, 1].
    """
    info = data_or_run if isinstance(data_or_run, dict) else _info(data_or_run)
    v = check_label("valence", valence)
    a = check_label("arousal", arousal)
    vb, ab = labels_to_bins(info, np.array([[v, a]]))[0]
    return int(vb), int(ab)


def _info(path) -> dict:
    return info_module.read_dataset_info(Path(path), "dataset or run")


def mood_bins(info: dict, valence=None, arousal=None, valence_label=None, arousal_label=None):
    """The bins of a mood given either as bins or as labels, per axis (never both).

    Args:
        info: The dataset's ``dataset_info.json``.
        valence: Valence bin, or None.
        arousal: Arousal bin, or None.
        valence_label: Valence label in [-1, 1], or None.
        arousal_label: Arousal label in [-1, 1], or None.

    Returns:
        ``(valence_bin, arousal_bin)``.

    Raises:
        TrainError: an axis given twice or not at all.
        BinsError: a bin or label out of range.
    """
    out = []
    for axis, b, label in (
        ("valence", valence, valence_label),
        ("arousal", arousal, arousal_label),
    ):
        if b is not None and label is not None:
            raise TrainError(f"give --{axis} (a bin) or --{axis}-label (in [-1, 1]), not both")
        if b is None and label is None:
            raise TrainError(f"--{axis} (a bin) or --{axis}-label (in [-1, 1]) is required")
        if b is not None:
            out.append(check_bin(info, f"--{axis}", b))
        else:
            x = check_label(f"--{axis}-label", label)
            out.append(int(labels_to_bins(info, np.array([[x, 0.0]]))[0, 0]) if axis == "valence"
                       else int(labels_to_bins(info, np.array([[0.0, x]]))[0, 1]))  # fmt: skip
    return out[0], out[1]


def prompt_ids(data_or_run: str | Path, valence_bin: int, arousal_bin: int) -> list[int]:
    """The whole prompt of a mood: the dataset's prefix (BOS first when it has one).

    Args:
        data_or_run: A dataset or run folder.
        valence_bin: Valence bin in the dataset's range (an integer).
        arousal_bin: Arousal bin.

    Returns:
        ``[BOS, VAL, ARO]`` with ``--bos``, else ``[VAL, ARO]``.

    Raises:
        BinsError: a bin that is not an integer in range (labels in [-1, 1] go through
            :func:`bins_for_labels` first).
    """
    info = _info(data_or_run)
    v = check_bin(info, "valence_bin", valence_bin)
    a = check_bin(info, "arousal_bin", arousal_bin)
    return prefix_ids(info, info.get("special_tokens") or {}, v, a)


def prefix_ids(info: dict, special: dict[str, int], valence: int, arousal: int) -> list[int]:
    """The prefix of checked bins from a dataset's info and special ids (see :func:`prompt_ids`).

    Args:
        info: The dataset's ``dataset_info.json``.
        special: Its special-token ids.
        valence: Valence bin.
        arousal: Arousal bin.

    Returns:
        The prompt ids.
    """
    ids = [int(i) for i in bin_token_ids(info["conditioning_tokens"], valence, arousal)]
    if prefix_length(info) == 3:
        if "BOS" not in special:
            raise TrainError("the dataset has a BOS prefix but records no BOS id")
        return [int(special["BOS"])] + ids
    return ids


# --------------------------------------------------------------------------- decode
def decode(ids, data_or_run: str | Path) -> Score | list[Score]:
    """Token ids (one sequence or a batch) to scores, with the prefix stripped.

    Conditioning tokens and the special tokens (PAD, MASK, BOS, EOS, SEP) are removed
    before MidiTok decodes (it fails on them), and BPE ids are expanded.

    Args:
        ids: One sequence (ints, a 1-D tensor or array) or a batch (a list of sequences,
            a 2-D tensor or array, e.g. what ``model.generate`` returns).
        data_or_run: A dataset folder or a finetune run folder (its tokenizer is used).

    Returns:
        A :class:`symusic.Score` for one sequence, a list of them for a batch.

    Raises:
        DecodeError: MidiTok cannot decode a sequence.
    """
    tokenizer = load_tokenizer(Path(data_or_run))
    rows = ids.tolist() if hasattr(ids, "tolist") else ids
    if isinstance(rows, numbers.Integral):
        rows = [rows]
    rows = list(rows)
    if rows and not isinstance(rows[0], numbers.Integral):
        return [decode_music(tokenizer, [int(i) for i in r]) for r in rows]
    return decode_music(tokenizer, [int(i) for i in rows])


# --------------------------------------------------------------------------- the model
@dataclass
class Loaded:
    """A run loaded for sampling: model, tokenizer, facts, and bars per id."""

    model: Any
    tokenizer: Any
    info: dict
    meta: dict
    device: Any
    torch: Any
    special: dict
    suppress: list
    bars_per_id: np.ndarray


def resolve_device(device: str, torch) -> str:
    """``auto``, ``cpu`` or ``cuda`` to a torch device name, or one clear error.

    Args:
        device: What the user asked for.
        torch: The torch module.

    Returns:
        ``cpu`` or ``cuda``.

    Raises:
        TrainError: an unknown device, or ``cuda`` without one.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


def bars_per_id(tokenizer) -> np.ndarray:
    """How many ``Bar`` tokens each id stands for (BPE ids may hold several).

    Args:
        tokenizer: The dataset's tokenizer.

    Returns:
        An int array over the vocabulary.
    """
    n = len(tokenizer)
    sep = int(tokenizer.vocab.get("PAD_None", 0))
    ids = [i for i in range(n) if i != sep]
    seq = [x for i in ids for x in (i, sep)]  # PAD between ids: split the expansions there
    counts = np.zeros(n, dtype=np.int64)
    k, current = 0, 0
    for t in ids_to_tokens(tokenizer, seq):
        if t == "PAD_None":
            counts[ids[k]] = current
            k, current = k + 1, 0
        elif t == "Bar_None":
            current += 1
    return counts


def load_run(run: str | Path, device: str = "auto", allow_unfinished: bool = False) -> Loaded:
    """Load a run's model (once) for sampling.

    Args:
        run: A finetune run folder.
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Accept a run whose training did not finish.

    Returns:
        The loaded run.
    """
    run = Path(run)
    meta = read_run(run, allow_unfinished=allow_unfinished)
    torch, transformers = require_torch()
    dev = resolve_device(device, torch)
    info = info_module.read_dataset_info(run, "RUN")
    tokenizer = load_tokenizer(run)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_folder(run)).to(dev).eval()
    special = meta.get("special_tokens") or special_ids(tokenizer)
    return Loaded(
        model, tokenizer, info, meta, dev, torch, special, suppressed_ids(info, special),
        bars_per_id(tokenizer),
    )  # fmt: skip


def _bar_stop(transformers, torch, counts: np.ndarray, start: int, bars: int):
    table = torch.as_tensor(counts)

    class StopAfterBars(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            seen = table.to(input_ids.device)[input_ids[:, start:]].sum(dim=1)
            return seen > bars

    return StopAfterBars()


def sample(
    r: Loaded,
    prompt: list[int],
    n: int,
    s: SamplingParams,
    seed: int,
    bars: int | None = None,
    batch_size: int | None = None,
) -> list[list[int]]:
    """``n`` sampled continuations of ``prompt`` (prompt stripped), in batches.

    With ``s.guidance`` G other than 1, classifier-free guidance contrasts ``prompt``
    with :func:`~varemi.training.data.unconditioned_prefix` (``[BOS]``) at every step:
    transformers' own ``guidance_scale`` with ``negative_prompt_ids`` (its
    ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, which runs the unconditioned
    context beside the batch with its own cache), before temperature, top-k and top-p.
    G = 0 samples from the unconditioned prompt itself (the same distribution, half the
    work).

    Args:
        r: The loaded run.
        prompt: The prompt ids.
        n: How many.
        s: How to sample.
        seed: The seed of the first batch (the k-th batch uses ``seed + k``).
        bars: Stop each piece before its (bars + 1)-th bar.
        batch_size: Pieces sampled together (default: all n).

    Returns:
        The new ids of every piece (EOS and what follows removed).
    """
    torch = r.torch
    _, transformers = require_torch()
    guidance: dict = {}
    if s.guidance == 0:
        prompt = unconditioned_prefix(r.special)
    elif s.guidance != 1:
        guidance = {"guidance_scale": float(s.guidance)}
        negative = unconditioned_prefix(r.special)
    new = min(s.max_new_tokens, positions(r.model) - len(prompt))
    eos = r.special.get("EOS")
    pad = r.special.get("PAD", 0)
    out: list[list[int]] = []
    size = batch_size or n
    for k, start in enumerate(range(0, n, size)):
        m = min(size, n - start)
        torch.manual_seed(seed + k)
        ids = torch.tensor([prompt] * m, device=r.device)
        stop = None
        if guidance:
            guidance["negative_prompt_ids"] = torch.tensor([negative] * m, device=r.device)
        if bars is not None:
            stop = [_bar_stop(transformers, torch, r.bars_per_id, len(prompt), bars)]
        with torch.no_grad():
            gen = r.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                max_new_tokens=new,
                temperature=s.temperature,
                top_k=s.top_k or None,
                top_p=s.top_p,
                suppress_tokens=r.suppress,
                pad_token_id=pad,
                eos_token_id=eos,
                stopping_criteria=stop,
                **guidance,
            )
        for row in gen[:, len(prompt) :].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            if bars is not None:
                seen = np.cumsum(r.bars_per_id[np.asarray(row, dtype=np.int64)]) if row else []
                over = np.nonzero(np.asarray(seen) > bars)[0]
                if len(over):
                    row = row[: int(over[0])]
            while row and row[-1] == pad:
                row.pop()
            out.append(row)
    return out


# --------------------------------------------------------------------------- generate
def generate(
    run: str | Path,
    valence: int | None = None,
    arousal: int | None = None,
    out: str | Path | None = None,
    n: int = 4,
    sampling: SamplingParams | None = None,
    *,
    valence_label: float | None = None,
    arousal_label: float | None = None,
    bars: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    allow_unfinished: bool = False,
) -> list[Path]:
    """Sample ``n`` pieces of a mood from a fine-tuned run and write them as MIDI files.

    The mood is bins (``valence``, ``arousal``) or labels in [-1, 1] (``valence_label``,
    ``arousal_label``, mapped with the dataset's binning), per axis one or the other.
    Files are named ``v+3_a-2_000.mid``, numbered after the pieces already in ``out``;
    ``out/generated.json`` records each piece's bins, labels, seed and length.

    Args:
        run: A finetune run folder.
        valence: Valence bin in the dataset's range (``-4..4`` for 9 bins).
        arousal: Arousal bin.
        out: Folder to write the MIDI files into (created).
        n: How many pieces.
        sampling: How to sample (defaults: 1024 new tokens, temperature 1, top-k 50).
        valence_label: Valence in [-1, 1] instead of ``valence``.
        arousal_label: Arousal in [-1, 1] instead of ``arousal``.
        bars: Stop each piece after this many bars.
        batch_size: Pieces sampled together (default: n).
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Sample from a run whose training did not finish.

    Returns:
        The MIDI files written.

    Raises:
        TrainError: ``run`` is not a finished finetune output, or a bad option.
        BinsError: a bin or label outside the dataset's range.
    """
    s = sampling or SamplingParams()
    s.check()
    for name, value, low in (("--n", n, 1), ("--bars", bars, 1), ("--batch-size", batch_size, 1)):
        if value is not None and (_not_int(value) or value < low):
            raise TrainError(f"{name} must be an integer >= {low}, got {value}")
    if out is None or str(out) == "":
        raise TrainError("--out is empty; give a path (. for the current folder)")
    run, out = Path(run), Path(out)
    check_new_folder(out, "--out")
    meta = read_run(run, allow_unfinished=allow_unfinished)
    info = info_module.read_dataset_info(run, "RUN")
    vb, ab = mood_bins(info, valence, arousal, valence_label, arousal_label)
    torch, _ = require_torch()
    resolve_device(device, torch)
    r = load_run(run, device, allow_unfinished)
    prompt = prefix_ids(info, meta.get("special_tokens") or r.special, vb, ab)
    stem = f"v{vb:+d}_a{ab:+d}_"
    taken = [
        int(p.stem[len(stem) :]) for p in out.glob(f"{stem}*.mid") if p.stem[len(stem) :].isdigit()
    ]
    first = max(taken, default=-1) + 1
    t0 = time.perf_counter()
    pieces = sample(r, prompt, n, s, s.seed, bars=bars, batch_size=batch_size)
    elapsed = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    paths, records = [], []
    for k, ids in enumerate(pieces):
        path = out / f"{stem}{first + k:03d}.mid"
        try:
            score = decode_music(r.tokenizer, ids)
        except DecodeError as e:  # MidiTok on a sequence it cannot read
            print(
                f"warning: {path.name}: cannot decode ({one_line(e)}); not written", file=sys.stderr
            )
            continue
        if score.note_num() == 0:
            print(f"warning: {path.name}: the piece has no notes", file=sys.stderr)
        score.dump_midi(str(path))
        paths.append(path)
        records.append(
            {
                "file": path.name,
                "valence_bin": vb,
                "arousal_bin": ab,
                "valence_label": valence_label,
                "arousal_label": arousal_label,
                "seed": s.seed,
                "new_tokens": len(ids),
                "notes": int(score.note_num()),
                "bars": bars,
            }
        )
    previous = []
    try:
        previous = read_json(out / GENERATED_FILE).get("pieces", [])
    except (OSError, ValueError, AttributeError):
        pass
    write_json(
        out / GENERATED_FILE,
        {"run": str(run), "sampling": vars(s), "seconds": round(elapsed, 3),
         "pieces": previous + records},
    )  # fmt: skip
    return paths
