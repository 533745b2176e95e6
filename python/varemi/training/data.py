"""A varemi dataset as training data: splits, the collator, the samplers, a torch dataset.

For people with their own training code: :func:`torch_dataset` gives a split as a
map-style dataset (items ``{"input_ids", "valence_bin", "arousal_bin"}``) and
:func:`collator` the matching collator (padding with PAD, labels -100 on padding and on
the prefix: BOS and the two conditioning tokens; the model is told the mood, never asked
to guess it). Both read the dataset as ``build`` wrote it (``--format arrow`` or
``parquet``).

:class:`LengthGroupedBatchSampler` gives one epoch's micro-batches grouped by length
(sorted within chunks of 50 batches, then shuffled), optionally drawn evenly over the
valence x arousal bins (``--balance-bins``), reproducibly from (seed, epoch); under
``accelerate`` or ``torchrun`` each process takes every world-size-th batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varemi.dataset import info as info_module
from varemi.dataset.info import prefix_length
from varemi.dataset.verify import load_splits
from varemi.dataset.vocabulary import load_tokenizer
from varemi.training.errors import TrainError, one_line, require_torch
from varemi.training.model import special_ids

SPLITS = ("train", "val")


def _flat_ids(split) -> tuple[np.ndarray, np.ndarray]:
    """A split's ``input_ids`` as flat int64 values and offsets (no Python list per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = split.data.table if hasattr(split.data, "table") else split.data
    col = table.column("input_ids")
    col = col.combine_chunks() if col.num_chunks else pa.array([], pa.list_(pa.int32()))
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return values, offsets


@dataclass
class Split:
    """One split in flat arrays: ``input_ids`` values and offsets, and the bins per example.

    A map-style dataset (``len``, ``split[i]``) that torch's ``DataLoader`` and
    ``transformers.Trainer`` accept as it is.
    """

    values: np.ndarray
    offsets: np.ndarray
    vbin: np.ndarray
    abin: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """The length of every example."""
        return np.diff(self.offsets)

    @property
    def bins(self) -> np.ndarray:
        """One integer per (valence bin, arousal bin) pair, for the balanced sampler."""
        return self.vbin * 1000 + self.abin

    def row(self, i: int) -> np.ndarray:
        """The ``input_ids`` of example ``i``."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return {
            "input_ids": self.row(i).tolist(),
            "valence_bin": int(self.vbin[i]),
            "arousal_bin": int(self.abin[i]),
        }


def split_of(ds) -> Split:
    """A ``datasets.Dataset`` of varemi examples as a :class:`Split`.

    Args:
        ds: One split of a varemi dataset.

    Returns:
        The split in flat arrays.
    """
    values, offsets = _flat_ids(ds)
    t = ds.data.table if hasattr(ds.data, "table") else ds.data
    return Split(
        values,
        offsets,
        t.column("valence_bin").to_numpy().astype(np.int64),
        t.column("arousal_bin").to_numpy().astype(np.int64),
    )


def read_splits(data: Path, info: dict) -> dict[str, Split]:
    """Both splits of a dataset, whichever ``--format`` it was built with.

    Args:
        data: The dataset folder.
        info: Its ``dataset_info.json``.

    Returns:
        ``{"train": Split, "val": Split}``.

    Raises:
        TrainError: the splits cannot be read.
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        dd = load_splits(Path(data), info)
    except Exception as e:  # noqa: BLE001 - a damaged or partial dataset: one line
        raise TrainError(f"DATA {data}: cannot read its splits ({one_line(e)})") from None
    return {name: split_of(dd[name]) for name in SPLITS}


def torch_dataset(data: str | Path, split: str = "train") -> Split:
    """One split of a varemi dataset as a map-style dataset for torch or ``Trainer``.

    Args:
        data: The dataset folder (``varemi build --out``) or a run folder's dataset.
        split: ``train`` or ``val``.

    Returns:
        A :class:`Split`: ``len(ds)``, ``ds[i]`` is ``{"input_ids": [...],
        "valence_bin": v, "arousal_bin": a}``.

    Raises:
        TrainError: an unknown split.
        DatasetInfoError: ``data`` is not a varemi dataset.
    """
    if split not in SPLITS:
        raise TrainError(f"split must be one of {SPLITS}, got {split!r}")
    info = info_module.read_dataset_info(data)
    return read_splits(Path(data), info)[split]


