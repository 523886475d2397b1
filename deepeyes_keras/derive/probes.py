"""Is a layer needed (T5)? Label separability along the depth, from recorded activations.

Our automatic rule after linear probes (Alain and Bengio 2016, arXiv 1610.01644) and k-NN
accuracy: each layer's recorded output vectors are probed for the labels with cross-validation;
along the depth, a hidden layer that adds less than ``min_gain`` over what it receives, or comes
after separability has saturated, is a candidate for removal, and a last hidden layer far below
the output suggests more capacity (:func:`necessity`). What a layer receives is measured by the
probe of its *input* when one is given (a dense layer: its recorded neuronal receptive fields,
the flattened input the paper's input map embeds), else by the probe of the layer before. A conv
layer is probed on one descriptor per image, the mean of its sampled positions
(:func:`pool_by_image`). Every threshold is a field
of :class:`NecessityThresholds`; the rules are documented in viewer_site/reference/findings.md.
NumPy and scikit-learn only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

EPS = 1e-9  # slack in comparisons of accuracies, so that rounding does not flip a rule
COVARIANCE_PCA_MAX = 2048  # widest features whose PCA goes through the covariance matrix
PROBE_DIMENSIONS = 64  # features are reduced to this many principal components for the probe


@dataclass(frozen=True)
class NecessityThresholds:
    """Named thresholds of the necessity rule (see :func:`necessity`).

    Attributes:
        min_gain: a hidden layer whose probe accuracy gains less than this over the layer before
            is a candidate for removal, and separability has saturated at the first layer within
            this of the best. 0.01: about the standard error of a cross-validated accuracy near
            0.9 on ~1000 instances (sqrt(0.09 / 1000)), so smaller gains are not evidence.
        capacity_gap: the last hidden layer needs more capacity when its accuracy is more than
            this below the output's. 0.05: five standard errors of such a probe.
        capacity_accuracy: ... or when it is below this absolute level (None: no absolute
            level). 0.9: suits MNIST-like tasks; set it per task.
    """

    min_gain: float = 0.01
    capacity_gap: float = 0.05
    capacity_accuracy: float | None = 0.9

    def __post_init__(self):
        ok = {"min_gain": self.min_gain >= 0, "capacity_gap": self.capacity_gap >= 0}
        if not all(ok.values()):
            bad = ", ".join(f"{k}={getattr(self, k)!r}" for k, good in ok.items() if not good)
            raise ValueError(
                f"Invalid NecessityThresholds. Received: {bad}. Expected min_gain >= 0 and "
                "capacity_gap >= 0."
            )


class Pooled(NamedTuple):
    """Per-image descriptors of a conv layer, in increasing image id."""

    features: np.ndarray  # (m, F) mean activation vector of each image's sampled positions
    labels: np.ndarray  # (m,) the image's label; -1 if unknown or its positions disagree
    image: np.ndarray  # (m,) image ids
    count: np.ndarray  # (m,) positions averaged


def pool_by_image(activations: ArrayLike, image: ArrayLike, label: ArrayLike) -> Pooled:
    """One descriptor per image: the mean of its sampled positions' raw activation vectors.

    Probes judge images, not positions: the positions of one image share its label, and if they
    fell in different folds a probe would be judged on images it was trained on. Rows with a NaN or
    an infinity are left out of the mean (an image left with none disappears).

    Args:
        activations: (n, F) one row per sampled position.
        image: (n,) id of each position's image.
        label: (n,) its label (-1 unknown).

    Example:
        >>> pool_by_image(np.array([[1.0], [3.0], [5.0]]), [7, 7, 8], [2, 2, 0]).features
        array([[2.],
               [5.]])
    """
    x = np.asarray(activations, dtype=np.float64)
    img, lab = np.asarray(image).ravel(), np.asarray(label).ravel().astype(np.int64)
    if x.ndim != 2 or len(img) != len(x) or len(lab) != len(x):
        raise ValueError(
            f"Invalid shapes. Received activations {x.shape}, image {img.shape}, label "
            f"{lab.shape}. Expected (n, F), (n,) and (n,)."
        )
    keep = np.isfinite(x).all(axis=1)
    x, img, lab = x[keep], img[keep], lab[keep]
    ids, inverse, count = np.unique(img, return_inverse=True, return_counts=True)
    if len(ids) == 0:
        return Pooled(np.zeros((0, x.shape[1])), lab[:0], ids, count)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.intp)
    sums = np.add.reduceat(x[order], starts, axis=0)
    low = np.minimum.reduceat(lab[order], starts)
    high = np.maximum.reduceat(lab[order], starts)
    labels = np.where(low == high, low, -1)
    return Pooled(sums / count[:, None], labels, ids, count)


@dataclass(frozen=True)
class ProbeResult:
    """Separability of the labels on one layer's features (None: could not be judged)."""

    linear: float | None  # cross-validated accuracy of a linear probe
    knn: float | None  # ... of k-NN
    chance: float | None  # share of the most frequent label
    instances: int  # labelled, finite instances used
    classes: int
    folds: int
    rare_classes: list[int]  # labels with fewer than ``folds`` instances, left out
    reason: str | None = None


