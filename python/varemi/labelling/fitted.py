"""Labels fitted to a user's own human ratings: one regularised logistic regression per axis.

``python -m varemi labels --fit HUMAN.csv --midi-dir LABELLED --out labeller.json``
computes varemi's features of every labelled file (:data:`FIT_INPUTS`, the same
features the heuristic reads) and fits, for valence and for arousal separately, an
L2-regularised logistic regression on the standardised features; ``labels`` and
``build --labeller labeller.json`` then label with it instead of the heuristic. The
model is small and can be read: one weight per feature and axis, on features put on a
common scale.

The model, per axis::

    z_j    = (t_j(x_j) - centre_j) / scale_j    (0 when feature j's gate is <= 0)
    score  = bias + sum_j weight_j * z_j
    label  = tanh((slope * score + intercept) / 2) = 2 * P(positive) - 1

``t_j`` is ``log2`` for rates and durations, the identity otherwise; centres and
scales are the mean and standard deviation over the training files (over the files
whose gate is > 0 for a gated feature: velocity counts only when the velocities vary,
drum density only when the file has drums, so a file without drums is neutral on it).
``slope`` and ``intercept`` are the calibration: a logistic fit of the human signs on
the out-of-fold scores of the cross-validation (Platt scaling, ``slope >= 0``), so that
``(label + 1) / 2`` is the cross-validated probability that the axis is positive and
0 is the boundary the model learned.

The targets are the human labels on [-1, 1] read as probabilities ``(y + 1) / 2``:
signs are 0 or 1; ratings on a scale (``--label-range``) count with their strength
(a rating at the middle of the scale is 0.5, no evidence either way); quadrants give
signs. The weights minimise the mean cross-entropy plus ``lambda / 2 * sum(weight**2)``
(the bias is not penalised), by Newton's method.

``lambda`` is chosen from :data:`LAMBDAS` by grouped k-fold cross-validation
(``k = min(5, groups)``): files of one group (``--groups``: a piece, a game, an
album; by default each file alone) are always in the same fold. Folds are dealt
round-robin over the groups sorted by the blake2b hash of their names, so they
depend on the group names only. The lambda with the lowest pooled out-of-fold
cross-entropy wins (ties: the larger). The ROC AUC and sign accuracy of the
out-of-fold labels, and their quadrant accuracy, are written to the labeller file:
what to expect on new files like the training files, not on another style.

Everything is deterministic: the same features, targets and groups give the same
file byte for byte on one machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varemi._base.errors import VaremiError
from varemi._base.fileio import atomic_write
from varemi._base.version import __version__
from varemi.labelling.heuristic import LABEL_FEATURES

FORMAT = "varemi-labeller"
"""The ``format`` field of a labeller file."""

FORMAT_VERSION = 1
"""The ``format_version`` this varemi writes and reads."""

AXES = ("valence", "arousal")

LAMBDAS: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-3.0, 2.01, 0.5))
"""The L2 penalties cross-validation chooses from: 0.001, 0.0032, ..., 100."""

MAX_FOLDS = 5


class LabellerError(VaremiError):
    """A labeller file that cannot be read, or training data that cannot be fitted."""


@dataclass(frozen=True)
class FitInput:
    """One input of a fitted labeller.

    Attributes:
        feature: A key of :data:`varemi.labelling.heuristic.LABEL_FEATURES`.
        log: Whether the feature enters as ``log2(x)`` (rates and durations).
        gate: A feature that must be > 0 for this one to count (``z = 0`` otherwise).
    """

    feature: str
    log: bool = False
    gate: str | None = None

    def transform(self, value: float) -> float:
        """The feature on the scale it is standardised on."""
        return math.log2(max(value, 1e-9)) if self.log else float(value)


FIT_INPUTS: tuple[FitInput, ...] = (
    FitInput("note_density", log=True),
    FitInput("onset_rate", log=True),
    FitInput("ioi_median", log=True),
    FitInput("note_duration", log=True),
    FitInput("log_duration"),
    FitInput("articulation"),
    FitInput("velocity_mean", gate="velocity_range"),
    FitInput("tempo_bpm", log=True),
    FitInput("pitch_mean"),
    FitInput("major_corr"),
    FitInput("minor_corr"),
    FitInput("mode"),
    FitInput("key_clarity"),
    FitInput("triad_balance"),
    FitInput("local_mode"),
    FitInput("local_major"),
    FitInput("drum_density", log=True, gate="drum_density"),
)
"""What ``labels --fit`` fits on: every feature but the piece's length (``duration_s``,
``n_notes``: clips and whole tracks differ by it, whatever their mood) and
``velocity_range`` (a gate)."""


@dataclass(frozen=True)
class AxisModel:
    """One axis of a fitted labeller (see the module docstring for the formula).

    Attributes:
        weights: One per input, on the standardised features.
        bias: The score at the centres.
        slope: Calibration: the out-of-fold scores' logistic slope (>= 0).
        intercept: Calibration: its intercept.
        lam: The L2 penalty cross-validation chose.
        cv: The cross-validated figures (``auc``, ``accuracy``, ...), as JSON text.
    """

    weights: tuple[float, ...]
    bias: float
    slope: float
    intercept: float
    lam: float
    cv: str = "{}"

    def label(self, z: np.ndarray) -> float:
        """The label in (-1, 1) of standardised features ``z``."""
        score = self.bias + float(np.dot(self.weights, z))
        return math.tanh((self.slope * score + self.intercept) / 2.0)


@dataclass(frozen=True)
class FittedLabeller:
    """A labeller fitted to human ratings: a :class:`varemi.labelling.heuristic.Labeller`.

    Attributes:
        inputs: The features it reads.
        centres: Their centres (on the transformed scale).
        scales: Their scales.
        valence: The valence model.
        arousal: The arousal model.
        info: The rest of the file (cross-validation, training data), as JSON text.
        sha256: Hex sha256 of the labeller file's bytes (what names it in cache keys
            and ``dataset_info.json``); ``""`` until written or read.
        kind: ``fitted``.
    """

    inputs: tuple[FitInput, ...]
    centres: tuple[float, ...]
    scales: tuple[float, ...]
    valence: AxisModel
    arousal: AxisModel
    info: str = "{}"
    sha256: str = ""
    kind: str = "fitted"

    def z(self, features: Mapping[str, float]) -> np.ndarray:
        """The standardised inputs of one file's features."""
        values, valid = design([features], self.inputs)
        return standardise(values, valid, np.array(self.centres), np.array(self.scales))[0]

    def label(self, features: Mapping[str, float]) -> tuple[float, float]:
        """``(valence, arousal)`` in (-1, 1) of a file's features.

        Args:
            features: At least the features of :attr:`inputs` (and their gates).

        Returns:
            The two labels.
        """
        z = self.z(features)
        return self.valence.label(z), self.arousal.label(z)

    def to_json(self) -> str:
        """The labeller file's text (see :func:`load_labeller`)."""
        info = json.loads(self.info)
        doc: dict = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "varemi_version": info.pop("varemi_version", __version__),
            "model": "per axis: logistic regression on standardised features, L2 penalty "
            "chosen by grouped cross-validation, Platt-calibrated on out-of-fold scores",
            "formula": "z = (t(x) - centre) / scale, 0 when the gate is <= 0; score = bias + "
            "sum(weight * z); label = tanh((slope * score + intercept) / 2)",
            "inputs": [
                {
                    "feature": i.feature,
                    "transform": "log2" if i.log else "identity",
                    "gate": i.gate,
                    "centre": c,
                    "scale": s,
                }
                for i, c, s in zip(self.inputs, self.centres, self.scales, strict=True)
            ],
        }
        for axis in AXES:
            m: AxisModel = getattr(self, axis)
            doc[axis] = {
                "bias": m.bias,
                "weights": {i.feature: w for i, w in zip(self.inputs, m.weights, strict=True)},
                "lambda": m.lam,
                "calibration": {"slope": m.slope, "intercept": m.intercept},
                "cv": json.loads(m.cv),
            }
        doc.update(info)
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- the design matrix
def design(
    features: Sequence[Mapping[str, float]], inputs: Sequence[FitInput] = FIT_INPUTS
) -> tuple[np.ndarray, np.ndarray]:
    """The transformed inputs of several files, and where their gates let them count.

    Args:
        features: One feature dict per file.
        inputs: The inputs.

    Returns:
        ``(values, valid)``: float64 and bool arrays of shape (files, inputs).
    """
    values = np.zeros((len(features), len(inputs)))
    valid = np.ones((len(features), len(inputs)), dtype=bool)
    for r, f in enumerate(features):
        for c, i in enumerate(inputs):
            if i.gate is not None and not float(f[i.gate]) > 0.0:
                valid[r, c] = False
            else:
                values[r, c] = i.transform(float(f[i.feature]))
    return values, valid