def unconditioned_prefix(special: dict[str, int]) -> list[int]:
    """The prefix of an example or prompt without its mood tokens: ``[BOS]``.

    Condition dropout (``finetune --cond-dropout``) trains on ``[BOS] music`` in place of
    ``[BOS] [VAL] [ARO] music``, and guidance (``--guidance``) contrasts the prompt with
    ``[BOS]``. A dataset built without ``--bos`` gets ``[BOS]`` too: a causal model
    needs one token to start from, and the pre-trained model saw BOS first.

    Args:
        special: The special-token ids (``PAD``, ``BOS``, ``EOS``).

    Returns:
        ``[BOS]``.

    Raises:
        TrainError: the tokenizer has no BOS token.
    """
    if "BOS" not in special:
        raise TrainError(
            "the tokenizer has no BOS token: condition dropout and guidance need one to "
            "start the context without mood tokens"
        )
    return [int(special["BOS"])]


@dataclass
class Collator:
    """Pads a list of examples into ``input_ids``, ``attention_mask`` and ``labels`` tensors.

    Labels are -100 on padding and on the first ``prefix`` ids (BOS and the conditioning
    tokens). Examples are dicts with ``input_ids`` (extra keys are ignored) or id sequences.

    With ``cond_dropout`` P > 0 (training only), each example independently loses its
    prefix with probability P and starts with ``unconditioned`` (``[BOS]``) instead, so
    that the model also learns the music without a mood: the unconditioned side of
    classifier-free guidance. The draws come from ``seed`` and advance with every batch.

    Attributes:
        pad: The PAD id.
        prefix: How many ids precede the music (3 with BOS, else 2).
        cond_dropout: Probability of dropping an example's mood tokens (0: never).
        unconditioned: The prefix of a dropped example (:func:`unconditioned_prefix`).
        seed: Seed of the dropout draws.
    """

    pad: int
    prefix: int
    cond_dropout: float = 0.0
    unconditioned: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_dropout < 1.0:
            raise TrainError(f"--cond-dropout must be in [0, 1), got {self.cond_dropout}")
        if self.cond_dropout > 0 and not self.unconditioned:
            raise TrainError("condition dropout needs the unconditioned prefix ([BOS])")
        self._rng = np.random.default_rng([self.seed, 19])

    def __call__(self, features) -> dict:
        """Pad ``features`` into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
        torch, _ = require_torch()
        rows = [
            np.asarray(f["input_ids"] if isinstance(f, dict) else f, dtype=np.int64)
            for f in features
        ]
        prefixes = [self.prefix] * len(rows)
        if self.cond_dropout > 0:
            dropped = self._rng.random(len(rows)) < self.cond_dropout
            head = np.asarray(self.unconditioned, dtype=np.int64)
            for k in np.nonzero(dropped)[0]:
                rows[k] = np.concatenate([head, rows[k][self.prefix :]])
                prefixes[k] = len(head)
        rows = [torch.as_tensor(r) for r in rows]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = r
            mask[k, : len(r)] = 1
            # the model is told the mood (and BOS), never asked to guess it
            labels[k, prefixes[k] : len(r)] = r[prefixes[k] :]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collator(data: str | Path) -> Collator:
    """The collator of a varemi dataset (or run): its PAD id and its prefix length.

    Args:
        data: The dataset folder or a run folder.

    Returns:
        A :class:`Collator`.
    """
    info = info_module.read_dataset_info(data)
    pad = special_ids(load_tokenizer(Path(data))).get("PAD", 0)
    return Collator(pad=pad, prefix=prefix_length(info))


def batch_plan(
    lengths: np.ndarray,
    bins: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    balance: bool = False,
) -> list[np.ndarray]:
    """One epoch's micro-batches: length-grouped, reproducible from (seed, epoch).

    Args:
        lengths: The length of every example.
        bins: A bin id per example (for ``balance``).
        batch_size: Examples per micro-batch.
        seed: The data-order seed.
        epoch: The epoch (0-based).
        balance: Draw every bin present equally often (with replacement).

    Returns:
        Index arrays, one per micro-batch.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    if balance:  # every bin present is drawn equally often
        _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    else:
        order = rng.permutation(n)
    mega = batch_size * 50  # sort by length within chunks of 50 batches (HF's rule)
    batches = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class LengthGroupedBatchSampler:
    """A batch sampler over :func:`batch_plan`: ``set_epoch`` picks the epoch's plan.

    Under ``accelerate`` (``Trainer``'s data loader) each process receives whole batches,
    round robin.

    Args:
        lengths: The length of every example.
        bins: A bin id per example.
        batch_size: Examples per micro-batch.
        seed: The data-order seed.
        balance: ``--balance-bins``.
    """

    def __init__(self, lengths, bins, batch_size: int, seed: int, balance: bool = False):
        self.lengths, self.bins = np.asarray(lengths), np.asarray(bins)
        self.batch_size, self.seed, self.balance = batch_size, seed, balance
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __iter__(self):
        plan = batch_plan(
            self.lengths, self.bins, self.batch_size, self.seed, self.epoch, self.balance
        )
        for b in plan:
            yield [int(i) for i in b]

    def __len__(self) -> int:
        n, mega = len(self.lengths), self.batch_size * 50
        full, rest = divmod(n, mega)
        return full * 50 + -(-rest // self.batch_size)


def example_losses(model, examples: list[np.ndarray], collate: Collator, batch_size: int, device):
    """Each example's summed cross-entropy over its music tokens, and their number.

    Args:
        model: The model (put in eval mode; its mode is restored after).
        examples: ``input_ids`` of each example.
        collate: The dataset's collator (the prefix is never a target).
        batch_size: Examples per forward pass.
        device: Where the model is.

    Returns:
        ``(loss_sum, tokens)``: float64 arrays, one entry per example.
    """
    torch, _ = require_torch()
    was_training = model.training
    model.eval()
    loss_sum = np.zeros(len(examples))
    tokens = np.zeros(len(examples))
    order = np.argsort(-np.array([len(e) for e in examples]), kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([examples[int(k)] for k in chunk])
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            labels = batch["labels"].to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            logits, target = logits[:, :-1].float(), labels[:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            ).view(target.shape)
            keep = target != -100
            loss_sum[chunk] = (ce * keep).sum(dim=1).double().cpu().numpy()
            tokens[chunk] = keep.sum(dim=1).double().cpu().numpy()
    model.train(was_training)
    return loss_sum, tokens


def validation_rows(n: int, at_most: int) -> np.ndarray:
    """The val examples a validation uses: ``at_most`` of ``n``, evenly spread.

    Rows are stored file after file, so the first ones would come from a few files
    (and, with window labels, from few moods); spreading them over the split reaches
    every file. ``finetune`` and ``evaluate`` both use this rule.

    Args:
        n: Examples in the val split.
        at_most: How many to use.

    Returns:
        Sorted distinct int64 indices.
    """
    if n <= 0 or at_most <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, at_most))).astype(np.int64)


