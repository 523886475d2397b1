"""The t-SNE machinery under the input and filter maps: openTSNE or scikit-learn, and starts.

:mod:`deepeyes_keras.derive.embedding` decides *what* is embedded and how long; this module runs
it: openTSNE's affinities and gradient (exact neighbours and Barnes-Hut on small sets, Annoy and
FFT on large ones), scikit-learn's TSNE as the fallback, the scaled PCA start, and classical MDS
for layers too small for t-SNE. NumPy, scikit-learn and openTSNE only.
"""

from __future__ import annotations

import os

import numpy as np

METHODS = ("auto", "opentsne", "sklearn")
# Threads of one embedding. The maps worker sets DEEPEYES_MAP_THREADS for its process; 2 suits
# the 2-core machines this was tuned on (more threads only add contention there).
THREADS = max(1, int(os.environ.get("DEEPEYES_MAP_THREADS", "2") or 2))
EARLY_ITERS, EARLY_FACTOR = 250, 12.0  # openTSNE's and scikit-learn's early exaggeration
# Exact neighbours beat Annoy in speed up to ~10k points, and make the affinities deterministic.
EXACT_NEIGHBOURS_MAX = 10_000
# openTSNE's FFT gradient costs O(n) but has a large constant; Barnes-Hut wins on small sets.
FFT_FROM = 10_000
# Initial layouts are scaled as openTSNE scales its PCA initialisation (std 1e-4 on the first axis)
# with 1% seeded jitter, so duplicate points never coincide exactly (Barnes-Hut trees would split
# space forever trying to separate them).
INIT_STD, JITTER = 1e-4, 0.01


def input_phases(early_iter: int, n_iter: int) -> list[tuple[int, float, float]]:
    """The input map's phases as (iterations, exaggeration, momentum); empty ones left out."""
    phases = [(early_iter, EARLY_FACTOR, 0.8), (n_iter, 1.0, 0.8)]
    return [phase for phase in phases if phase[0] > 0]


def tsne_embedding(data, metric, perplexity, y0, seed):
    """openTSNE affinities and starting embedding, with this module's neighbours and gradient."""
    from openTSNE import TSNEEmbedding, affinity

    n = data.shape[0]
    neighbours = "exact" if n <= EXACT_NEIGHBOURS_MAX else "annoy"
    gradient = "fft" if n >= FFT_FROM else "bh"
    jobs = dict(n_jobs=THREADS, random_state=seed)
    aff = affinity.PerplexityBasedNN(data, perplexity, metric=metric, method=neighbours, **jobs)
    return TSNEEmbedding(y0, aff, negative_gradient_method=gradient, **jobs)


def run_opentsne(data, metric, perplexity, y0, seed, phases, report) -> np.ndarray:
    emb = tsne_embedding(data, metric, perplexity, y0, seed)
    total, done = sum(p[0] for p in phases), 0
    for iters, factor, momentum in phases:

        def tick(iteration, error, embedding, offset=done):
            # Returns None on purpose: a truthy return makes openTSNE stop optimising.
            step = offset + iteration
            report(0.05 + 0.95 * step / total, f"t-SNE iteration {step} of {total}")

        hooks = dict(callbacks=tick, callbacks_every_iters=max(1, total // 10), inplace=True)
        emb = emb.optimize(iters, exaggeration=factor, momentum=momentum, **hooks)
        done += iters
    return np.array(emb, dtype=np.float64)


def run_sklearn(data, metric, perplexity, y0, seed, early, max_iter) -> np.ndarray:
    from sklearn.manifold import TSNE

    schedule = dict(perplexity=perplexity, early_exaggeration=early, max_iter=max_iter)
    tsne = TSNE(2, metric=metric, init=y0.copy(), random_state=seed, n_jobs=THREADS, **schedule)
    # Copies: scikit-learn optimises ``init`` in place and may square a precomputed matrix in place.
    return np.asarray(tsne.fit_transform(data.copy()), dtype=np.float64)


def resolve_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(
            f"Invalid value for argument method. Received: method={method!r}. "
            f"Expected one of {METHODS}."
        )
    try:
        import openTSNE  # noqa: F401
    except ImportError as exc:
        if method == "opentsne":
            raise ImportError(
                "method='opentsne' needs `pip install openTSNE`; or pass 'sklearn'."
            ) from exc
        return "sklearn"
    return "opentsne" if method == "auto" else method


def pca_coords(x: np.ndarray, seed: int) -> np.ndarray:
    """First two principal coordinates, zero-padded; exact distances for up to 3 points."""
    out = np.zeros((x.shape[0], 2))
    centred = x - x.mean(axis=0) if x.size else x
    if not centred.any():
        return out
    from sklearn.decomposition import PCA

    k = min(2, *centred.shape)
    out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(centred)
    return out


def small_init(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    y = y - y.mean(axis=0)
    scale = y[:, 0].std() or y.std()
    if scale == 0:
        return rng.normal(0.0, INIT_STD, y.shape)
    return y * (INIT_STD / scale) + rng.normal(0.0, INIT_STD * JITTER, y.shape)


def classical_mds(dist: np.ndarray) -> np.ndarray:
    n = dist.shape[0]
    centring = np.eye(n) - 1.0 / n
    values, vectors = np.linalg.eigh(-0.5 * centring @ (dist**2) @ centring)
    top = np.argsort(values)[::-1][:2]
    out = np.zeros((n, 2))
    out[:, : len(top)] = vectors[:, top] * np.sqrt(np.maximum(values[top], 0.0))
    return out
