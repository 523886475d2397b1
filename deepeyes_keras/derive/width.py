"""How wide must a layer be (T4)? Estimates from the activations a layer's reservoir recorded.

Our automatic rule (the paper judged by eye), chosen from retraining evidence on four networks
(case_studies/width_rule/results.md) and documented in viewer_site/reference/findings.md; every
threshold is a field of :class:`WidthThresholds`. NumPy and SciPy only.

- The **spectrum**: covariance eigenvalues of the layer's output vectors over its instances (a
  conv layer's instances are its sampled positions), on the *raw* activations, what the next
  layer receives (in a ReLU layer raw and clamped agree; without ReLU, as in the paper's LeNet
  conv layers, clamping splits a direction into two halves).
- The **signal rank** r (:func:`signal_rank`): the number of singular values of the centred
  activations above the Gavish-Donoho hard threshold for an unknown noise level (Gavish and
  Donoho, IEEE Trans. Inf. Theory 60(8), 2014), ``omega(beta) * median(singular values)``. It
  tells the directions the layer really uses from the noise that a finite sample of a wide layer
  spreads over every direction (which drives a 99%-of-variance count towards F). The threshold
  assumes the median singular value is noise; when the noise it implies would hold more than
  ``noise_share`` of the variance, there is no noise floor to see (a right-sized layer uses every
  direction) and r is the count of directions holding ``delta`` of the variance instead.
- The **suggested width** (:func:`suggested_width`): ``ceil(width_factor * r)``, at most the
  live filters. The factor is slack for training from scratch: networks retrained at exactly r
  lost up to 1.3 pp of accuracy, at 2 r at most 0.2 pp (the evidence above). A cut is proposed
  only when it removes at least ``min_cut`` of the layer.

Beside r the results carry the k(delta) count (Shenk et al. 2019, Richter et al. 2021, SVCCA's
99%), the participation ratio and the effective rank, and the cumulative explained-variance curve
the layer page draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

EPS = 1e-9  # slack in comparisons of shares, so that rounding does not flip a rule
# Singular values below RTOL x the largest are rounding error of the eigendecomposition (whose
# eigenvalues are exact to about 1e-16 x the largest, i.e. singular values to about 1e-8 x).
RTOL = 1e-6


@dataclass(frozen=True)
class WidthThresholds:
    """Named thresholds of the width rule (see the module docstring).

    Attributes:
        delta: share of the variance the k(delta) count keeps (0.99, as Shenk et al., Richter et
            al. and SVCCA); the signal rank when no noise floor is visible.
        noise_share: the Gavish-Donoho rank is used when the noise it implies holds at most this
            share of the variance (0.5: trained layers measured 0.00-0.16, layers built to use
            every direction 0.85-0.99).
        width_factor: suggested width = ceil(width_factor x signal rank) (2.0, from retraining
            evidence on four networks: 1.0 lost up to 1.3 pp of accuracy, 1.5 up to 1.0 pp,
            2.0 at most 0.2 pp).
        min_cut: a cut is proposed only when the suggested width is below F x (1 - min_cut)
            (0.2: a change must remove at least a fifth of a layer to be worth a retraining;
            every proposal is verified by retraining, so a lower bar costs a retraining, not
            accuracy).
    """

    delta: float = 0.99
    noise_share: float = 0.5
    width_factor: float = 2.0
    min_cut: float = 0.2

    def __post_init__(self):
        ok = {
            "delta": 0 < self.delta <= 1,
            "noise_share": 0 < self.noise_share <= 1,
            "width_factor": self.width_factor >= 1,
            "min_cut": 0 <= self.min_cut < 1,
        }
        if not all(ok.values()):
            bad = ", ".join(f"{k}={getattr(self, k)!r}" for k, good in ok.items() if not good)
            raise ValueError(
                f"Invalid WidthThresholds. Received: {bad}. Expected 0 < delta <= 1, "
                "0 < noise_share <= 1, width_factor >= 1 and 0 <= min_cut < 1."
            )


@dataclass(frozen=True)
class Spectrum:
    """Covariance eigenvalues of a layer's activations (see :func:`spectrum`)."""

    eigenvalues: np.ndarray  # (F,), descending, >= 0
    instances: int  # finite rows used
    dropped: int  # rows dropped for a NaN or an infinity


