"""Distribution strategies: which process writes the run.

Only one process of a multi-process training writes the run directory (:func:`is_chief`); every
replica captures its own samples and the first replica's are measured
(``deepeyes_keras/record/recorder.py``).
"""

from __future__ import annotations


def is_chief(strategy) -> bool:
    """Only one process writes: the chief (or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0
