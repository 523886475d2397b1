"""The paper's per-layer statistics as TensorFlow ops, accumulated progressively.

Every function here runs inside the recorder's compiled measurement
(``deepeyes_keras/record/recorder.py``), so shapes stay static and nothing loops over samples in
Python. The running sums live in ``tf.Variable``s owned by :class:`LayerStatistics`;
:func:`finalize` turns a NumPy copy of them into the numbers the user reads (each one is defined
in ``viewer_site/reference/run-format.md``; ``viewer_site/reference/sampling.md`` tells how they
are sampled).

All statistics use activations clamped at zero. Non-finite activations are replaced by zero and
counted, so a diverging network never crashes the recorder.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from deepeyes_keras.run.layout import BETA, N_BINS, THETA

# Bound on the (chunk x F x F) temporary of the pairwise |a_i - a_j| sums, in elements.
_PAIRWISE_CHUNK_ELEMENTS = 1 << 22
# Work budget of the pairwise sums per update, in m x F x F elements: wide layers use only the
# first (random) instances of an update for the Jaccard sums, at least JACCARD_MIN_INSTANCES.
JACCARD_BUDGET = 1 << 20
JACCARD_MIN_INSTANCES = 4
F32_MAX = float(np.finfo(np.float32).max)
# The stored co-activation similarities: codes floor(phi * JACCARD_CODES) in uint16 (schema 3).
# 60,000 = 2^5 * 3 * 5^4: every threshold of at most 4 decimals is a code, so phi >= threshold
# reads back exactly as it was (see jaccard_codes).
JACCARD_CODES = 60_000


def clean_activations(acts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Clamps activations at 0 and zeroes non-finite values.

    Returns:
        The cleaned float32 activations and the number of non-finite values found (int64).
    """
    acts = tf.cast(acts, tf.float32)
    finite = tf.math.is_finite(acts)
    n_bad = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    acts = tf.where(finite, tf.nn.relu(acts), 0.0)
    return acts, n_bad


def perplexity(acts: tf.Tensor) -> tf.Tensor:
    """Perplexity 2**H of each instance's L1-normalised activation vector.

    Args:
        acts: (m, F) activations, already clamped at zero.

    Returns:
        (m,) perplexities in [1, F]; an all-zero vector counts as uniform (perplexity F).
    """
    # Scalars in tf.where broadcast: fewer graph ops than ones_like (the trace is per op).
    n_filters = (
        float(acts.shape[-1])
        if acts.shape[-1] is not None
        else tf.cast(tf.shape(acts)[-1], acts.dtype)
    )
    # Perplexity does not depend on the scale: dividing by each row's max first keeps the sum
    # finite for activations near the float32 limit (an exploding network).
    peak = tf.reduce_max(acts, axis=-1, keepdims=True)
    acts = acts / tf.where(peak > 0, peak, 1.0)
    total = tf.reduce_sum(acts, axis=-1, keepdims=True)
    p = tf.where(total > 0, acts / tf.where(total > 0, total, 1.0), 1.0 / n_filters)
    # 0 * log(0) is 0: mask instead of adding an epsilon so one-hot vectors give exactly 1.
    plogp = tf.where(p > 0, p * tf.math.log(tf.where(p > 0, p, 1.0)), 0.0)
    entropy_bits = -tf.reduce_sum(plogp, axis=-1) / math.log(2.0)
    return tf.clip_by_value(tf.pow(2.0, entropy_bits), 1.0, n_filters)


def histogram_bins(perp: tf.Tensor, n_filters: int) -> tf.Tensor:
    """Bin (0..29) of each perplexity on 30 equal-width bins over [1, F]; P = F is the last."""
    if n_filters <= 1:
        return tf.fill(tf.shape(perp), N_BINS - 1)
    scaled = (perp - 1.0) / float(n_filters - 1) * N_BINS
    return tf.clip_by_value(tf.cast(tf.floor(scaled), tf.int32), 0, N_BINS - 1)


