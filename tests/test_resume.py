"""Training killed mid-epoch and started again: a linked run, consistent steps, every map.

The same script runs twice in fresh processes, as a user re-runs it: the first time it kills itself
with SIGKILL in the middle of its third epoch; the second time BackupAndRestore restores the
model saved at the end of epoch 2 and training finishes. DeepEyes must keep the interrupted run
as it was, start a linked ``-resumed`` run whose step numbers continue the restored model's, and
between the two hold every snapshot of the schedule exactly once (the interrupted run's snapshots
after the restored step are listed as superseded), with the maps of every snapshot of both runs
computed by the time the second process exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from deepeyes_keras import load_run

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback

    log_dir, backup, kill_at, run_name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="out"),
    ], name="resumable")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)

    class Killer(keras.callbacks.Callback):
        seen = 0
        def on_train_batch_end(self, batch, logs=None):
            Killer.seen += 1
            if Killer.seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    cb = DeepEyesCallback(log_dir=log_dir, run_name=run_name or None, snapshot_every=2,
                          reservoir_size=64, verbose=0)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup), cb, Killer()])
    print("FINISHED", int(model.optimizer.iterations.numpy()))
    """
)


def run_script(tmp_path, kill_at: int, run_name: str):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = [str(tmp_path / "runs"), str(tmp_path / "backup"), str(kill_at), run_name]
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize("run_name", ["named", ""])
def test_a_killed_training_resumes_into_a_linked_run(tmp_path, run_name):
    killed = run_script(tmp_path, kill_at=10, run_name=run_name)  # 4 steps per epoch: epoch 3
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = run_script(tmp_path, kill_at=0, run_name=run_name)
    assert done.returncode == 0 and "FINISHED 16" in done.stdout, done.stderr[-3000:]

    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    first, second = (load_run(p) for p in runs)
    if second.manifest.get("resumed_from") is None:
        first, second = second, first
    link = second.manifest["resumed_from"]
    assert second.path.name == f"{first.path.name}-resumed"
    assert link["run"] == first.name and link["at_step"] == 8  # the backup of epoch 2
    assert first.manifest["status"] == "training" and second.manifest["status"] == "finished"

    old = [s.step for s in first.snapshots]
    new = [s.step for s in second.snapshots]
    assert old == [2, 4, 6, 8, 10] and link["superseded_steps"] == [10]
    assert new == [10, 12, 14, 16]  # continuing the restored model's steps
    kept = [s for s in old if s not in link["superseded_steps"]] + new
    assert kept == list(range(2, 17, 2))  # the whole schedule, each step once

    for run in (first, second):  # maps of every snapshot, the interrupted run's included
        for snap in run.snapshots:
            for name in run.layer_names:
                assert snap.layers[name].maps is not None, (run.name, snap.step, name)


def test_a_finished_named_run_is_not_overwritten(tmp_path):
    done = run_script(tmp_path, kill_at=0, run_name="once")
    assert done.returncode == 0, done.stderr[-2000:]
    # A fresh model (no backup left: it finished) pointed at the finished run: a clear refusal.
    again = run_script(tmp_path, kill_at=0, run_name="once")
    assert again.returncode != 0 and "already holds a finished run" in again.stderr


def test_the_run_page_says_which_run_it_continues(runs_copy, tmp_path, write_site, build_site):
    import json

    manifest = runs_copy / "tiny-b" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["resumed_from"] = {"run": "tiny-a", "at_step": 6, "superseded_steps": [12]}
    manifest.write_text(json.dumps(data))
    site = build_site(write_site(tmp_path / "site", runs_copy))
    page = (site / "deepeyes" / "tiny-b" / "index.html").read_text()
    assert "Continues the interrupted run tiny-a from step 6" in page
    assert "snapshots at steps 12 are replaced" in page