AXES = {"valence": 0, "arousal": 1}
"""The mood tokens' order after BOS: ``[VAL]`` then ``[ARO]``."""


def _with_other_moods(
    examples: list[np.ndarray], prefix: int, rng, axis: str | None = None
) -> list[np.ndarray]:
    """The examples with the mood tokens (or one axis's token) of others, permuted."""
    donors = rng.permutation(len(examples))
    first = prefix - 2  # [VAL] [ARO] (after BOS if any)
    if axis is None:
        mood = slice(first, prefix)
    else:
        mood = slice(first + AXES[axis], first + AXES[axis] + 1)
    out = []
    for k, e in enumerate(examples):
        e = e.copy()
        e[mood] = examples[int(donors[k])][mood]
        out.append(e)
    return out


def _gain(diff: np.ndarray, tokens: np.ndarray, rng, resamples: int) -> dict:
    """Nats per token of ``diff`` (shuffled minus own loss sums) with a bootstrap interval."""
    n = len(diff)
    if n == 0:
        return {"nats_per_token": None, "ci95": None, "examples": 0, "tokens": 0}

    def gain(sel) -> float:
        return float(diff[sel].sum() / max(tokens[sel].sum(), 1.0))

    boot = [gain(rng.integers(0, n, n)) for _ in range(resamples)]
    return {
        "nats_per_token": gain(np.arange(n)),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        if boot
        else None,
        "examples": int(n),
        "tokens": int(tokens.sum()),
    }