def probe(
    features: ArrayLike, labels: ArrayLike, *, seed: int = 0, folds: int = 5, neighbors: int = 5
) -> ProbeResult:
    """Linear-probe and k-NN accuracy of the labels (Alain & Bengio 2016), stratified CV.

    The linear probe is a ridge classifier (one-vs-all least squares on the one-hot labels,
    alpha = 1) on the features' first ``PROBE_DIMENSIONS`` principal components, standardised:
    a closed-form linear probe, so that probing every layer at every snapshot stays cheap (a
    logistic-regression probe took up to 17 s on a 500-unit layer's 2,000 instances, the ridge
    probe well under a second); the projection keeps nearly all of a trained layer's variance.
    k-NN uses the raw features, the layer's own geometry. Both share the same seeded
    stratified folds. Labels < 0 and rows with a NaN or an infinity are ignored; labels with fewer
    than ``folds`` instances are left out (listed in ``rare_classes``); with fewer than 2 labels
    left, accuracies are None and ``reason`` says why.

    Args:
        features: (n, F) one row per instance (conv layers: :func:`pool_by_image`).
        labels: (n,) integer labels.
        seed: seed of the folds.
        folds: number of cross-validation folds (>= 2).
        neighbors: k of k-NN.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> probe(rng.normal(size=(100, 2)) + 5 * y[:, None], y).linear
        1.0
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"Invalid folds. Received: folds={folds!r}. Expected an integer >= 2.")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).ravel().astype(np.int64)
    if x.ndim != 2 or len(y) != len(x):
        raise ValueError(
            f"Invalid shapes. Received {x.shape} and {y.shape}. Expected (n, F), (n,)."
        )
    keep = (y >= 0) & np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    classes, counts = np.unique(y, return_counts=True)
    rare = classes[counts < folds].tolist()
    common = np.isin(y, classes[counts >= folds])
    x, y, counts = x[common], y[common], counts[counts >= folds]
    chance = float(counts.max() / len(y)) if len(y) else None
    base = dict(
        chance=chance, instances=len(y), classes=len(counts), folds=folds, rare_classes=rare
    )
    if len(counts) < 2:
        reason = f"fewer than 2 labels with at least {folds} instances (too few: {rare})"
        return ProbeResult(linear=None, knn=None, reason=reason, **base)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    smallest_train = len(y) - math.ceil(len(y) / folds)
    steps = [StandardScaler(), RidgeClassifier(alpha=1.0)]
    # PCA fits on each training fold: at most as many components as it has instances.
    dimensions = min(PROBE_DIMENSIONS, smallest_train)
    if x.shape[1] > dimensions:
        # Exact PCA from the F x F covariance: 5x faster than the randomized SVD sklearn picks
        # for these shapes (findings are most of the maps worker's time). Only with more
        # training instances than components (else the covariance has fewer non-null
        # directions than are kept, and those, standardised, are noise) and features few
        # enough; sklearn's choice beyond.
        narrow = x.shape[1] <= COVARIANCE_PCA_MAX and smallest_train > dimensions + 1
        solver = "covariance_eigh" if narrow else "auto"
        steps.insert(0, PCA(dimensions, svd_solver=solver, random_state=seed))
    linear = make_pipeline(*steps)
    knn = KNeighborsClassifier(n_neighbors=max(1, min(neighbors, smallest_train)))
    lin = float(cross_val_score(linear, x, y, cv=cv).mean())
    near = float(cross_val_score(knn, x, y, cv=cv).mean())
    return ProbeResult(linear=lin, knn=near, **base)


@dataclass(frozen=True)
class LayerNecessity:
    """One layer along the depth (see :func:`necessity`)."""

    name: str
    accuracy: float | None
    gain: float | None  # accuracy - that of the layer before (None: first, or unknown)
    removable: bool
    after_saturation: bool  # a hidden layer after ``saturated_at``
    input_accuracy: float | None = None  # the probe of the layer's input, when given
    input_gain: float | None = None  # accuracy - input_accuracy (None: no input probe)


@dataclass(frozen=True)
class Necessity:
    """T5 along the depth: per-layer gains and the flags of :func:`necessity`."""

    metric: str
    layers: list[LayerNecessity]
    best: float | None
    saturated_at: str | None
    needs_capacity: bool
    reasons: list[str]


def _accuracy_of(result, metric: str) -> float | None:
    if isinstance(result, ProbeResult):
        return getattr(result, metric)
    return None if result is None else float(result)


def input_entry(name: str) -> str:
    """The name of a layer's input in the depth sequence (e.g. in ``saturated_at``)."""
    return f"{name} (input)"


