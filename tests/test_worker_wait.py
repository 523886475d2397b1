"""Waiting for the maps at exit: visible (a bar with an estimate) and optional (Ctrl-C)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from deepeyes_keras.derive.worker import MapProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_prints_every_eighth_map_with_an_estimate():
    out = io.StringIO()
    progress = MapProgress(stream=out)
    for done in range(1, 17):
        progress.update(done, 16, f"maps of conv at step {done}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("DeepEyes: maps [##########..........] 8/16")
    assert "left (maps of conv at step 8)" in lines[0]
    assert lines[1].startswith("DeepEyes: maps [####################] 16/16 (")  # no estimate


def test_progress_on_a_terminal_redraws_one_line():
    out = Terminal()
    progress = MapProgress(stream=out)
    progress.update(1, 4, "a")
    progress.update(2, 4, "b")
    progress.end()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "2/4" in text


SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback

    rng = np.random.default_rng(0)
    x = rng.random((320, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 320)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="out"),
    ])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(log_dir=sys.argv[1], run_name="run", snapshot_every=2,
                          reservoir_size=400, maps=True, maps_during_training=False, verbose=1)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    print("FIT DONE", flush=True)
    """
)


@pytest.mark.slow
def test_ctrl_c_while_waiting_stops_cleanly_and_deepeyes_maps_finishes(tmp_path):
    from deepeyes_keras import cli, load_run

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = []
    for line in child.stdout:  # wait until it has written a few maps, then press Ctrl-C
        seen.append(line)
        if line.startswith("DeepEyes: maps ["):
            break
    assert any("FIT DONE" in s for s in seen), "".join(seen)
    child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=120)
    out = "".join(seen) + rest
    assert "stopped computing maps" in out and "Run `deepeyes maps" in out, out
    assert "Traceback" not in err, err
    run_dir = tmp_path / "run"
    before = len(list((run_dir / "maps").rglob("*.npz")))
    total = 2 * len(load_run(run_dir).snapshots)
    assert 8 <= before < total  # what was written is kept, the rest is left
    time.sleep(0.1)
    assert cli.main(["maps", str(run_dir)]) == 0
    run = load_run(run_dir)
    assert all(layer.maps is not None for s in run.snapshots for layer in s.layers.values())
