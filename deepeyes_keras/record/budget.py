"""What watching a layer costs in memory, and the default choice of layers on big networks.

:func:`tap_bytes` adds up the recorder's variables for one analysed layer: its reservoir (index
columns, descriptors and patches as float16, activations as float32) and its statistics (the
weighted-Jaccard sums grow with the square of the width, the per-label sums with width times
labels). :func:`choose_within_budget` keeps, when the user did not name the layers, at most
``MAX_DEFAULT_LAYERS`` layers whose variables fit ``memory_budget_mb``, spread evenly over the
depth of the network (first and last always, then the middle, then the quarters, ...), so a
ResNet50 or a MobileNetV2 is watched at a bounded cost. Every layer stays reachable with
``layers=[...]``. ``viewer_site/reference/architectures.md`` states the rule and its numbers.

Example:
    >>> kept, left_out = choose_within_budget(taps, reservoir_size=2000, n_labels=10,
    ...                                       memory_budget_mb=256)   # doctest: +SKIP
"""

from __future__ import annotations

import math

from deepeyes_keras.run.layout import N_BINS

MEMORY_BUDGET_MB = 256
MAX_DEFAULT_LAYERS = 24
_INDEX_BYTES = 8 * 3 + 4 * 2  # uid, step, image (int64); position, label (int32)


def tap_bytes(tap, *, reservoir_size: int, n_labels: int) -> int:
    """Bytes of the recorder's variables for one analysed layer (``LayerTap``)."""
    rows = int(reservoir_size) + 1
    f = int(tap.n_filters)
    reservoir = rows * (
        _INDEX_BYTES + 2 * tap.descriptor_size + 4 * f + 2 * math.prod(tap.patch_shape())
    )
    statistics = 8 * f * f + 8 * f * int(n_labels) + 28 * f + 8 * N_BINS + 32
    return reservoir + statistics


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 ordered so that every prefix is spread evenly over the range.

    First and last, then the middle, then the middles of the halves, and so on.

    Example:
        >>> spread_order(5)
        [0, 4, 2, 1, 3]
    """
    if n <= 0:
        return []
    order, seen = [0], {0}
    if n > 1:
        order.append(n - 1)
        seen.add(n - 1)
    intervals = [(0, n - 1)]
    while intervals:
        nxt = []
        for lo, hi in intervals:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            if mid not in seen:
                order.append(mid)
                seen.add(mid)
            nxt += [(lo, mid), (mid, hi)]
        intervals = nxt
    return order + [i for i in range(n) if i not in seen]


def choose_within_budget(
    taps: list,
    *,
    reservoir_size: int,
    n_labels: int,
    memory_budget_mb: float | None = MEMORY_BUDGET_MB,
    max_layers: int | None = MAX_DEFAULT_LAYERS,
    fixed_bytes: int = 0,
) -> tuple[list, list]:
    """The default layers of a big network: spread over depth, within the memory budget.

    Args:
        taps: the candidate layers in model order (``LayerTap``s).
        reservoir_size, n_labels: as the recorder will use them.
        memory_budget_mb: bound on the recorder's variables (None: no bound).
        max_layers: at most this many layers (None: no bound).
        fixed_bytes: bytes counted before any layer (the captured images).

    Returns:
        ``(kept, left_out)``, both in model order. A layer too large for the budget on its own is
        left out; when even the first candidate does not fit, the smallest layer is kept so that
        something is watched.
    """
    budget = math.inf if memory_budget_mb is None else float(memory_budget_mb) * 2**20
    limit = len(taps) if max_layers is None else int(max_layers)
    total, kept = fixed_bytes, set()
    sizes = [tap_bytes(t, reservoir_size=reservoir_size, n_labels=n_labels) for t in taps]
    for i in spread_order(len(taps)):
        if len(kept) >= limit:
            break
        if total + sizes[i] <= budget:
            kept.add(i)
            total += sizes[i]
    if not kept and taps:
        kept.add(min(range(len(taps)), key=sizes.__getitem__))
    return (
        [t for i, t in enumerate(taps) if i in kept],
        [t for i, t in enumerate(taps) if i not in kept],
    )


def recorder_bytes(taps: list, *, reservoir_size: int, n_labels: int, fixed_bytes: int = 0) -> int:
    """Bytes of every analysed layer's variables plus ``fixed_bytes``."""
    return fixed_bytes + sum(
        tap_bytes(t, reservoir_size=reservoir_size, n_labels=n_labels) for t in taps
    )


def left_out_message(recorder, memory_budget_mb) -> str:
    """The warning naming the layers a big network's default choice watches and leaves out."""
    left = recorder.left_out
    shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
    return (
        f"DeepEyes watches {len(recorder.taps)} of the {len(recorder.taps) + len(left)} "
        f"analysable layers of this network by default (at most {MAX_DEFAULT_LAYERS}, within "
        f"memory_budget_mb={memory_budget_mb}: about {recorder.estimated_bytes / 2**20:.0f} MB), "
        f"spread over its depth: {', '.join(t.name for t in recorder.taps)}. Left out: {shown} "
        "(the manifest lists them all). Pass layers=[...] to choose, or a larger memory_budget_mb."
    )
