"""Distribution strategies: who writes the run (is_chief) and which strategies are refused.

Multi-worker training with Keras 3's ``fit`` on TensorFlow fails upstream even without DeepEyes
(keras-team/keras#20585, tensorflow/tensorflow#72388). DeepEyesCallback refuses a multi-worker
strategy in ``set_model`` with a message saying so (``deepeyes_keras/record/distribute.py``);
the chief-only writing is tested with stand-in cluster resolvers so it is ready the day upstream
works, and the real two-process case is run so we notice when that day comes.
MirroredStrategy over two logical CPUs is tested in tests/test_callback.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest
import tensorflow as tf

from deepeyes_keras import DeepEyesCallback
from deepeyes_keras.record.distribute import (
    UPSTREAM_ISSUES,
    check_single_worker,
    is_chief,
    is_multi_worker,
    training_tasks,
)

REPO = Path(__file__).resolve().parents[1]
PER_REPLICA_ERROR = "Attempt to convert a value (PerReplica"


class StandInSpec:
    """What a cluster resolver's ``cluster_spec()`` returns: ``as_dict()``, false when empty."""

    def __init__(self, jobs):
        self.jobs = jobs

    def as_dict(self):
        return self.jobs

    def __bool__(self):
        return bool(self.jobs)


class StandInResolver:
    """A cluster resolver as tf.distribute has them: task_type, task_id, cluster_spec()."""

    def __init__(self, jobs, task_type=None, task_id=None):
        self.jobs, self.task_type, self.task_id = jobs, task_type, task_id

    def cluster_spec(self):
        return StandInSpec(self.jobs)


def strategy(jobs=None, task_type=None, task_id=None, resolver=None):
    if resolver is None and jobs is None:
        return SimpleNamespace()  # the default strategy has no cluster_resolver
    return SimpleNamespace(cluster_resolver=resolver or StandInResolver(jobs, task_type, task_id))


WITH_CHIEF = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
WORKERS = {"worker": ["h0:1", "h1:1"]}


@pytest.mark.parametrize(
    "jobs, task_type, task_id, chief",
    [
        (None, None, None, True),  # no cluster resolver: one process
        ({}, None, None, True),  # MultiWorkerMirroredStrategy without TF_CONFIG
        ({"worker": ["h0:1"]}, "worker", 0, True),  # a cluster of one worker
        (WITH_CHIEF, "chief", 0, True),
        (WITH_CHIEF, "worker", 0, False),  # a chief is there: worker 0 does not write
        (WITH_CHIEF, "worker", 1, False),
        (WITH_CHIEF, "evaluator", 0, False),
        (WORKERS, "worker", 0, True),  # no chief: worker 0 writes
        (WORKERS, "worker", 1, False),
        (WORKERS, "evaluator", 0, False),
        ({"ps": ["h0:1"], "worker": ["h1:1"]}, "ps", 0, False),
    ],
)
def test_only_the_chief_or_worker_0_writes(jobs, task_type, task_id, chief):
    assert is_chief(strategy(jobs, task_type, task_id)) is chief


@pytest.mark.parametrize(
    "jobs, tasks",
    [
        (None, 1),
        ({}, 1),
        ({"worker": ["h0:1"]}, 1),
        ({"chief": ["h0:1"], "evaluator": ["h1:1"]}, 1),  # a side-car evaluator does not train
        (WORKERS, 2),
        (WITH_CHIEF, 3),
        ({"worker": {0: "h0:1", 3: "h3:1"}}, 2),  # sparse cluster spec: {index: address}
        ({"ps": ["h0:1"], "worker": ["h1:1"]}, 2),
    ],
)
def test_training_tasks_count_the_cluster(jobs, tasks):
    assert training_tasks(strategy(jobs, "worker", 0)) == tasks
    assert is_multi_worker(strategy(jobs, "worker", 0)) is (tasks > 1)


