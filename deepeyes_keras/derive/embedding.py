"""2-D embeddings behind DeepEyes' input map and filter map, and the perplexity of an instance.

Plain NumPy / scikit-learn / openTSNE (run by :mod:`deepeyes_keras.derive.tsne`), following the
definitions in viewer_site/reference/maps-and-views.md. The site build and the worker
that computes maps run without TensorFlow, so this module never imports it (nor Keras).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deepeyes_keras.derive import checks, tsne
from deepeyes_keras.derive.carry import carry_layout

__all__ = ["DUPLICATE_TOLERANCE", "Duplicates", "FilterMap", "carry_layout",
           "collapse_duplicates", "filter_map", "input_map", "perplexity_of"]  # fmt: skip

ProgressFn = Callable[[float, str], object]

# Descriptors closer than this, relative to the layer's largest absolute value, are one point:
# about float16's rounding step (descriptors are stored as float16).
DUPLICATE_TOLERANCE = 1e-3

# Below 4 points a t-SNE cannot calibrate: the perplexity rule (n - 1) / 3 would fall below 1.
_MIN_TSNE_POINTS = 4


def perplexity_of(activations: np.ndarray) -> np.ndarray:
    """Perplexity of each instance's filter activations (viewer_site/reference/metrics.md).

    Activations are clamped at 0 and L1-normalised per row, ``p = a / sum(a)`` (uniform when the
    sum is 0: no filter responds), then ``P = 2**H`` with ``H = -sum p log2 p``. ``P`` near 1: one
    filter responds; ``P = F``: all respond alike, or none does. Non-finite values count as 0.

    Args:
        activations: ``(n, F)`` array, one row per receptive-field instance, one column per filter.

    Returns:
        ``(n,)`` float64 array with values in ``[1, F]``.

    Example:
        >>> perplexity_of(np.array([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        array([1., 3., 3.])
    """
    a = checks.as_float_matrix(activations, "activations", allow_empty=True)
    n_filters = a.shape[1]
    if n_filters == 0:
        raise ValueError(f"activations has shape {a.shape}; expected at least one filter column.")
    a = np.maximum(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    total = a.sum(axis=1, keepdims=True)
    # An all-zero row means "no filter responds": uniform, so P = F (the histogram's top bin).
    p = np.where(total > 0, a / np.where(total > 0, total, 1.0), 1.0 / n_filters)
    terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    # Rounding can put 2**H a hair outside [1, F]; the definition guarantees that range.
    return np.clip(2.0 ** (-terms.sum(axis=1)), 1.0, float(n_filters))


@dataclass(frozen=True)
class Duplicates:
    """Result of :func:`collapse_duplicates`.

    Attributes:
        first: ``(m,)`` row of the first instance of each distinct descriptor, in row order.
        point: ``(n,)`` the distinct descriptor (0..m-1) of each row.
        weight: ``(m,)`` how many rows each distinct descriptor stands for.
    """

    first: np.ndarray
    point: np.ndarray
    weight: np.ndarray


def collapse_duplicates(
    descriptors: np.ndarray, *, tolerance: float = DUPLICATE_TOLERANCE
) -> Duplicates:
    """Groups identical (or near-identical) descriptors, to embed each group as one weighted point.

    Two rows are one point when every value rounds to the same multiple of ``tolerance *
    max|descriptors|`` (0: exactly equal values): blank background patches (~40% of conv1's
    MNIST instances) become one point, not a disc of copies. Numbered by first row.

    Args:
        descriptors: ``(n, D)`` numeric array; NaN and +-inf count as 0.
        tolerance: relative rounding step, >= 0 (default ``DUPLICATE_TOLERANCE``).

    Example:
        >>> d = collapse_duplicates(np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]))
        >>> d.first.tolist(), d.point.tolist(), d.weight.tolist()
        ([0, 1], [0, 1, 0], [2, 1])
    """
    x = np.nan_to_num(checks.as_float_matrix(descriptors, "descriptors", allow_empty=True))
    if not isinstance(tolerance, numbers.Real) or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"Invalid value for argument tolerance. Received: tolerance={tolerance!r}. "
            "Expected a finite number >= 0 (0: only exactly equal descriptors merge)."
        )
    if len(x) == 0:
        empty = np.zeros(0, np.int64)
        return Duplicates(empty, empty, empty)
    top = float(np.abs(x).max()) if x.size else 0.0
    keys = x + 0.0  # 0.0 for -0.0: equal values must be equal bytes
    if tolerance > 0 and top > 0:
        keys = np.rint(x / (tolerance * top))  # integers, at most 1 / tolerance in size
        bound = 1.0 / tolerance
        if bound < 2.0**62:
            keys = keys.astype(np.int16 if bound < 2**15 - 1 else np.int64)
    # Each row as one opaque value: a 1-D unique sorts bytes; np.unique(axis=0) sorts a structured
    # dtype field by field (2,000 x 500 descriptors: about 1 ms instead of about 30 ms).
    keys = np.ascontiguousarray(keys if keys.shape[1] else np.zeros((len(x), 1)))
    rows = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(
        rows, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(first, kind="stable")  # number the points by their first row
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Duplicates(
        first[order].astype(np.int64), rank[inverse.ravel()].astype(np.int64), counts[order]
    )


def input_map(
    descriptors: np.ndarray,
    *,
    init: np.ndarray | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
    n_iter: int = 500,
    early_iter: int = 250,
    method: str = "auto",
    theta: float = tsne.THETA,
    init_std: float = tsne.INIT_STD,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """2-D t-SNE of neuronal receptive-field descriptors (the input map).

    ``early_iter`` (250) iterations of early exaggeration (factor 12), then ``n_iter`` normal
    ones (the same total with either backend). Perplexity is clamped to
    ``min(perplexity, (n - 1) / 3)`` so that ``3 * perplexity`` neighbours exist (openTSNE's
    rule; it also meets scikit-learn's ``perplexity < n``). NaN and +-inf in descriptors are
    replaced by 0; duplicate rows are fine.
    Fewer than 4 points, or all descriptors identical, leave nothing to embed: the layout is
    ``init`` when given, else the exact PCA coordinates (< 4 points) or zeros (identical ones).

    ``init`` (else the PCA coordinates) is centred and scaled to std ``init_std`` (1e-4) on its
    first axis, plus 1% seeded jitter, as openTSNE scales its PCA initialisation: only its
    arrangement matters, and a snapshot started from the previous one's layout stays comparable
    with it (:func:`~deepeyes_keras.derive.carry.carry_layout` builds such a start).

    Args:
        descriptors: ``(n, D)`` numeric array, one receptive-field descriptor per row.
        init: Optional ``(n, 2)`` layout to start from, e.g. the previous snapshot's (see
            :func:`carry_layout` when only some points are shared).
        perplexity: Effective number of neighbours, at least 1 (clamped as above).
        seed: Seed of every random choice; a fixed seed gives the same layout on the same machine.
        n_iter: Iterations after the early-exaggeration phase, at least 1.
        early_iter: Iterations of early exaggeration (fewer suffice when ``init`` is a previous
            layout, which already separates the clusters).
        method: ``"opentsne"`` (FFT interpolation from 10,000 points, Barnes-Hut below, 2.4x
            faster at 2,000), ``"sklearn"`` (``sklearn.manifold.TSNE``, Barnes-Hut) or
            ``"auto"``: openTSNE when importable, else scikit-learn.
        theta: Barnes-Hut accuracy, in (0, 1]: a cell of the tree whose size is below ``theta``
            times its distance counts as one point (0.5, both backends' default; the maps stage
            uses 0.8: 30% faster, layouts as good, see viewer_site/reference/maps-and-views.md).
            Not used by the FFT gradient.
        init_std: Scale of the start, > 0: a restart of the previous snapshot's layout at 1e-2
            re-forms in fewer iterations than at 1e-4 (the maps stage's choice, measured).
        progress: Optional ``callable(fraction, message)``, called about a dozen times as
            ``fraction`` rises to 1.0 (scikit-learn has no hook mid-run: start and end only).

    Returns:
        ``(n, 2)`` float64 array of coordinates.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 10))
        >>> input_map(x, perplexity=20, seed=0).shape
        (200, 2)
    """
    x = checks.as_float_matrix(descriptors, "descriptors", allow_empty=True)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    n = x.shape[0]
    start = None if init is None else checks.as_float_matrix(init, "init", rows=n)
    if not isinstance(perplexity, numbers.Real) or not np.isfinite(perplexity) or perplexity < 1:
        raise ValueError(
            f"Invalid value for argument perplexity. Received: perplexity={perplexity!r}. "
            "Expected a finite number >= 1 (typically 5 to 50)."
        )
    checks.check_int(seed, "seed", minimum=0)
    checks.check_int(n_iter, "n_iter", minimum=1)
    checks.check_int(early_iter, "early_iter", minimum=0)
    checks.check_real(theta, "theta", low=0.0, high=1.0, hint=" (Barnes-Hut accuracy, e.g. 0.5)")
    checks.check_real(init_std, "init_std", low=0.0, hint=" (e.g. 1e-4)")
    backend = tsne.resolve_method(method)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"Invalid value for argument progress. Received: {type(progress).__name__}. "
            "Expected None or a callable(fraction: float, message: str)."
        )
    report = progress or (lambda fraction, message: None)

    # Constant descriptors give all-zero distances: t-SNE has nothing to calibrate on.
    if n < _MIN_TSNE_POINTS or not np.ptp(x, axis=0).any():
        report(1.0, "input map: too few distinct points for t-SNE, trivial layout")
        if start is not None:
            return start.copy()
        return tsne.pca_coords(x, seed) if n < _MIN_TSNE_POINTS else np.zeros((n, 2))

    y0 = tsne.small_init(tsne.pca_coords(x, seed) if start is None else start, seed, init_std)
    used = min(float(perplexity), (n - 1) / 3.0)
    report(0.0, f"input map: {n} points, perplexity {used:g}, {backend}")
    if backend == "opentsne":
        phases = tsne.input_phases(early_iter, n_iter)
        xy = tsne.run_opentsne(x, "euclidean", used, y0, seed, phases, report, theta)
    else:
        # scikit-learn always runs its 250 early-exaggeration iterations (its minimum).
        iters = tsne.EARLY_ITERS + n_iter
        xy = tsne.run_sklearn(x, "euclidean", used, y0, seed, tsne.EARLY_FACTOR, iters, theta)
    report(1.0, "input map: done")
    return xy


@dataclass(frozen=True)
class FilterMap:
    """Result of :func:`filter_map`.

    Attributes:
        xy: ``(F, 2)`` filter coordinates.
        label: ``(F,)`` int, the label driving each filter (argmax of its label activations), -1
            for a filter that never fired.
        strength: ``(F,)`` float, ``1 - P(t_i / sum t_i) / d``: 1 - 1/d for a filter driven by one
            label, 0 for one indifferent to labels or that never fired.
        perplexity_used: The t-SNE perplexity after clamping (0.0 when F < 4: no t-SNE ran).
    """

    xy: np.ndarray
    label: np.ndarray
    strength: np.ndarray
    perplexity_used: float


def filter_map(
    jaccard: np.ndarray,
    label_activation: np.ndarray,
    *,
    seed: int = 0,
    n_iter: int = 750,
    method: str = "auto",
    theta: float = tsne.THETA,
    init: np.ndarray | None = None,
    init_std: float = tsne.INIT_STD,
) -> FilterMap:
    """Embed a layer's filters by co-activation (the filter map, viewer_site/reference/metrics.md).

    t-SNE with squared distances ``(1 - phi)**2`` (distances ``1 - phi``), perplexity
    ``min(F // 3, 30)`` clamped to at most ``(F - 1) / 3`` so that ``3 * perplexity`` neighbours
    exist, random initialisation (std 1e-4) and no early exaggeration (factor 1 throughout; the
    first 250 of the ``n_iter`` iterations use momentum 0.5, as scikit-learn does). Both backends
    receive the distances ``1 - phi``: with ``metric="precomputed"`` openTSNE and scikit-learn
    (>= 1.2) take *distances* and square them in their Gaussian kernels themselves.

    Fewer than 4 filters are laid out exactly by classical MDS of ``1 - phi`` (F == 1: the origin;
    F == 2: two points ``1 - phi`` apart). ``jaccard`` is symmetrised, clipped to [0, 1] and given
    a unit diagonal to absorb rounding in running sums.

    Args:
        jaccard: ``(F, F)`` weighted Jaccard similarities phi: symmetric, in [0, 1], diagonal 1.
        label_activation: ``(F, d)`` sums of each filter's activation over instances of each label
            (negative values are clamped to 0).
        seed: Seed of the random initialisation.
        n_iter: Total t-SNE iterations, at least 250 (scikit-learn's minimum); with ``init``, at
            least 0 (scikit-learn still runs 250).
        method: ``"opentsne"``, ``"sklearn"`` or ``"auto"`` (openTSNE when importable).
        theta: Barnes-Hut accuracy in (0, 1], as in :func:`input_map` (the maps stage: 0.8).
        init: Optional ``(F, 2)`` start instead of the random one, e.g. the previous snapshot's
            filter map: scaled as :func:`input_map` scales its ``init`` (std ``init_std``), then
            ``n_iter`` iterations at momentum 0.8. ``n_iter=0`` keeps it as it is (the maps
            stage, while the co-activations barely changed); labels and strengths are new.
        init_std: Scale of ``init`` (first axis), > 0.

    Returns:
        A :class:`FilterMap`.

    Example:
        >>> fm = filter_map(np.eye(12) * 0.5 + 0.5, np.eye(12, 4), seed=0)
        >>> fm.xy.shape, fm.label[:5].tolist(), fm.perplexity_used
        ((12, 2), [0, 1, 2, 3, -1], 3.6666666666666665)
    """
    phi = checks.as_float_matrix(jaccard, "jaccard", allow_empty=True)
    n_filters = phi.shape[0]
    if phi.shape != (n_filters, n_filters) or n_filters == 0:
        raise ValueError(f"jaccard must be a square (F, F) matrix, F >= 1; got {phi.shape}.")
    if not np.isfinite(phi).all():
        raise ValueError(
            f"jaccard contains {int((~np.isfinite(phi)).sum())} NaN/inf values. Filters that never "
            "fired give 0/0: set those entries to 0 (never co-active), e.g. "
            "np.nan_to_num(jaccard, nan=0.0, posinf=0.0), with the diagonal set to 1."
        )
    if phi.min() < -1e-6 or phi.max() > 1 + 1e-6:
        raise ValueError(
            f"jaccard values must lie in [0, 1]; got range [{phi.min():g}, {phi.max():g}]. "
            "Pass similarities phi, not distances or unnormalised sums."
        )
    t = checks.as_float_matrix(label_activation, "label_activation", allow_empty=True)
    if t.shape[0] != n_filters or t.shape[1] == 0:
        raise ValueError(
            f"label_activation has shape {t.shape}; expected ({n_filters}, d) with d >= 1: "
            "one row per filter of jaccard, one column per label."
        )
    if not np.isfinite(t).all():
        raise ValueError("label_activation contains NaN/inf; pass finite per-label sums.")
    checks.check_int(seed, "seed", minimum=0)
    start = None if init is None else checks.as_float_matrix(init, "init", rows=n_filters)
    checks.check_int(n_iter, "n_iter", minimum=tsne.EARLY_ITERS if start is None else 0)
    checks.check_real(theta, "theta", low=0.0, high=1.0, hint=" (Barnes-Hut accuracy, e.g. 0.5)")
    checks.check_real(init_std, "init_std", low=0.0, hint=" (e.g. 1e-4)")
    backend = tsne.resolve_method(method)

    t = np.maximum(t, 0.0)
    fired = t.sum(axis=1) > 0
    label = np.where(fired, t.argmax(axis=1), -1).astype(int)
    strength = np.where(fired, 1.0 - perplexity_of(t) / t.shape[1], 0.0)

    phi = np.clip((phi + phi.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(phi, 1.0)
    dist = 1.0 - phi
    used = 0.0 if n_filters < _MIN_TSNE_POINTS else min(n_filters // 3, 30, (n_filters - 1) / 3)
    if start is not None and n_iter == 0:
        return FilterMap(start.copy(), label, strength, float(used))
    if n_filters < _MIN_TSNE_POINTS:
        return FilterMap(tsne.classical_mds(dist), label, strength, 0.0)
    used = float(used)
    if start is None:
        y0 = np.random.RandomState(seed).normal(0.0, tsne.INIT_STD, (n_filters, 2))
        phases = [(tsne.EARLY_ITERS, 1.0, 0.5), (n_iter - tsne.EARLY_ITERS, 1.0, 0.8)]
    else:
        y0, phases = tsne.small_init(start, seed, init_std), [(n_iter, 1.0, 0.8)]
    if backend == "opentsne":
        phases = [phase for phase in phases if phase[0] > 0]
        quiet = lambda fraction, message: None  # noqa: E731
        xy = tsne.run_opentsne(dist, "precomputed", used, y0, seed, phases, quiet, theta)
    else:
        iters = max(n_iter, tsne.EARLY_ITERS)
        xy = tsne.run_sklearn(dist, "precomputed", used, y0, seed, 1.0, iters, theta)
    return FilterMap(xy, label, strength, used)