def conditioning_gain(
    model,
    split: Split,
    rows: np.ndarray,
    collate: Collator,
    batch_size: int,
    device,
    seed: int = 0,
    resamples: int = 1000,
    axis: str | None = None,
) -> dict:
    """How much the model uses the mood tokens: no sampling needed (issue 19).

    The val loss of each example with its own ``[VAL] [ARO]`` against the same example
    with the mood tokens of another example (a random permutation of the rows), in nats
    per music token: ``(shuffled - own) / tokens``. Zero when the model ignores the mood
    tokens (or every example has the same ones); positive when they help it predict the
    music. The 95% interval is a bootstrap over examples.

    Args:
        model: The model.
        split: The val split.
        rows: Example indices to use.
        collate: The dataset's collator (its ``prefix``: the mood tokens are the last two
            ids of the prefix).
        batch_size: Examples per forward pass.
        device: Where the model is.
        seed: Seed of the permutation and the bootstrap.
        resamples: Bootstrap resamples.
        axis: ``valence`` or ``arousal`` to swap only that axis's token (how much the
            model uses each one); None swaps both.

    Returns:
        ``{"nats_per_token", "ci95", "examples", "tokens"}`` (None values without rows).
    """
    return validate(model, split, rows, collate, batch_size, device, seed, resamples, axis)[2]


def validate(
    model,
    split: Split,
    rows: np.ndarray,
    collate: Collator,
    batch_size: int,
    device,
    seed: int = 0,
    resamples: int = 1000,
    axis: str | None = None,
):
    """Token-weighted val loss and conditioning gain, in all and per (valence, arousal) bin.

    The conditioning gain (:func:`conditioning_gain`) takes one more forward pass over
    the same examples with other examples' mood tokens; the permutation depends only on
    ``seed``, so the figures of successive validations are comparable.

    Args:
        model: The model (in eval mode inside; train mode restored after).
        split: The val split.
        rows: Example indices to use.
        collate: The dataset's collator (without condition dropout).
        batch_size: Examples per forward pass.
        device: Where the model is.
        seed: Seed of the mood permutation and the bootstrap.
        resamples: Bootstrap resamples of the overall gain's interval.
        axis: Swap only this axis's token for the gain (None: both).

    Returns:
        ``(loss, {(v, a): {"examples", "tokens", "loss", "conditioning_gain"}}, gain)``;
        ``gain`` as :func:`conditioning_gain` returns it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    own = [split.row(int(r)) for r in rows]
    own_loss, tokens = example_losses(model, own, collate, batch_size, device)
    shuffled_loss, _ = example_losses(
        model, _with_other_moods(own, collate.prefix, rng, axis), collate, batch_size, device
    )
    diff = shuffled_loss - own_loss
    total = float(own_loss.sum() / max(tokens.sum(), 1))
    per_bin = {}
    vb_rows, ab_rows = split.vbin[rows], split.abin[rows]
    for vb, ab in sorted(set(zip(vb_rows.tolist(), ab_rows.tolist(), strict=True))):
        sel = (vb_rows == vb) & (ab_rows == ab)
        n_tokens = max(tokens[sel].sum(), 1)
        per_bin[(vb, ab)] = {
            "examples": int(sel.sum()),
            "tokens": int(tokens[sel].sum()),
            "loss": float(own_loss[sel].sum() / n_tokens),
            "conditioning_gain": float(diff[sel].sum() / n_tokens),
        }
    return total, per_bin, _gain(diff, tokens, rng, resamples)