def test_the_refusal_names_the_upstream_limitation_and_what_works():
    with pytest.raises(NotImplementedError) as caught:
        check_single_worker(strategy(WORKERS, "worker", 1))
    message = str(caught.value)
    for needed in (
        *UPSTREAM_ISSUES,
        "keras-team/keras/issues/20585",
        "tensorflow/tensorflow/issues/72388",
        "PerReplica",
        "spans 2 training processes",
        "worker: 2",
        "tf.distribute.MirroredStrategy over the devices (GPUs) of one machine",
        "one training process per machine",
        "its own run",
        "only the chief (or worker 0",
        "is_chief",
    ):
        assert needed in message, (needed, message)
    check_single_worker(strategy({"worker": ["h0:1"]}, "worker", 0))  # one task: accepted
    check_single_worker(strategy())


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")], name="tiny")
    model.compile("sgd", "mse")
    return model


def test_set_model_refuses_a_two_task_cluster_before_anything_else(tmp_path, monkeypatch):
    model = tiny_model()
    original_step = model.train_step
    two_workers = strategy(WORKERS, "worker", 0)
    monkeypatch.setattr(type(model), "distribute_strategy", property(lambda self: two_workers))
    callback = DeepEyesCallback(log_dir=tmp_path / "runs", maps=False, verbose=0)
    with pytest.raises(NotImplementedError, match="does not record multi-worker training yet"):
        callback.set_model(model)
    assert model.train_step == original_step  # the train step is not wrapped
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("source", ["SimpleClusterResolver", "TF_CONFIG"])
def test_real_tensorflow_resolvers_of_two_workers_are_refused(source, tmp_path, monkeypatch):
    # TensorFlow's own resolvers (no server started): the check reads them as it reads stand-ins.
    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    if source == "TF_CONFIG":
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": 1}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": addresses}), task_type="worker", task_id=1
        )
    two_workers = strategy(resolver=resolver)
    assert training_tasks(two_workers) == 2 and not is_chief(two_workers)
    model = tiny_model()
    monkeypatch.setattr(type(model), "distribute_strategy", property(lambda self: two_workers))
    with pytest.raises(NotImplementedError, match="20585"):
        DeepEyesCallback(log_dir=tmp_path, maps=False, verbose=0).set_model(model)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def quiet_env(**extra):
    return dict(
        os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **extra
    )