def centre_scale(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column over its valid rows (0 and 1 when none).

    A column that does not vary gets scale 1: its ``z`` is 0 on the training files,
    and its weight 0.
    """
    centres = np.zeros(values.shape[1])
    scales = np.ones(values.shape[1])
    for c in range(values.shape[1]):
        col = values[valid[:, c], c]
        if len(col):
            centres[c] = float(col.mean())
            sd = float(col.std())
            scales[c] = sd if sd > 1e-9 else 1.0
    return centres, scales


def standardise(
    values: np.ndarray, valid: np.ndarray, centres: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    """``(values - centres) / scales``, 0 where a gate is closed."""
    return np.where(valid, (values - centres) / scales, 0.0)


# --------------------------------------------------------------------------- fitting
def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))


def cross_entropy(score: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy of soft targets in [0, 1] under logistic scores."""
    # log(1 + e^s) - t * s, computed stably
    return float(np.mean(np.logaddexp(0.0, score) - target * score))


def fit_logistic(z: np.ndarray, target: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression with soft targets, by Newton's method.

    Minimises ``mean(cross-entropy) + lam / 2 * |w|^2`` (the bias is not penalised).

    Args:
        z: (files, inputs) standardised inputs.
        target: Targets in [0, 1].
        lam: The penalty (> 0).

    Returns:
        ``(weights, bias)``.
    """
    n, k = z.shape
    x = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(k + 1, lam)
    penalty[-1] = 1e-9  # the bias: barely held, so that it is always defined
    theta = np.zeros(k + 1)
    mean = float(np.clip(target.mean(), 1e-6, 1 - 1e-6))
    theta[-1] = math.log(mean / (1 - mean))

    def objective(t: np.ndarray) -> float:
        return cross_entropy(x @ t, target) + 0.5 * float(np.dot(penalty * t, t))

    current = objective(theta)
    for _ in range(100):
        p = _sigmoid(x @ theta)
        grad = x.T @ (p - target) / n + penalty * theta
        hess = (x.T * (p * (1 - p))) @ x / n + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while True:  # the objective is convex: a halved step always gets there
            candidate = theta - size * step
            value = objective(candidate)
            if value <= current + 1e-15 or size < 1e-8:
                break
            size /= 2
        theta, previous, current = candidate, current, value
        if float(np.max(np.abs(size * step))) < 1e-10 or previous - current < 1e-15:
            break
    return theta[:-1], float(theta[-1])


def group_folds(groups: Sequence[str], k: int) -> np.ndarray:
    """Each file's fold: groups dealt round-robin in the order of their names' blake2b hash.

    Args:
        groups: One group name per file.
        k: Folds.

    Returns:
        int64 fold indices in ``0..k-1``.
    """
    names = sorted(
        set(groups), key=lambda g: (hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), g)
    )
    fold_of = {g: r % k for r, g in enumerate(names)}
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def roc_auc(scores, positive) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (Mann-Whitney, ties count half).

    Args:
        scores: Real scores.
        positive: Booleans, both classes present.

    Returns:
        The AUC, or NaN when a class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid_ranks[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _calibrate(score: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Platt scaling: the logistic fit of the targets on one score; slope clipped at 0."""
    spread = float(score.std()) or 1.0
    w, b = fit_logistic((score / spread)[:, None], target, 1e-6)
    slope = max(float(w[0]) / spread, 0.0)
    if slope == 0.0:  # no usable ranking: the base rate alone
        mean = float(np.clip(target.mean(), 1e-6, 1 - 1e-6))
        return 0.0, math.log(mean / (1 - mean))
    return slope, b


@dataclass
class _AxisFit:
    model: AxisModel
    oof_label: np.ndarray


def _fit_axis(
    values: np.ndarray,
    valid: np.ndarray,
    target: np.ndarray,
    folds: np.ndarray,
    centres: np.ndarray,
    scales: np.ndarray,
) -> _AxisFit:
    """Choose lambda by grouped cross-validation, calibrate, refit on every file."""
    k = int(folds.max()) + 1
    oof = np.zeros((len(LAMBDAS), len(target)))
    for f in range(k):
        test = folds == f
        train = ~test
        c, s = centre_scale(values[train], valid[train])
        z_train = standardise(values[train], valid[train], c, s)
        z_test = standardise(values[test], valid[test], c, s)
        for li, lam in enumerate(LAMBDAS):
            w, b = fit_logistic(z_train, target[train], lam)
            oof[li, test] = z_test @ w + b
    losses = [cross_entropy(oof[li], target) for li in range(len(LAMBDAS))]
    best = min(range(len(LAMBDAS)), key=lambda li: (round(losses[li], 12), -LAMBDAS[li]))
    lam = LAMBDAS[best]
    slope, intercept = _calibrate(oof[best], target)
    oof_label = np.tanh((slope * oof[best] + intercept) / 2.0)

    decided = target != 0.5
    positive = target[decided] > 0.5
    cv = {
        "auc": roc_auc(oof[best][decided], positive),
        "accuracy": float(np.mean((oof_label[decided] > 0) == positive)),
        "log_loss": losses[best],
        "log_loss_by_lambda": dict(zip((f"{x:g}" for x in LAMBDAS), losses, strict=True)),
        "human_positive": float(positive.mean()),
        "predicted_positive": float(np.mean(oof_label > 0)),
    }
    w, b = fit_logistic(standardise(values, valid, centres, scales), target, lam)
    model = AxisModel(
        weights=tuple(float(x) for x in w),
        bias=b,
        slope=slope,
        intercept=float(intercept),
        lam=lam,
        cv=json.dumps(cv),
    )
    return _AxisFit(model, oof_label)


def fit_labeller(
    features: Sequence[Mapping[str, float]],
    labels: Sequence[tuple[float, float]],
    groups: Sequence[str],
    training: Mapping[str, object] | None = None,
    inputs: Sequence[FitInput] = FIT_INPUTS,
) -> FittedLabeller:
    """Fit a labeller to human labels (see the module docstring).

    Args:
        features: One feature dict per file (as
            :func:`varemi.labelling.heuristic.extract_features` gives them).
        labels: The human ``(valence, arousal)`` of each file, in [-1, 1].
        groups: Each file's group (files of one group share a fold).
        training: What to record about the training data (file names, options).
        inputs: The inputs to fit on.

    Returns:
        The labeller (its ``sha256`` empty until written).

    Raises:
        LabellerError: fewer than 2 groups, or an axis whose human labels are all on
            one side.
    """
    n = len(features)
    if not (n == len(labels) == len(groups)):
        raise ValueError("features, labels and groups must have one entry per file")
    n_groups = len(set(groups))
    if n_groups < 2:
        raise LabellerError(
            f"labels --fit needs files of at least 2 groups for cross-validation, got {n} "
            f"file(s) in {n_groups} group(s)"
        )
    y = np.asarray(labels, dtype=np.float64).reshape(n, 2)
    targets = (np.clip(y, -1.0, 1.0) + 1.0) / 2.0
    for a, axis in enumerate(AXES):
        if not (np.any(targets[:, a] > 0.5) and np.any(targets[:, a] < 0.5)):
            raise LabellerError(
                f"labels --fit: every human {axis} label is on one side of the middle; "
                "the model needs positive and negative examples of each axis"
            )
    inputs = tuple(inputs)
    values, valid = design(features, inputs)
    centres, scales = centre_scale(values, valid)
    k = min(MAX_FOLDS, n_groups)
    folds = group_folds(list(groups), k)
    fits = {
        axis: _fit_axis(values, valid, targets[:, a], folds, centres, scales)
        for a, axis in enumerate(AXES)
    }
    decided = np.all(targets != 0.5, axis=1)
    agree = np.ones(n, dtype=bool)
    for a, axis in enumerate(AXES):
        agree &= (fits[axis].oof_label > 0) == (targets[:, a] > 0.5)
    info = {
        "varemi_version": __version__,
        "cross_validation": {
            "files": n,
            "groups": n_groups,
            "folds": k,
            "lambdas": list(LAMBDAS),
            "quadrant_accuracy": float(agree[decided].mean()) if decided.any() else None,
            "note": "out-of-fold figures over the training files' own style; another "
            "style can do worse",
        },
        "training": dict(training or {}),
    }
    return FittedLabeller(
        inputs=inputs,
        centres=tuple(float(c) for c in centres),
        scales=tuple(float(s) for s in scales),
        valence=fits["valence"].model,
        arousal=fits["arousal"].model,
        info=json.dumps(info),
    )


# --------------------------------------------------------------------------- files
def write_labeller(labeller: FittedLabeller, path: Path | str) -> FittedLabeller:
    """Write a labeller file (atomically) and return the labeller named by its sha256.

    Args:
        labeller: The fitted labeller.
        path: The JSON file to write.

    Returns:
        The same labeller with ``sha256`` set.
    """
    text = labeller.to_json()
    with atomic_write(Path(path), newline="") as f:
        f.write(text)
    return load_labeller_text(text.encode("utf-8"), str(path))


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabellerError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_labeller_text(data: bytes, name: str = "labeller") -> FittedLabeller:
    """A labeller from the bytes of its file (see :func:`load_labeller`)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LabellerError(f"--labeller {name} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LabellerError(
            f'--labeller {name} is not a varemi labeller file (no "format": "{FORMAT}"); '
            "make one with python -m varemi labels --fit"
        )
    if doc.get("format_version") != FORMAT_VERSION:
        raise LabellerError(
            f"--labeller {name} has format_version {doc.get('format_version')!r}; this varemi "
            f"{__version__} reads version {FORMAT_VERSION}: fit it again"
        )
    try:
        raw_inputs = doc["inputs"]
        inputs, centres, scales = [], [], []
        for k, item in enumerate(raw_inputs):
            where = f"--labeller {name}: inputs[{k}]"
            feature, gate = item["feature"], item.get("gate")
            if feature not in LABEL_FEATURES or (gate is not None and gate not in LABEL_FEATURES):
                raise LabellerError(f"{where} names an unknown feature ({feature!r}, {gate!r})")
            if item["transform"] not in ("log2", "identity"):
                raise LabellerError(f"{where}: transform must be log2 or identity")
            inputs.append(FitInput(feature, item["transform"] == "log2", gate))
            centres.append(_number(item["centre"], f"{where}.centre"))
            scales.append(_number(item["scale"], f"{where}.scale"))
            if scales[-1] <= 0:
                raise LabellerError(f"{where}.scale must be > 0")
        axes = {}
        for axis in AXES:
            a = doc[axis]
            where = f"--labeller {name}: {axis}"
            weights = a["weights"]
            if sorted(weights) != sorted(i.feature for i in inputs):
                raise LabellerError(f"{where}.weights must name exactly the inputs' features")
            axes[axis] = AxisModel(
                weights=tuple(_number(weights[i.feature], f"{where}.weights") for i in inputs),
                bias=_number(a["bias"], f"{where}.bias"),
                slope=_number(a["calibration"]["slope"], f"{where}.calibration.slope"),
                intercept=_number(a["calibration"]["intercept"], f"{where}.calibration.intercept"),
                lam=_number(a["lambda"], f"{where}.lambda"),
                cv=json.dumps(a.get("cv") or {}),
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise LabellerError(f"--labeller {name} lacks or misspells a field ({exc})") from None
    known = {"format", "format_version", "model", "formula", "inputs", *AXES}
    info = {k: v for k, v in doc.items() if k not in known}
    return FittedLabeller(
        inputs=tuple(inputs),
        centres=tuple(centres),
        scales=tuple(scales),
        valence=axes["valence"],
        arousal=axes["arousal"],
        info=json.dumps(info),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_labeller(path: Path | str) -> FittedLabeller:
    """Read a labeller file written by ``labels --fit``.

    Args:
        path: The JSON file.

    Returns:
        The labeller, named by the sha256 of the file's bytes.

    Raises:
        LabellerError: The file is missing, unreadable, not a varemi labeller file, of
            another format version, or holds a field that is missing or not a finite
            number.
    """
    path = Path(path)
    if not path.is_file():
        raise LabellerError(f"--labeller {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabellerError(f"--labeller {path} is unreadable: {exc}") from None
    return load_labeller_text(data, str(path))
