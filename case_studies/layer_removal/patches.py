"""Generated two-class patches: a stand-in for the paper's mitotic-figure detection (AMIDA).

An analogue, not the AMIDA data (which cannot be downloaded here). Every patch is a 32 x 32
grey-level field of "cells" on a textured background; a *positive* patch also holds the target
structure near its centre, as AMIDA's positive patches are centred on a mitotic figure:

- **background**: smooth random texture (white noise blurred with a Gaussian of sigma 3 px,
  scaled to a standard deviation of ``texture`` around the level 0.15) plus pixel noise;
- **cells** (both classes): 3 to 7 pale round blobs, Gaussian profile with sigma 2.2 to 4 px and
  peak 0.18 to 0.45, anywhere in the patch (one of them, in half of the negatives, near the
  centre, so that "something in the middle" is not the answer);
- **target** (positives only): one small, dark, elongated blob, sigma 0.9 to 1.4 px across and
  1.6 to 2.4 times that along a random orientation, peak drawn from ``target_peak`` (0.55 to
  0.9 by default; :data:`HARD` lowers it and adds noise), its centre within ``jitter`` px of the
  patch centre.

Values are clipped to [0, 1]. Nothing is read or downloaded: the generator is NumPy only and
fully determined by its seed.

Example:
    >>> x, y = make_patches(4, seed=0)
    >>> x.shape, x.dtype, y.tolist()
    ((4, 32, 32, 1), dtype('float32'), [0, 1, 0, 1])
"""

from __future__ import annotations

import numpy as np

SIZE = 32
LEVEL = 0.15
HARD = {"texture": 0.05, "noise": 0.05, "target_peak": (0.3, 0.6)}
"""A harder variant: a fainter target in more texture and noise (``make_patches(n, **HARD)``)."""


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(3 * sigma)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (n, H, W) fields, wrapping at the borders (a texture tile)."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = field
    for axis in (1, 2):
        padded = np.concatenate(
            [np.take(out, range(-r, 0), axis=axis), out, np.take(out, range(r), axis=axis)], axis
        )
        out = sum(
            k[j] * np.take(padded, range(j, j + out.shape[axis]), axis=axis) for j in range(len(k))
        )
    return out


def _blob(cy, cx, sigma_a, sigma_b, angle, peak) -> np.ndarray:
    """(n, SIZE, SIZE) anisotropic Gaussian blobs, one per row of the parameter arrays."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    return peak[:, None, None] * np.exp(
        -0.5 * ((u / sigma_a[:, None, None]) ** 2 + (v / sigma_b[:, None, None]) ** 2)
    )


def make_patches(
    n: int,
    *,
    seed: int = 0,
    texture: float = 0.04,
    noise: float = 0.03,
    jitter: float = 3.0,
    target_peak: tuple[float, float] = (0.55, 0.9),
    return_centres: bool = False,
):
    """``n`` patches and their labels (alternating 0, 1: balanced), fully seeded.

    Args:
        n: number of patches (>= 1).
        seed: seed of everything random.
        texture: standard deviation of the background texture.
        noise: standard deviation of the pixel noise.
        jitter: largest distance (px, per axis) of the target from the patch centre.
        target_peak: (low, high) of the target's peak intensity.
        return_centres: also return the target centres, (n, 2) as (row, col); NaN for negatives.

    Returns:
        ``(x, y)`` with x (n, 32, 32, 1) float32 in [0, 1] and y (n,) int64 in {0, 1}; with
        ``return_centres``, ``(x, y, centres)``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"Invalid n. Received: n={n!r}. Expected an integer >= 1.")
    bad = {k: v for k, v in (("texture", texture), ("noise", noise), ("jitter", jitter)) if v < 0}
    low, high = target_peak
    if not 0 <= low <= high:
        bad["target_peak"] = target_peak
    if bad:
        raise ValueError(
            f"Invalid generator settings. Received: {bad}. Expected values >= 0, and "
            "target_peak as (low, high) with 0 <= low <= high."
        )
    n = int(n)
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    tex = _blur(rng.normal(size=(n, SIZE, SIZE)), 3.0)
    tex *= texture / max(float(tex.std()), 1e-12)
    x = LEVEL + tex
    centre = (SIZE - 1) / 2
    for _ in range(7):  # up to 7 cells per patch
        present = rng.random(n) < 5 / 7  # 5 on average, 3 to 7 in most patches
        sigma = rng.uniform(2.2, 4.0, n)
        cy, cx = rng.uniform(0, SIZE - 1, n), rng.uniform(0, SIZE - 1, n)
        x += present[:, None, None] * _blob(
            cy, cx, sigma, sigma, np.zeros(n), rng.uniform(0.18, 0.45, n)
        )
    # A decoy cell near the centre of half the negatives.
    decoy = (y == 0) & (rng.random(n) < 0.5)
    sigma = rng.uniform(2.2, 4.0, n)
    off = rng.uniform(-jitter, jitter, (2, n))
    x += decoy[:, None, None] * _blob(
        centre + off[0], centre + off[1], sigma, sigma, np.zeros(n), rng.uniform(0.18, 0.45, n)
    )
    # The target: small, dark, elongated, near the centre.
    off = rng.uniform(-jitter, jitter, (2, n))
    cy, cx = centre + off[0], centre + off[1]
    across = rng.uniform(0.9, 1.4, n)
    target = _blob(
        cy, cx, across * rng.uniform(1.6, 2.4, n), across, rng.uniform(0, np.pi, n),
        rng.uniform(*target_peak, n),
    )  # fmt: skip
    x += (y == 1)[:, None, None] * target
    x += noise * rng.normal(size=x.shape)
    x = np.clip(x, 0.0, 1.0).astype(np.float32)[..., None]
    if not return_centres:
        return x, y
    centres = np.where((y == 1)[:, None], np.stack([cy, cx], axis=1), np.nan)
    return x, y, centres