@dataclass(frozen=True)
class VarianceWidth:
    """The explained-variance count of a layer and the simpler signals beside it."""

    k: int
    n_filters: int
    saturation: float  # k / F
    delta: float
    cumulative: list[float]  # share held by the first 1, 2, ..., F directions (for a chart)
    participation_ratio: float
    effective_rank: float
    total_variance: float
    instances: int
    dropped: int
    rank_limit: int  # min(F, instances - 1): the most directions the sample can show


@dataclass(frozen=True)
class SignalRank:
    """How many directions a layer uses, told apart from sampling noise (:func:`signal_rank`)."""

    rank: int  # the signal rank r the width rule uses
    method: str  # "gavish-donoho", or "variance" when no noise floor is visible
    gavish_donoho: int  # singular values above the hard threshold
    noise_share: float  # share of the variance the threshold's implied noise would hold
    variance_count: int  # k(delta)


@dataclass(frozen=True)
class WidthSuggestion:
    """T4 advice for one layer: read ``cut`` and ``width``; ``text`` says why."""

    n_filters: int
    suggested: int  # min(F - dead, ceil(width_factor x rank)), at least 1
    cut: bool  # propose retraining with ``width`` filters
    width: int  # suggested if cut, else n_filters
    sample_limited: bool  # too few instances to tell: no cut
    dead: int
    redundancy_width: int  # F - dead - sum(len(group) - 1): the Jaccard signal, for comparison
    signal: SignalRank
    variance: VarianceWidth
    text: str


def spectrum(activations: ArrayLike, *, clamp: bool = False) -> Spectrum:
    """Eigenvalues of the covariance of a layer's activation vectors: F, descending, >= 0.

    Rows with a NaN or an infinity are dropped and counted. Constant columns (dead filters) get
    exactly zero variance. With n < F instances the n x n Gram matrix is used; at most n - 1
    eigenvalues are non-zero and the rest are 0. Fewer than 2 instances: all zero.

    Args:
        activations: (n, F) layer outputs, one row per instance.
        clamp: use max(a, 0) (the statistics' convention) instead of the raw values.

    Example:
        >>> spectrum(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])).eigenvalues
        array([4., 0.])
    """
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"Invalid activations. Received shape {x.shape}. Expected (n, F).")
    finite = np.isfinite(x).all(axis=1)
    x = x[finite]
    if clamp:
        x = np.maximum(x, 0.0)
    n, f = x.shape
    values = np.zeros(f)
    if n >= 2 and f > 0:
        constant = np.ptp(x, axis=0) == 0  # exact: the mean of equal values can round
        x = x - x.mean(axis=0)
        x[:, constant] = 0.0
        scale = float(np.abs(x).max())
        if scale > 0:
            x /= scale  # shares are scale-free; this keeps huge or tiny activations in range
            gram = x.T @ x if f <= n else x @ x.T
            eig = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)[:f]
            values[: len(eig)] = eig * (scale**2 / (n - 1))
    return Spectrum(eigenvalues=values, instances=int(n), dropped=int((~finite).sum()))


