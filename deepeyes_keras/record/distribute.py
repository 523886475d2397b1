"""Distribution strategies: which process writes the run, and which strategies are refused.

Only one process of a multi-process training writes the run directory (:func:`is_chief`); every
replica captures its own samples and the first replica's are measured
(``deepeyes_keras/record/recorder.py``).

Multi-worker training (a strategy whose cluster has more than one task) is refused by
:func:`check_single_worker`, which ``DeepEyesCallback.set_model`` calls before anything else:
Keras 3's ``fit`` on TensorFlow fails upstream with such a strategy even without DeepEyes.
``tests/test_distribute.py`` runs the real two-process case so we notice when that changes; the
chief-only writing above is ready for that day. ``tf.distribute.MirroredStrategy`` over the devices
of one machine works (``tests/test_callback.py``), and so does a one-task
``MultiWorkerMirroredStrategy`` (no ``TF_CONFIG``, or a cluster of one worker).
"""

from __future__ import annotations

import json
import os

UPSTREAM_ISSUES = (
    "https://github.com/keras-team/keras/issues/20585",
    "https://github.com/tensorflow/tensorflow/issues/72388",
)
NOT_TRAINING = {"evaluator"}
"""Cluster jobs that do not train: a side-car evaluator does not make a training multi-worker."""


def cluster_spec(strategy) -> dict:
    """The strategy's cluster as ``{job: [addresses]}`` ({} for a one-machine strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return {}
    spec = resolver.cluster_spec()
    return spec.as_dict() if spec else {}


def training_tasks(strategy) -> int:
    """How many processes train together under ``strategy`` (1 on one machine)."""
    return _tasks(cluster_spec(strategy))


def is_multi_worker(strategy) -> bool:
    """True when ``strategy`` spans more than one training process (its cluster's tasks)."""
    return training_tasks(strategy) > 1


def multi_worker_message(strategy) -> str:
    """Why a multi-worker strategy is refused, what works today, and what is ready."""
    what = f"this model's strategy ({type(strategy).__name__})"
    return cluster_message(cluster_spec(strategy), what)


def _tasks(jobs: dict) -> int:
    return max(1, sum(len(tasks) for job, tasks in jobs.items() if job not in NOT_TRAINING))


def tf_config_cluster() -> dict:
    """The cluster the ``TF_CONFIG`` environment variable describes ({} without one)."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return {}
    cluster = config.get("cluster") if isinstance(config, dict) else None
    return {j: list(t) for j, t in cluster.items()} if isinstance(cluster, dict) else {}


def check_single_worker_env() -> None:
    """Raises NotImplementedError when ``TF_CONFIG`` describes a multi-worker training.

    Called when the callback is made: Keras' fit() with a multi-worker strategy fails upstream
    before any callback's ``set_model`` runs, so this is where a clear message can come first.
    """
    jobs = tf_config_cluster()
    if _tasks(jobs) > 1:
        raise NotImplementedError(cluster_message(jobs, "TF_CONFIG"))


def cluster_message(jobs: dict, what: str) -> str:
    """The refusal text for a cluster of ``jobs`` described by ``what``."""
    cluster = ", ".join(f"{job}: {len(tasks)}" for job, tasks in sorted(jobs.items()))
    return (
        f"DeepEyesCallback does not record multi-worker training yet: {what} "
        f"spans {_tasks(jobs)} training processes (cluster {cluster}). Keras 3's fit() with a "
        "multi-worker strategy on TensorFlow fails "
        "upstream even without DeepEyes ('ValueError: Attempt to convert a value (PerReplica "
        f"...) with an unsupported type ... to a Tensor'; see {UPSTREAM_ISSUES[0]} and "
        f"{UPSTREAM_ISSUES[1]}). What works today: tf.distribute.MirroredStrategy over the "
        "devices (GPUs) of one machine, or one training process per machine, each with its own "
        "DeepEyesCallback writing its own run (its own run_name or log_dir). DeepEyes' part is "
        "ready for when upstream works: only the chief (or worker 0 when there is no chief) "
        "writes the run (deepeyes_keras/record/distribute.py, is_chief)."
    )


def check_single_worker(strategy) -> None:
    """Raises NotImplementedError, before training, when ``strategy`` is multi-worker."""
    if is_multi_worker(strategy):
        raise NotImplementedError(multi_worker_message(strategy))


def is_chief(strategy) -> bool:
    """Only one process writes: the chief (or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0
