"""Starting a snapshot's input map from the previous snapshot's layout: :func:`carry_layout`.

Used by the maps stage (:mod:`deepeyes_keras.derive.maps`) so that layouts stay comparable from one
snapshot to the next; re-exported by :mod:`deepeyes_keras.derive.embedding`. NumPy and
scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepeyes_keras.derive import checks, tsne

__all__ = ["carry_layout"]


def carry_layout(
    prev_ids: Sequence | np.ndarray,
    prev_layout: np.ndarray,
    new_ids: Sequence | np.ndarray,
    new_descriptors: np.ndarray,
    prev_descriptors: np.ndarray | None = None,
    *,
    n_neighbors: int = 5,
) -> np.ndarray:
    """A start for :func:`~deepeyes_keras.derive.embedding.input_map` from the previous layout.

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
    prev_keys = checks.unique_ids(prev_ids, "prev_ids")
    new_keys = checks.unique_ids(new_ids, "new_ids")
    prev_xy = checks.as_float_matrix(prev_layout, "prev_layout", rows=len(prev_keys))
    x_new = checks.as_float_matrix(new_descriptors, "new_descriptors", allow_empty=True)
    x_new = np.nan_to_num(x_new)
    if x_new.shape[0] != len(new_keys):
        got = f"{x_new.shape[0]} rows for {len(new_keys)} ids"
        raise ValueError(f"new_descriptors needs one descriptor row per new id; got {got}.")
    checks.check_int(n_neighbors, "n_neighbors", minimum=1)
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
        ref = np.nan_to_num(checks.as_float_matrix(prev_descriptors, "prev_descriptors"))
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
