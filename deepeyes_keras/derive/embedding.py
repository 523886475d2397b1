"""2-D embeddings behind DeepEyes' input map and filter map, and the perplexity of an instance.

Plain NumPy / scikit-learn / openTSNE (run by :mod:`deepeyes_keras.derive.tsne`), following the
definitions in viewer_site/reference/maps-and-views.md. The site build and the worker
that computes maps run without TensorFlow, so this module never imports it (nor Keras).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deepeyes_keras.derive import tsne

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
    a = _as_float_matrix(activations, "activations", allow_empty=True)
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
    x = np.nan_to_num(_as_float_matrix(descriptors, "descriptors", allow_empty=True))
    if not isinstance(tolerance, numbers.Real) or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"Invalid value for argument tolerance. Received: tolerance={tolerance!r}. "
            "Expected a finite number >= 0 (0: only exactly equal descriptors merge)."
        )
    if len(x) == 0:
        empty = np.zeros(0, np.int64)
        return Duplicates(empty, empty, empty)
    top = float(np.abs(x).max())
    keys = np.rint(x / (tolerance * top)) if tolerance > 0 and top > 0 else x
    _, first, inverse, counts = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
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

    ``init`` (else the PCA coordinates) is centred and scaled to std 1e-4 on its first axis, plus
    1% seeded jitter, as openTSNE scales its PCA initialisation: only its arrangement matters, and
    a snapshot started from the previous one's layout stays comparable with it.

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
        progress: Optional ``callable(fraction, message)``, called about a dozen times as
            ``fraction`` rises to 1.0 (scikit-learn has no hook mid-run: start and end only).

    Returns:
        ``(n, 2)`` float64 array of coordinates.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 10))
        >>> input_map(x, perplexity=20, seed=0).shape
        (200, 2)
    """
    x = _as_float_matrix(descriptors, "descriptors", allow_empty=True)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    n = x.shape[0]
    start = None if init is None else _as_float_matrix(init, "init", rows=n)
    if not isinstance(perplexity, numbers.Real) or not np.isfinite(perplexity) or perplexity < 1:
        raise ValueError(
            f"Invalid value for argument perplexity. Received: perplexity={perplexity!r}. "
            "Expected a finite number >= 1 (typically 5 to 50)."
        )
    _check_int(seed, "seed", minimum=0)
    _check_int(n_iter, "n_iter", minimum=1)
    _check_int(early_iter, "early_iter", minimum=0)
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

    y0 = tsne.small_init(tsne.pca_coords(x, seed) if start is None else start, seed)
    used = min(float(perplexity), (n - 1) / 3.0)
    report(0.0, f"input map: {n} points, perplexity {used:g}, {backend}")
    if backend == "opentsne":
        xy = tsne.run_opentsne(
            x, "euclidean", used, y0, seed, tsne.input_phases(early_iter, n_iter), report
        )
    else:
        # scikit-learn always runs its 250 early-exaggeration iterations (its minimum).
        xy = tsne.run_sklearn(
            x, "euclidean", used, y0, seed, tsne.EARLY_FACTOR, tsne.EARLY_ITERS + n_iter
        )
    report(1.0, "input map: done")
    return xy


