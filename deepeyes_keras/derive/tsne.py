"""The t-SNE machinery under the input and filter maps: openTSNE or scikit-learn, and starts.

:mod:`deepeyes_keras.derive.embedding` decides *what* is embedded and how long; this module runs
it: openTSNE's affinities and gradient (exact neighbours and Barnes-Hut on small sets, Annoy and
FFT on large ones), scikit-learn's TSNE as the fallback, the scaled PCA start, and classical MDS
for layers too small for t-SNE. NumPy, scikit-learn and openTSNE only.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

METHODS = ("auto", "opentsne", "sklearn")
# Threads of one embedding. The maps worker sets DEEPEYES_MAP_THREADS for its process; 2 suits
# the 2-core machines this was tuned on (more threads only add contention there).
THREADS = max(1, int(os.environ.get("DEEPEYES_MAP_THREADS", "2") or 2))
# Below this many idle cores (measured just before an embedding), the embedding runs on one
# thread: openTSNE's and OpenBLAS's threads spin while they wait for each other, so on contended
# cores two threads burned ~7x the CPU of one for the same maps (issue 15, measured).
IDLE_PER_THREAD = 0.75
IDLE_SAMPLE_SECONDS = 0.2
EARLY_ITERS, EARLY_FACTOR = 250, 12.0  # openTSNE's and scikit-learn's early exaggeration
# Exact neighbours beat Annoy in speed up to ~10k points, and make the affinities deterministic.
EXACT_NEIGHBOURS_MAX = 10_000
# openTSNE's FFT gradient costs O(n) but has a large constant; Barnes-Hut wins on small sets.
FFT_FROM = 10_000
# Barnes-Hut accuracy: both libraries' default. The maps stage passes 0.8 (a third faster at
# 2,000 points, the same share of kept neighbours: bench/embedding.py --schedules).
THETA = 0.5
# Below this many points the Barnes-Hut gradient runs exactly (theta 0): at that size it costs next
# to nothing, and summarising a handful of cells distorts a small map (a 20-filter map's
# trustworthiness: 0.849 at theta 0.5, 0.830 at 0.8, 0.846 exact; issue 15, measured).
EXACT_BELOW = 100
# Initial layouts are scaled as openTSNE scales its PCA initialisation (std 1e-4 on the first axis)
# with 1% seeded jitter, so duplicate points never coincide exactly (Barnes-Hut trees would split
# space forever trying to separate them).
INIT_STD, JITTER = 1e-4, 0.01


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields[:8])


# [(idle jiffies, total jiffies, own CPU seconds, monotonic time), idle cores measured then]
_last_sample: list = []


def _sample() -> tuple[float, float, float, float] | None:
    import time

    times = _cpu_times()
    if times is None:
        return None
    own = os.times()
    return times[0], times[1], own.user + own.system, time.monotonic()


def idle_cores(seconds: float = IDLE_SAMPLE_SECONDS) -> float:
    """How many cores other processes have left idle lately, from /proc/stat.

    Measured since the previous call (this process's own CPU time taken out, so the embeddings
    themselves do not count as contention); the first call, or one after a long pause, samples
    for ``seconds``. A call less than ``IDLE_SAMPLE_SECONDS`` after the last measurement returns
    that one: small maps follow each other within milliseconds, and sleeping to sample before
    each cost more than the maps. Without /proc the 1-minute load average stands in.
    """
    import time

    cores = os.cpu_count() or 1
    now = _sample()
    if now is None:
        try:
            return max(0.0, cores - os.getloadavg()[0])
        except OSError:
            return float(cores)
    last = _last_sample[0] if _last_sample else None
    if last is not None and 0.0 <= now[3] - last[3] < IDLE_SAMPLE_SECONDS:
        return _last_sample[1]
    if last is None or not 0.0 <= now[3] - last[3] <= 60.0:
        last = now
        time.sleep(seconds)
        now = _sample()
    total = now[1] - last[1]
    if total <= 0:
        idle = float(cores)
    else:
        jiffy = total / (cores * max(now[3] - last[3], 1e-9))  # jiffies per core-second
        busy_others = (total - (now[0] - last[0])) - (now[2] - last[2]) * jiffy
        idle = min(float(cores), max(0.0, cores * (1.0 - busy_others / total)))
    _last_sample[:] = [now, idle]
    return idle


_fixed: list[int] = []  # set by fixed_threads()


def threads_now(wanted: int | None = None, idle: float | None = None) -> int:
    """Threads for the next embedding: ``wanted`` (default THREADS) when that many cores are
    about idle (``IDLE_PER_THREAD`` each), else one. ``DEEPEYES_MAP_THREADS_ADAPT=0`` in the
    environment keeps ``wanted`` whatever the load (the benchmark's before-and-after knob).
    Inside :func:`fixed_threads`, its count."""
    if _fixed:
        return _fixed[-1]
    wanted = THREADS if wanted is None else max(1, int(wanted))
    if wanted == 1 or os.environ.get("DEEPEYES_MAP_THREADS_ADAPT") == "0":  # "0": fixed count
        return wanted
    idle = idle_cores() if idle is None else idle
    return wanted if idle >= IDLE_PER_THREAD * wanted else 1


@contextlib.contextmanager
def fixed_threads(n: int):
    """Every embedding started inside the block, from any thread, runs on ``n`` threads (the
    maps stage computing several layers at once gives each one)."""
    _fixed.append(max(1, int(n)))
    try:
        yield
    finally:
        _fixed.pop()


class limited_threads:
    """Runs the block on ``n`` threads: the BLAS/OpenMP pools (openTSNE's n_jobs is passed).

    ``limited_threads(threads_now())`` around any NumPy/scikit-learn work keeps its threads
    from spinning against each other on cores other processes hold (the pipeline wraps each
    stage so: PCA, probes and views use BLAS too)."""

    def __init__(self, n: int):
        self.n = n
        self._limits = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn brings threadpoolctl; without it only n_jobs changes
            return self
        self._limits = threadpool_limits(limits=self.n)
        return self

    def __exit__(self, *exc):
        if self._limits is not None:
            self._limits.restore_original_limits()


def input_phases(early_iter: int, n_iter: int) -> list[tuple[int, float, float]]:
    """The input map's phases as (iterations, exaggeration, momentum); empty ones left out."""
    phases = [(early_iter, EARLY_FACTOR, 0.8), (n_iter, 1.0, 0.8)]
    return [phase for phase in phases if phase[0] > 0]


def tsne_embedding(
    data, metric, perplexity, y0, seed, threads: int | None = None, theta: float = THETA
):
    """openTSNE affinities and starting embedding, with this module's neighbours and gradient."""
    from openTSNE import TSNEEmbedding, affinity

    n = data.shape[0]
    neighbours = "exact" if n <= EXACT_NEIGHBOURS_MAX else "annoy"
    gradient = "fft" if n >= FFT_FROM else "bh"
    jobs = dict(n_jobs=THREADS if threads is None else threads, random_state=seed)
    aff = affinity.PerplexityBasedNN(data, perplexity, metric=metric, method=neighbours, **jobs)
    theta = 0.0 if n < EXACT_BELOW else theta
    return TSNEEmbedding(y0, aff, negative_gradient_method=gradient, theta=theta, **jobs)


def run_opentsne(data, metric, perplexity, y0, seed, phases, report, theta=THETA) -> np.ndarray:
    n = threads_now()
    with limited_threads(n):
        return _run_opentsne(data, metric, perplexity, y0, seed, phases, report, n, theta)


def _run_opentsne(data, metric, perplexity, y0, seed, phases, report, threads, theta):
    emb = tsne_embedding(data, metric, perplexity, y0, seed, threads, theta)
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


def run_sklearn(data, metric, perplexity, y0, seed, early, max_iter, theta=THETA) -> np.ndarray:
    from sklearn.manifold import TSNE

    angle = 0.0 if data.shape[0] < EXACT_BELOW else theta
    schedule = dict(perplexity=perplexity, early_exaggeration=early, max_iter=max_iter, angle=angle)
    n = threads_now()
    tsne = TSNE(2, metric=metric, init=y0.copy(), random_state=seed, n_jobs=n, **schedule)
    # Copies: scikit-learn optimises ``init`` in place and may square a precomputed matrix in place.
    with limited_threads(n):
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


def small_init(y: np.ndarray, seed: int, std: float = INIT_STD) -> np.ndarray:
    """``y`` centred, scaled to ``std`` on its first axis, plus seeded jitter (``JITTER * std``)."""
    rng = np.random.RandomState(seed)
    y = y - y.mean(axis=0)
    scale = y[:, 0].std() or y.std()
    if scale == 0:
        return rng.normal(0.0, std, y.shape)
    return y * (std / scale) + rng.normal(0.0, std * JITTER, y.shape)


def classical_mds(dist: np.ndarray) -> np.ndarray:
    n = dist.shape[0]
    centring = np.eye(n) - 1.0 / n
    values, vectors = np.linalg.eigh(-0.5 * centring @ (dist**2) @ centring)
    top = np.argsort(values)[::-1][:2]
    out = np.zeros((n, 2))
    out[:, : len(top)] = vectors[:, top] * np.sqrt(np.maximum(values[top], 0.0))
    return out