ONE_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np, tensorflow as tf, keras
    from deepeyes_keras import DeepEyesCallback, load_run
    from deepeyes_keras.record.distribute import is_chief, training_tasks

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    print("RESOLVER", resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())
    assert training_tasks(strategy) == 1 and is_chief(strategy)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                  keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)
    cb = DeepEyesCallback(log_dir=sys.argv[1], run_name="one-worker", verbose=0,
                          snapshot_every=2, sample_every=1, maps=False)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    assert [s.step for s in run.snapshots] == [2, 4, 6, 8], run.snapshots
    assert len(run.snapshots[-1].layers[model.layers[0].name].samples) > 0
    print("ONE WORKER OK")
    """
)


@pytest.mark.slow
def test_a_real_one_worker_multi_worker_strategy_is_accepted_and_records(tmp_path):
    # What a real MultiWorkerMirroredStrategy gives in one process: TF_CONFIG naming a cluster of
    # one worker (this process). That is one training process, which Keras' fit handles: the
    # check accepts it and the run is recorded. (A real two-worker strategy cannot be built in one
    # process, its construction waits for the other worker: see the two-process test below.)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    config = {"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}}
    done = subprocess.run(
        [sys.executable, "-c", ONE_WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        env=quiet_env(TF_CONFIG=json.dumps(config)),
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "ONE WORKER OK" in done.stdout, output[-4000:]
    assert "RESOLVER worker 0 {'worker': [" in done.stdout, output[-4000:]


TWO_WORKERS = textwrap.dedent(
    """
    import sys
    import numpy as np, tensorflow as tf, keras
    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.record.distribute import is_chief, training_tasks

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # waits for the other worker
    print("STARTED", type(strategy).__name__, "tasks", training_tasks(strategy),
          "chief", is_chief(strategy), flush=True)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:  # our part, on the real two-worker strategy: refused at set_model
        DeepEyesCallback(log_dir=sys.argv[1], maps=False, verbose=0).set_model(model)
        print("DEEPEYES ACCEPTED", flush=True)
    except NotImplementedError as err:
        print("DEEPEYES REFUSED", str(err)[:80], flush=True)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4)).astype("float32"), rng.integers(0, 3, 32)
    try:  # without DeepEyes: upstream alone
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        print("UPSTREAM FIT OK", flush=True)
    except ValueError as err:
        print("UPSTREAM ValueError:", str(err)[:120], flush=True)
    try:  # with DeepEyes: refused when the callback is made (TF_CONFIG), before fit's own failure
        cb = DeepEyesCallback(log_dir=sys.argv[1], maps=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
        print("WITH DEEPEYES FIT OK", flush=True)
    except (NotImplementedError, ValueError) as err:
        print("WITH DEEPEYES", type(err).__name__, str(err)[:60].replace("\\n", " "), flush=True)
    """
)


@pytest.mark.slow
def test_two_real_workers_fail_upstream_without_deepeyes(tmp_path):
    # Two processes on loopback ports, TF_CONFIG each, MultiWorkerMirroredStrategy and Keras' fit
    # WITHOUT our callback: today fit raises the PerReplica ValueError (keras-team/keras#20585,
    # tensorflow/tensorflow#72388). When this test fails because fit succeeds, upstream works:
    # try DeepEyesCallback on this case and lift check_single_worker in record/distribute.py.
    script = tmp_path / "worker.py"
    script.write_text(TWO_WORKERS)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs, logs = [], [tmp_path / f"worker-{index}.log" for index in range(2)]
    for index, log in enumerate(logs):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would block a worker
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(tmp_path / f"runs-{index}")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=quiet_env(TF_CONFIG=json.dumps(config)),
                )
            )
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    timed_out = any(p.poll() is None for p in procs)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    shown = "\n".join(f"===== worker {i} (rc {p.returncode})\n{o[:1500]}\n...\n{o[-4000:]}"
                      for i, (p, o) in enumerate(zip(procs, outputs, strict=True)))  # fmt: skip
    assert not timed_out, f"the two workers did not finish in 300 s:\n{shown}"
    for index, output in enumerate(outputs):
        # The collective started: both processes built the two-worker strategy.
        expected = f"STARTED CollectiveAllReduceStrategy tasks 2 chief {index == 0}"
        assert expected in output, f"the cluster did not start:\n{shown}"
        assert "DEEPEYES REFUSED DeepEyesCallback does not record multi-worker" in output, shown
        assert "UPSTREAM FIT OK" not in output, (
            "Keras' fit now works with MultiWorkerMirroredStrategy: lift check_single_worker "
            f"(deepeyes_keras/record/distribute.py) and test DeepEyes on this case.\n{shown}"
        )
        assert f"UPSTREAM ValueError: {PER_REPLICA_ERROR}" in output, shown
        # With DeepEyes in fit: fit fails before any step either way (upstream's error first
        # today, ours once upstream gets past its data set-up), and no run is written.
        assert "WITH DEEPEYES FIT OK" not in output, shown
        assert (
            f"WITH DEEPEYES ValueError {PER_REPLICA_ERROR}" in output
            or "WITH DEEPEYES NotImplementedError DeepEyesCallback does not record" in output
        ), shown
    assert all(p.returncode == 0 for p in procs), shown
    assert not any((tmp_path / f"runs-{i}").exists() for i in range(2)), "DeepEyes wrote a run"


def test_the_callback_refuses_a_two_worker_tf_config_when_made(tmp_path, monkeypatch):
    # Keras' fit fails upstream before set_model runs: the refusal comes when the callback is made.
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"], "evaluator": ["127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker"}}))
    with pytest.raises(NotImplementedError, match=r"TF_CONFIG spans 2 training processes"):
        DeepEyesCallback(log_dir=tmp_path, maps=False, verbose=0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}))
    DeepEyesCallback(log_dir=tmp_path, maps=False, verbose=0)  # one worker: fine