def carry_layout(
    prev_ids: Sequence | np.ndarray,
    prev_layout: np.ndarray,
    new_ids: Sequence | np.ndarray,
    new_descriptors: np.ndarray,
    prev_descriptors: np.ndarray | None = None,
    *,
    n_neighbors: int = 5,
) -> np.ndarray:
    """Build an ``init`` for :func:`input_map` from the previous snapshot's layout.

    Points whose id is in ``prev_ids`` keep their previous coordinates exactly. A new point goes to
    the mean position of its ``n_neighbors`` nearest previous points in descriptor space:

    * given ``prev_descriptors``: nearest among all previous points (new descriptor against the
      previous descriptors);
    * else, when some ids are shared: nearest among the shared points, compared by their *current*
      descriptors (their rows of ``new_descriptors``), so no history needs storing;
    * with neither: the new points' PCA coordinates, rescaled to the previous layout's per-axis
      standard deviation and centred on its mean (PCA coordinates alone if it has no points).

    Args:
        prev_ids: ``(m,)`` unique ids of the previous layout's rows (any hashable values).
        prev_layout: ``(m, 2)`` previous coordinates.
        new_ids: ``(n,)`` unique ids of the new points, in the order of ``new_descriptors``.
        new_descriptors: ``(n, D)`` descriptors of the new points.
        prev_descriptors: Optional ``(m, D)`` descriptors of the previous points.
        n_neighbors: Previous points averaged per new point (fewer when fewer exist).

    Returns:
        ``(n, 2)`` float64 layout in the previous layout's frame, ready for ``input_map(init=...)``.

    Example:
        >>> prev = np.array([[0.0, 0.0], [10.0, 0.0]])
        >>> carry_layout([1, 2], prev, [2, 3], np.array([[1.0], [1.1]]))
        array([[10.,  0.],
               [10.,  0.]])
    """
    prev_keys, new_keys = _unique_ids(prev_ids, "prev_ids"), _unique_ids(new_ids, "new_ids")
    prev_xy = _as_float_matrix(prev_layout, "prev_layout", rows=len(prev_keys))
    x_new = np.nan_to_num(_as_float_matrix(new_descriptors, "new_descriptors", allow_empty=True))
    if x_new.shape[0] != len(new_keys):
        got = f"{x_new.shape[0]} rows for {len(new_keys)} ids"
        raise ValueError(f"new_descriptors needs one descriptor row per new id; got {got}.")
    _check_int(n_neighbors, "n_neighbors", minimum=1)
    where = {key: i for i, key in enumerate(prev_keys)}
    shared = np.array([key in where for key in new_keys], dtype=bool).reshape(-1)
    out = np.zeros((len(new_keys), 2))
    out[shared] = prev_xy[[where[key] for key in new_keys if key in where]]
    fresh = ~shared
    if not fresh.any():
        return out
    if len(prev_keys) == 0:
        return tsne.pca_coords(x_new, 0)
    if prev_descriptors is not None:
        ref = np.nan_to_num(_as_float_matrix(prev_descriptors, "prev_descriptors"))
        if ref.shape != (len(prev_keys), x_new.shape[1]):
            raise ValueError(
                f"prev_descriptors has shape {ref.shape}; expected "
                f"{(len(prev_keys), x_new.shape[1])}: one row per prev id, D as new_descriptors."
            )
        ref_xy = prev_xy
    elif shared.any():
        ref, ref_xy = x_new[shared], out[shared]
    else:
        pca = tsne.pca_coords(x_new, 0)
        spread = pca.std(axis=0)
        return pca * (prev_xy.std(axis=0) / np.where(spread > 0, spread, 1.0)) + prev_xy.mean(0)
    from sklearn.neighbors import NearestNeighbors

    knn = NearestNeighbors(n_neighbors=min(n_neighbors, ref.shape[0])).fit(ref)
    out[fresh] = ref_xy[knn.kneighbors(x_new[fresh], return_distance=False)].mean(axis=1)
    return out


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
        n_iter: Total t-SNE iterations, at least 250 (scikit-learn's minimum).
        method: ``"opentsne"``, ``"sklearn"`` or ``"auto"`` (openTSNE when importable).

    Returns:
        A :class:`FilterMap`.

    Example:
        >>> fm = filter_map(np.eye(12) * 0.5 + 0.5, np.eye(12, 4), seed=0)
        >>> fm.xy.shape, fm.label[:5].tolist(), fm.perplexity_used
        ((12, 2), [0, 1, 2, 3, -1], 3.6666666666666665)
    """
    phi = _as_float_matrix(jaccard, "jaccard", allow_empty=True)
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
    t = _as_float_matrix(label_activation, "label_activation", allow_empty=True)
    if t.shape[0] != n_filters or t.shape[1] == 0:
        raise ValueError(
            f"label_activation has shape {t.shape}; expected ({n_filters}, d) with d >= 1: "
            "one row per filter of jaccard, one column per label."
        )
    if not np.isfinite(t).all():
        raise ValueError("label_activation contains NaN/inf; pass finite per-label sums.")
    _check_int(seed, "seed", minimum=0)
    _check_int(n_iter, "n_iter", minimum=tsne.EARLY_ITERS)
    backend = tsne.resolve_method(method)

    t = np.maximum(t, 0.0)
    fired = t.sum(axis=1) > 0
    label = np.where(fired, t.argmax(axis=1), -1).astype(int)
    strength = np.where(fired, 1.0 - perplexity_of(t) / t.shape[1], 0.0)

    phi = np.clip((phi + phi.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(phi, 1.0)
    dist = 1.0 - phi
    if n_filters < _MIN_TSNE_POINTS:
        return FilterMap(tsne.classical_mds(dist), label, strength, 0.0)
    used = min(float(min(n_filters // 3, 30)), (n_filters - 1) / 3.0)
    y0 = np.random.RandomState(seed).normal(0.0, tsne.INIT_STD, (n_filters, 2))
    if backend == "opentsne":
        phases = [(tsne.EARLY_ITERS, 1.0, 0.5), (n_iter - tsne.EARLY_ITERS, 1.0, 0.8)]
        xy = tsne.run_opentsne(dist, "precomputed", used, y0, seed, phases, lambda f, m: None)
    else:
        xy = tsne.run_sklearn(dist, "precomputed", used, y0, seed, 1.0, n_iter)
    return FilterMap(xy, label, strength, used)


def _as_float_matrix(value, name: str, *, allow_empty: bool = False, rows=None) -> np.ndarray:
    """Validate a numeric 2-D array; with ``rows``, a finite ``(rows, 2)`` layout."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"{name} must be a numeric array; received dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows x columns); received shape {arr.shape}. "
            "Reshape a single row with x.reshape(1, -1)."
        )
    if arr.shape[0] == 0 and not allow_empty and rows is None:
        raise ValueError(f"{name} has no rows (shape {arr.shape}); pass at least one.")
    if rows is not None and (arr.shape != (rows, 2) or not np.isfinite(arr).all()):
        bad = "" if arr.shape != (rows, 2) else " with NaN/inf"
        raise ValueError(f"{name} must be a finite ({rows}, 2) layout; got shape {arr.shape}{bad}.")
    return arr.astype(np.float64, copy=False)


def _check_int(value, name: str, *, minimum: int) -> None:
    message = f"argument {name}. Received: {name}={value!r}. Expected an integer >= {minimum}."
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid type for {message}")
    if value < minimum:
        raise ValueError(f"Invalid value for {message}")


def _unique_ids(ids, name: str) -> list:
    keys = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} contains duplicate ids; give each point a unique id.")
    return keys