def necessity(
    layers: Sequence[tuple[str, ProbeResult | float | None]],
    *,
    inputs: Mapping[str, ProbeResult | float | None] | None = None,
    metric: str = "linear",
    thresholds: NecessityThresholds = NecessityThresholds(),
) -> Necessity:
    """T5: which hidden layers add separability, and whether the last one lacks capacity.

    ``layers`` runs from the first hidden layer to the output (last entry); each carries a
    :class:`ProbeResult` (its ``metric`` accuracy, "linear" or "knn") or an accuracy. ``inputs``
    optionally gives, per layer name, the probe of that layer's *input* (what it receives: for a
    dense layer its flattened input, the paper's input map); it enters the depth sequence just
    before its layer, as ``input_entry(name)``. Rules, with t = ``thresholds``:

    - gain_i = acc_i - acc_{i-1} (None for the first layer, or when either is unknown), and
      input_gain_i = acc_i - input_i when the layer's input probe is known.
    - ``removable``: what the layer adds to what it receives is below t.min_gain: input_gain_i
      when known, else gain_i; for every layer but the output.
    - ``saturated_at``: the first entry of the depth sequence (layers and given inputs) with
      acc >= max(acc) - t.min_gain; hidden layers after it are ``after_saturation``, also
      candidates for removal (a layer whose own input saturates is after it).
    - ``needs_capacity``: the last hidden layer's acc < output acc - t.capacity_gap, or
      < t.capacity_accuracy (when set).

    Without ``inputs`` the sequence is the layers alone, and the gain is over the layer before.

    Example:
        >>> n = necessity([("fc1", 0.95), ("fc2", 0.951), ("out", 0.96)])
        >>> [layer.removable for layer in n.layers], n.saturated_at
        ([False, True, False], 'fc1')
        >>> n = necessity([("conv4", 0.7), ("fc1", 0.951), ("out", 0.96)], inputs={"fc1": 0.95})
        >>> round(n.layers[1].input_gain, 3), n.layers[1].removable, n.saturated_at
        (0.001, True, 'fc1 (input)')
    """
    if metric not in ("linear", "knn"):
        raise ValueError(f"Invalid metric. Received: metric={metric!r}. Expected linear or knn.")
    t = thresholds
    inputs = dict(inputs or {})
    names = [name for name, _ in layers]
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise ValueError(
            f"Invalid inputs. Received input probes of {unknown}, which are not among the "
            f"layers {names}. Expected a subset of the layer names."
        )
    acc = [_accuracy_of(r, metric) for _, r in layers]
    acc_in = [_accuracy_of(inputs.get(name), metric) for name in names]
    # The depth sequence: each layer, preceded by its input when that was probed.
    sequence: list[tuple[str, float | None]] = []
    position = []
    for name, a, a_in in zip(names, acc, acc_in, strict=True):
        if a_in is not None:
            sequence.append((input_entry(name), a_in))
        position.append(len(sequence))
        sequence.append((name, a))
    known = [a for _, a in sequence if a is not None]
    best = max(known) if known else None
    saturated = None
    if best is not None:
        saturated = next(
            k for k, (_, a) in enumerate(sequence) if a is not None and a >= best - t.min_gain - EPS
        )
    out, reasons = [], []
    for i, name in enumerate(names):
        gain = None if i == 0 or acc[i] is None or acc[i - 1] is None else acc[i] - acc[i - 1]
        input_gain = None if acc[i] is None or acc_in[i] is None else acc[i] - acc_in[i]
        added, source = (gain, names[i - 1]) if input_gain is None else (input_gain, "its input")
        hidden = i < len(names) - 1
        removable = hidden and added is not None and added < t.min_gain - EPS
        after = hidden and saturated is not None and position[i] > saturated
        if removable:
            reasons.append(f"{name} gains {added:+.3f} over {source}: may be removable")
        elif after:
            reasons.append(
                f"separability saturated at {sequence[saturated][0]}: {name} may be removable"
            )
        out.append(
            LayerNecessity(name, acc[i], gain, bool(removable), bool(after), acc_in[i], input_gain)
        )
    needs = False
    if len(names) >= 2 and acc[-2] is not None:
        last, output = acc[-2], acc[-1]
        gap = output is not None and last < output - t.capacity_gap - EPS
        low = t.capacity_accuracy is not None and last < t.capacity_accuracy - EPS
        needs = bool(gap or low)
        if needs:
            reasons.append(f"last hidden layer {names[-2]} at {last:.3f}: may need more capacity")
    return Necessity(
        metric=metric,
        layers=out,
        best=best,
        saturated_at=None if saturated is None else sequence[saturated][0],
        needs_capacity=needs,
        reasons=reasons,
    )


