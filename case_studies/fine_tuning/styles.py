"""The fine-tuning study's new task: the "style" in which an MNIST digit is drawn.

An analogue of the paper's Flickr Style task (20 photographic styles), built from the MNIST images
we ship: every image gets one of :data:`STYLES` at random (seeded), independently of its digit, so
the label says how the digit is drawn, never which digit it is. NumPy and SciPy only.

- ``plain``: the image as it is.
- ``bold``: strokes thickened (grey dilation, 3 x 3).
- ``thin``: strokes thinned (grey erosion, 2 x 2).
- ``italic``: slanted (horizontal shear, 0.35 px per row).
- ``noisy``: Gaussian noise (sd 0.25) over the whole image, background included.
- ``faint``: contrast reduced to a quarter (the same strokes, drawn in light grey).

Example:
    >>> import numpy as np
    >>> x, y = styled(np.zeros((6, 28, 28), np.uint8), seed=0)
    >>> x.shape, x.dtype, sorted(set(y.tolist())) <= list(range(len(STYLES)))
    ((6, 28, 28, 1), dtype('float32'), True)
"""

from __future__ import annotations

import numpy as np

STYLES = ("plain", "bold", "thin", "italic", "noisy", "faint")
SHEAR = 0.35  # px of horizontal shift per row (italic)
NOISE_SD = 0.25  # noisy
FAINT = 0.25  # faint: contrast factor


def _shear(img: np.ndarray) -> np.ndarray:
    from scipy.ndimage import affine_transform

    centre = (img.shape[0] - 1) / 2
    # output (r, c) reads input (r, c + SHEAR * (r - centre)): the top leans right.
    matrix = np.array([[1.0, 0.0], [SHEAR, 1.0]])
    return affine_transform(img, matrix, offset=(0.0, -SHEAR * centre), order=1)


def apply_style(img: np.ndarray, style: int, rng: np.random.Generator) -> np.ndarray:
    """One 28 x 28 image in [0, 1] drawn in style ``style`` (an index of :data:`STYLES`)."""
    from scipy.ndimage import grey_dilation, grey_erosion

    name = STYLES[style]
    if name == "plain":
        return img
    if name == "bold":
        return grey_dilation(img, size=(3, 3))
    if name == "thin":
        return grey_erosion(img, size=(2, 2))
    if name == "italic":
        return _shear(img)
    if name == "noisy":
        return np.clip(img + rng.normal(0.0, NOISE_SD, img.shape), 0.0, 1.0)
    if name == "faint":
        return img * FAINT
    raise ValueError(f"Unknown style index {style!r}; expected 0..{len(STYLES) - 1}.")


def styled(images: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The style task on MNIST ``images`` (uint8, n x 28 x 28): styled images and style labels.

    Returns:
        ``(x, y)``: float32 images in [0, 1] of shape (n, 28, 28, 1) and int64 labels, the index
        of each image's style in :data:`STYLES`, drawn uniformly at random with ``seed``.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"Expected images of shape (n, height, width); received {images.shape}.")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(STYLES), len(images))
    base = images.astype(np.float32) / 255.0
    out = np.stack([apply_style(img, int(s), rng) for img, s in zip(base, labels, strict=True)])
    return out.astype(np.float32)[..., None], labels.astype(np.int64)