def explained_variance_width(
    activations: ArrayLike, *, delta: float = 0.99, clamp: bool = False
) -> VarianceWidth:
    """The number of principal directions that hold ``delta`` of a layer's output variance.

    k = min{k : sum_{i<=k} l_i / sum l_i >= delta}, saturation = k / F, participation ratio
    (sum l)^2 / sum l^2, effective rank exp(H(l / sum l)) (natural log, 0 log 0 = 0). A layer
    without variance (all zero, all constant, fewer than 2 finite instances) has k = 0,
    saturation 0, participation ratio and effective rank 0, and an empty ``cumulative``;
    ``instances`` and ``rank_limit`` tell the cases apart.

    Args:
        activations: (n, F) layer outputs (conv layers: one row per sampled position).
        delta: the share of the variance to keep, in (0, 1].
        clamp: estimate on max(a, 0) instead of the raw outputs (see the module docstring).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(500, 3)) @ np.eye(3, 8)
        >>> explained_variance_width(x).k
        3
    """
    if not 0 < delta <= 1:
        raise ValueError(f"Invalid delta. Received: delta={delta}. Expected 0 < delta <= 1.")
    s = spectrum(activations, clamp=clamp)
    lam = s.eigenvalues
    f, total = len(lam), float(lam.sum())
    k, cumulative, ratio, rank = 0, [], 0.0, 0.0
    if total > 0:
        share = np.cumsum(lam) / total
        k = min(int(np.searchsorted(share, delta - EPS)) + 1, f)
        cumulative = np.minimum(share, 1.0).tolist()
        ratio = total**2 / float((lam**2).sum())
        p = lam[lam > 0] / total
        rank = math.exp(float(-(p * np.log(p)).sum()))
    return VarianceWidth(
        k=k,
        n_filters=f,
        saturation=k / f if f else 0.0,
        delta=delta,
        cumulative=cumulative,
        participation_ratio=ratio,
        effective_rank=rank,
        total_variance=total,
        instances=s.instances,
        dropped=s.dropped,
        rank_limit=min(f, max(s.instances - 1, 0)),
    )


def gavish_donoho_omega(beta: float) -> float:
    """omega(beta) of the hard threshold for an unknown noise level (Gavish-Donoho's fit)."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


@lru_cache(maxsize=256)
def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko-Pastur law with aspect ratio ``beta`` in (0, 1] (unit variance)."""
    from scipy import integrate, optimize

    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(x):
        return math.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * math.pi * beta * x)

    def below(m):
        return integrate.quad(density, lo, m, limit=200)[0] - 0.5

    return float(optimize.brentq(below, lo + 1e-12, hi))


def signal_rank(
    activations: ArrayLike, *, thresholds: WidthThresholds = WidthThresholds(), clamp: bool = False
) -> SignalRank:
    """The number of directions a layer's activations use, above the noise of a finite sample.

    With the centred activations' singular values s (descending) of an n x F sample,
    beta = min(n, F) / max(n, F): the Gavish-Donoho count is #{s_i > omega(beta) median(s)}; the
    noise it implies has variance sigma^2 = median(s)^2 / (max(n, F) mu_beta) per unit (mu_beta:
    the Marchenko-Pastur median), a share F sigma^2 / sum(s^2) of the variance. When that share
    exceeds ``thresholds.noise_share``, no noise floor is visible and the rank is
    k(delta) instead.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(1000, 4)) @ rng.normal(size=(4, 64))
        >>> signal_rank(x + 0.01 * rng.normal(size=(1000, 64))).rank
        4
    """
    v = explained_variance_width(activations, delta=thresholds.delta, clamp=clamp)
    s = spectrum(activations, clamp=clamp)
    n, f = s.instances, len(s.eigenvalues)
    if v.total_variance <= 0 or n < 2 or f == 0:
        return SignalRank(v.k, "variance", 0, 1.0, v.k)
    # Singular values of the centred data from the covariance eigenvalues: s^2 = (n - 1) l.
    sv = np.sqrt(np.maximum(s.eigenvalues[: min(n, f)], 0.0) * (n - 1))
    beta = min(n, f) / max(n, f)
    median = float(np.median(sv))
    # Singular values at rounding level (an exactly low-rank layer) are zero, not signal.
    floor = max(gavish_donoho_omega(beta) * median, RTOL * float(sv.max()))
    gd = int((sv > floor).sum())
    sigma2 = median**2 / (max(n, f) * marchenko_pastur_median(beta))
    share = float(min(1.0, f * sigma2 / v.total_variance))
    if share <= thresholds.noise_share + EPS:
        return SignalRank(gd, "gavish-donoho", gd, share, v.k)
    return SignalRank(v.k, "variance", gd, share, v.k)