def input_probe(
    descriptors: ArrayLike,
    labels: ArrayLike,
    *,
    max_instances: int = 1000,
    seed: int = 0,
    folds: int = 5,
    neighbors: int = 5,
) -> dict:
    """T5 evidence of what a dense layer receives: the probe of its recorded input vectors.

    A dense layer's neuronal receptive field is its whole flattened input (the paper's input
    map of that layer). Probing it on the same instances as the layer's output measures what the
    layer adds to the separability it is given (:func:`necessity`, ``inputs``). Inputs longer
    than the recorder's descriptor length are stored hashed (a random projection that keeps
    distances); the probe reduces them to ``PROBE_DIMENSIONS`` components either way. At most
    ``max_instances`` rows, the last (most recent), are probed.

    Returns:
        ``{"input_accuracy", "input_linear", "input_knn", "input_instances"}`` (accuracies None
        when the labels cannot be judged).
    """
    x, y = np.asarray(descriptors), np.asarray(labels)
    if len(y) > max_instances:
        x, y = x[-max_instances:], y[-max_instances:]
    result = probe(x, y, seed=seed, folds=folds, neighbors=neighbors)
    linear = None if result.linear is None else round(result.linear, 4)
    return {
        "input_accuracy": linear,
        "input_linear": linear,
        "input_knn": None if result.knn is None else round(result.knn, 4),
        "input_instances": int(result.instances),
    }