def jaccard_instances(m: int, n_filters: int) -> int:
    """How many of m instances enter the pairwise Jaccard sums of an F-filter layer."""
    return int(min(m, max(JACCARD_MIN_INSTANCES, JACCARD_BUDGET // max(1, n_filters**2))))


def pairwise_abs_diff_sum(acts: tf.Tensor) -> tf.Tensor:
    """sum over instances of |a_i - a_j| for every filter pair, in bounded memory.

    Args:
        acts: (m, F) activations with a static shape.

    Returns:
        (F, F) float64 matrix. The float32 temporaries hold the activations divided by their
        largest value, so the sums stay finite even for activations near the float32 limit.
    """
    m, n_filters = acts.shape
    chunk = max(1, min(m, _PAIRWISE_CHUNK_ELEMENTS // max(1, n_filters * n_filters)))
    n_chunks = -(-m // chunk)
    peak = tf.reduce_max(tf.abs(acts))
    scale = tf.where(peak > 0, peak, 1.0)
    padded = tf.pad(acts / scale, [[0, n_chunks * chunk - m], [0, 0]])  # zero rows add 0
    chunks = tf.reshape(padded, [n_chunks, chunk, n_filters])

    def add_chunk(total, block):
        part = tf.reduce_sum(tf.abs(block[:, :, None] - block[:, None, :]), axis=0)
        return total + tf.cast(part, tf.float64)

    zeros = tf.zeros([n_filters, n_filters], tf.float64)
    total = add_chunk(zeros, chunks[0]) if n_chunks == 1 else tf.foldl(add_chunk, chunks, zeros)
    return total * tf.cast(scale, tf.float64)


class LayerStatistics:
    """Running sums of one analysed layer, kept in variables next to the model.

    Args:
        n_filters: F, the number of channels or units.
        n_labels: d, the number of classes (label sums are kept for labels 0..d-1).
        make_variable: factory ``(name, initial_value) -> tf.Variable`` so the caller decides the
            distribution policy (see ``deepeyes_keras/record/recorder.py``).
    """

    FIELDS = (
        "instances",
        "weighted_instances",
        "nonfinite",
        "max_activation",
        "above_beta",
        "last_reached",
        "sum",
        "abs_diff",
        "label_sum",
        "histogram",
    )

    def __init__(self, n_filters: int, n_labels: int, make_variable):
        self.n_filters = int(n_filters)
        self.n_labels = int(n_labels)
        f, d = self.n_filters, self.n_labels
        self.instances = make_variable("instances", tf.zeros([], tf.int64))
        self.weighted_instances = make_variable("weighted_instances", tf.zeros([], tf.float64))
        self.nonfinite = make_variable("nonfinite", tf.zeros([], tf.int64))
        self.max_activation = make_variable("max_activation", tf.zeros([f]))
        self.above_beta = make_variable("above_beta", tf.zeros([f], tf.int64))
        self.last_reached = make_variable("last_reached", tf.fill([f], tf.constant(-1, tf.int64)))
        self.sum = make_variable("sum", tf.zeros([f], tf.float64))
        self.abs_diff = make_variable("abs_diff", tf.zeros([f, f], tf.float64))
        self.label_sum = make_variable("label_sum", tf.zeros([f, d], tf.float64))
        # Cumulative: the interval histogram is the difference between two snapshots, so the
        # training step never has to reset anything.
        self.histogram = make_variable("histogram", tf.zeros([N_BINS], tf.float64))

    def update(self, acts: tf.Tensor, labels: tf.Tensor, step: tf.Tensor, weight: float = 1.0):
        """Adds m instances sampled at ``step``.

        Args:
            acts: (m, F) raw activations (cleaned here).
            labels: (m,) int32 labels; values outside 0..d-1 are left out of the label sums.
            step: scalar int64 training step of these instances.
            weight: histogram mass of each instance (dense layers carry the weight of the
                positions a conv layer samples per image, so both carry comparable mass).
        """
        acts, n_bad = clean_activations(acts)
        m = tf.shape(acts, out_type=tf.int64)[0]
        self.nonfinite.assign_add(n_bad)
        self.instances.assign_add(m)
        self.weighted_instances.assign_add(tf.cast(m, tf.float64) * weight)

        new_max = tf.maximum(self.max_activation.read_value(), tf.reduce_max(acts, axis=0))
        self.max_activation.assign(new_max)
        above = tf.reduce_sum(tf.cast(acts > BETA * new_max, tf.int64), axis=0)
        self.above_beta.assign_add(above)
        # All m instances come from the same step: a filter "reached" its max now if any instance
        # is at least THETA of the (updated) max and actually fired.
        reached = tf.reduce_any((acts >= THETA * new_max) & (acts > 0), axis=0)
        self.last_reached.assign(tf.where(reached, step, self.last_reached.read_value()))

        acts64 = tf.cast(acts, tf.float64)
        self.label_sum.assign_add(
            tf.matmul(acts64, tf.one_hot(labels, self.n_labels, dtype=tf.float64), transpose_a=True)
        )  # out-of-range label: zero row
        # phi needs sum a_i over the same instances as the pairwise sums, so both use the subset.
        jac = acts[: jaccard_instances(acts.shape[0], self.n_filters)]
        self.sum.assign_add(tf.reduce_sum(tf.cast(jac, tf.float64), axis=0))
        self.abs_diff.assign_add(pairwise_abs_diff_sum(jac))

        bins = histogram_bins(perplexity(acts), self.n_filters)
        # one_hot + sum rather than bincount: static shapes, so it also compiles under XLA.
        counts = tf.reduce_sum(tf.one_hot(bins, N_BINS, dtype=tf.float64), axis=0)
        self.histogram.assign_add(counts * weight)

    def variables(self) -> dict[str, tf.Variable]:
        return {name: getattr(self, name) for name in self.FIELDS}


def jaccard_from_sums(total: np.ndarray, abs_diff: np.ndarray) -> np.ndarray:
    """Weighted Jaccard phi_ij = sum min / sum max from the running sums.

    min + max = a_i + a_j and max - min = |a_i - a_j|, so phi = (s_i + s_j - D) / (s_i + s_j + D).
    A pair that never fired (denominator 0) gets 0: its filters are reported dead separately.
    """
    pair = total[:, None] + total[None, :]
    num = pair - abs_diff
    den = pair + abs_diff
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(phi, 0.0, 1.0)


def jaccard_codes(phi: np.ndarray) -> np.ndarray:
    """Similarities in [0, 1] as uint16 codes ``floor(phi * JACCARD_CODES)``.

    A code k reads back as ``k / JACCARD_CODES`` (:mod:`deepeyes_keras.run.reader`): at most
    1 / 60,000 below phi, and for any threshold t with ``t * JACCARD_CODES`` whole (0.8, or any t
    of at most 4 decimals) ``k / JACCARD_CODES >= t`` exactly when ``phi >= t``: the floor
    keeps every value on the side of t it was on. Values outside [0, 1] are clipped, NaN is 0.
    """
    x = np.nan_to_num(np.asarray(phi, np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.floor(np.clip(x, 0.0, 1.0) * JACCARD_CODES).astype(np.uint16)


def finalize(raw: dict[str, np.ndarray], *, step: int) -> dict[str, np.ndarray]:
    """Turns one layer's raw running sums (NumPy copies) into the user-facing statistics.

    Args:
        raw: the arrays of :meth:`LayerStatistics.variables`, read at ``step``.
        step: the current training step (for the age of each maximum).

    Returns:
        max_activation (F), frequency (F), reliability_step (F, -1 = never reached),
        reliability_age (F: steps since the max was last approached; step + 1 if never),
        jaccard (F x F), label_activation (F x d), histogram_cumulative (30).
    """
    n = int(raw["instances"])
    last = raw["last_reached"].astype(np.int64)
    return {
        "max_activation": raw["max_activation"].astype(np.float32),
        "frequency": (raw["above_beta"] / max(n, 1)).astype(np.float32),
        "reliability_step": last,
        "reliability_age": np.where(last >= 0, step - last, step + 1).astype(np.int64),
        "jaccard": jaccard_from_sums(raw["sum"], raw["abs_diff"]).astype(np.float32),
        # float64 sums: clipped to the float32 range, so that huge activations stay finite
        "label_activation": np.clip(raw["label_sum"], -F32_MAX, F32_MAX).astype(np.float32),
        "histogram_cumulative": raw["histogram"].astype(np.float64),
    }
