"""Which training steps are measured and which write a snapshot.

A step is measured when it is one of the first ``dense_steps`` (the network changes fastest
then) or every ``sample_every``-th step after the first; snapshots fall on steps 10, 20, 40, 80
and then every 100 (``"auto"``), or every ``snapshot_every`` steps. With ``steps_per_execution``
above 1 the callback sees only every few steps, so each test asks whether such a step lies in
``(previous, step]``. ``viewer_site/reference/sampling.md`` tells the schedule to users.

Example:
    >>> is_measured_step(20, 21, dense_steps=20, sample_every=10)
    True
    >>> is_snapshot_step(38, 41, "auto")
    True
"""

from __future__ import annotations

EARLY_SNAPSHOTS = (10, 20, 40, 80)
AUTO_SNAPSHOT_EVERY = 100


def crossed(previous: int, step: int, every: int, offset: int = 0) -> bool:
    """True when some s in ``(previous, step]`` has ``(s - offset) % every == 0``."""
    return (step - offset) // every > (previous - offset) // every


def is_measured_step(previous: int, step: int, *, dense_steps: int, sample_every: int) -> bool:
    """Whether a measured step lies in ``(previous, step]`` (steps count from 1)."""
    return step <= dense_steps or crossed(previous, step, sample_every, offset=1)


def is_snapshot_step(previous: int, step: int, snapshot_every: int | str) -> bool:
    """Whether a snapshot step lies in ``(previous, step]``.

    Args:
        previous: the last step seen before.
        step: the step now.
        snapshot_every: ``"auto"`` or a number of steps.
    """
    if snapshot_every == "auto":
        early = any(previous < s <= step for s in EARLY_SNAPSHOTS)
        return early or crossed(previous, step, AUTO_SNAPSHOT_EVERY)
    return crossed(previous, step, snapshot_every)