def suggested_width(
    activations: ArrayLike,
    *,
    dead: int | list[int] | tuple[int, ...] = (),
    redundant_groups=(),
    clamp: bool = False,
    thresholds: WidthThresholds = WidthThresholds(),
) -> WidthSuggestion:
    """T4: the width a layer needs, from its signal rank and its dead filters.

    suggested = min(F - dead, ceil(width_factor x r)), at least 1; dead filters (T2, from the
    clamped statistics) never count. A cut (``cut``, ``width = suggested``) is proposed only when
    suggested < F x (1 - min_cut) and the sample is large enough to tell (``sample_limited``: a
    sample of n instances shows at most n - 1 directions; when r reaches (1 - min_cut) of that
    limit below F, the instances may be what sets r); otherwise ``width = F``. Read it as
    "retrain with ``width`` filters and compare": ``deepeyes redesign RUN --verify`` does.
    ``redundancy_width`` (the Jaccard groups of T4) is shown beside it and does not enter the
    rule.

    Args:
        activations: (n, F) layer outputs.
        dead: the dead filters' indices (or their number).
        redundant_groups: groups of redundant filters (``findings.redundant_groups``).
        clamp: see :func:`explained_variance_width`.
        thresholds: the rule's thresholds.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(1000, 4)) @ rng.normal(size=(4, 64))
        >>> s = suggested_width(x)
        >>> s.cut, s.width
        (True, 8)
    """
    t = thresholds
    v = explained_variance_width(activations, delta=t.delta, clamp=clamp)
    r = signal_rank(activations, thresholds=t, clamp=clamp)
    f = v.n_filters
    n_dead = int(dead) if isinstance(dead, int | np.integer) else len(set(dead))
    if not 0 <= n_dead <= f:
        raise ValueError(f"Invalid dead. Received {n_dead} dead filters. Expected 0 to F={f}.")
    live = f - n_dead
    suggested = max(1, min(live, math.ceil(t.width_factor * r.rank - EPS)))
    redundancy = max(1, live - sum(len(g) - 1 for g in redundant_groups))
    # A sample of n instances shows at most n - 1 directions: when the rank reaches most of that
    # limit, the instances rather than the layer may set it.
    limited = v.rank_limit < f and r.rank >= (1 - t.min_cut) * v.rank_limit - EPS
    cut = not limited and suggested < f * (1 - t.min_cut) - EPS
    how = (
        f"{r.rank} directions above the noise (Gavish-Donoho; noise {r.noise_share:.0%} of the "
        "variance)"
        if r.method == "gavish-donoho"
        else f"no noise floor visible: {r.rank} directions hold {t.delta:.0%} of the variance"
    )
    evidence = (
        f"{how}; k({t.delta:g}) = {v.k} of {f}, participation ratio "
        f"{v.participation_ratio:.1f}, {n_dead} dead, {v.instances} instances"
    )
    if limited:
        verdict = f"too few instances to tell (at most {v.rank_limit} directions visible)"
    elif cut:
        verdict = (
            f"suggested width {suggested} = {t.width_factor:g} x {r.rank} (verify by retraining)"
        )
    else:
        verdict = f"no cut: {suggested} is not below {f} x (1 - {t.min_cut:g})"
    return WidthSuggestion(
        n_filters=f,
        suggested=suggested,
        cut=bool(cut),
        width=suggested if cut else f,
        sample_limited=bool(limited),
        dead=n_dead,
        redundancy_width=redundancy,
        signal=r,
        variance=v,
        text=f"{evidence}: {verdict}",
    )
