"""Readers and writers of one run directory at once, and readers older than the writer.

Every file of a run directory is written under a temporary name and renamed into place, and the
manifest is rewritten last (``deepeyes_keras/run/layout.py``, ``deepeyes_keras/run/writer.py``),
so a reader sees each file whole, old or new. Here a real training writes a snapshot every step
while the derived stages rewrite the run's views and this process loads the run and builds a
site from it in a loop; two trainings started together share one ``log_dir``; and a run of a
newer schema is refused by name (``viewer_site/reference/faults.md``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from deepeyes_keras.run.layout import SCHEMA_VERSION, RunLayout, is_run_dir, read_json, write_json
from deepeyes_keras.run.reader import load_run
from deepeyes_keras.run.view_files import read_view

REPO = Path(__file__).resolve().parents[1]


def env():
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))


def load_whole(run_dir):
    """load_run with no warning allowed, every snapshot's arrays and samples read."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = load_run(run_dir)
    assert run.skipped == []
    steps = [snap.step for snap in run.snapshots]
    assert steps == sorted(set(steps)), steps
    return run


def read_last_snapshot(run):
    """Reads the newest snapshot's arrays and reservoir samples (chunks of every step so far)."""
    last = run.snapshots[-1]
    for layer in last.layers.values():
        assert layer.frequency.shape[0] == layer.info["n_filters"]
        assert len(layer.samples) == len(layer.reservoir_uids)


# ------------------------------------------------------------------ a reader older than the run


def make_newer(run_dir, version=99):
    layout = RunLayout(run_dir)
    manifest = read_json(layout.manifest)
    manifest["schema_version"] = version
    write_json(layout.manifest, manifest)
    return manifest


def test_load_run_refuses_a_newer_schema_by_name_with_the_fix(runs_copy):
    run_dir = runs_copy / "tiny-a"
    manifest = make_newer(run_dir)
    with pytest.raises(ValueError) as caught:
        load_run(run_dir)
    message = str(caught.value)
    for needed in (
        "Run 'tiny-a'",
        str(run_dir),
        "schema version 99",
        f"written by deepeyes-keras {manifest['versions']['deepeyes_keras']}",
        f"reads schema versions up to {SCHEMA_VERSION}",
        "Upgrade deepeyes-keras (pip install --upgrade deepeyes-keras)",
    ):
        assert needed in message, (needed, message)
    make_newer(run_dir, SCHEMA_VERSION)  # its own version again: read as before
    assert len(load_whole(run_dir).snapshots) == 2


def test_the_site_skips_a_newer_run_with_that_message_and_shows_the_others(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    make_newer(runs_copy / "tiny-a")
    site = build_site(write_site(tmp_path, runs_copy))
    assert len(mkdocs_warnings) == 1, mkdocs_warnings
    warning = mkdocs_warnings[0]
    assert f"Skipping run {runs_copy / 'tiny-a'}: Run 'tiny-a'" in warning, warning
    assert "schema version 99" in warning and "Upgrade deepeyes-keras" in warning, warning
    assert not (site / "deepeyes" / "tiny-a").exists()
    home = (site / "deepeyes" / "index.html").read_text()
    assert "tiny-b" in home and "tiny-a" not in home
    for page in ("index.html", "conv1/index.html", "out/index.html"):  # pages named by layer
        assert (site / "deepeyes" / "tiny-b" / page).is_file(), page
    specs = sorted((site / "deepeyes" / "tiny-b").rglob("*.vl.json*"))
    assert len(specs) >= 8, specs  # overview, histograms, 3 layers x 2 snapshots
    for spec in specs:
        read_view(spec)


# ------------------------------------------------------------ a training and readers at once

TRAIN_EVERY_STEP = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback, load_run

    log_dir, steps = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((8 * steps, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 8 * steps)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="out"),
    ], name="stress")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(log_dir=log_dir, run_name="stress", snapshot_every=1, sample_every=1,
                          reservoir_size=64, images_per_step=2, maps=False, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    print("TRAINED", len(load_run(cb.run_dir).snapshots))
    """
)

# The derived stages as the maps worker runs them between snapshots (findings, run-wide views),
# in a loop while the training writes, then once more on the finished run.
DERIVE_IN_A_LOOP = textwrap.dedent(
    """
    import sys, time
    from deepeyes_keras.derive.pipeline import update_views
    from deepeyes_keras.run.layout import is_run_dir, read_json, RunLayout

    run_dir = sys.argv[1]
    while not is_run_dir(run_dir):
        time.sleep(0.05)
    passes = 0
    while True:
        finished = read_json(RunLayout(run_dir).manifest)["status"] == "finished"
        update_views(run_dir)
        passes += 1
        if finished:
            break
    print("DERIVED", passes)
    """
)


@pytest.mark.slow
def test_loading_and_building_a_site_while_a_training_writes_every_step(
    tmp_path, write_site, build_site, mkdocs_warnings
):
    steps = 240
    log_dir = tmp_path / "runs"
    run_dir = log_dir / "stress"
    logs = {name: tmp_path / f"{name}.log" for name in ("train", "derive")}
    scripts = {"train": (TRAIN_EVERY_STEP, str(log_dir), str(steps))}
    scripts["derive"] = (DERIVE_IN_A_LOOP, str(run_dir))
    procs = {}
    for name, (code, *args) in scripts.items():
        with open(logs[name], "w") as out:  # files, not pipes: a full pipe would block them
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT, env=env()
            )

    def output():
        return "\n".join(
            f"== {n}\n{p.read_text(errors='replace')[-3000:]}" for n, p in logs.items()
        )

    config = write_site(tmp_path / "site", log_dir)
    deadline = time.monotonic() + 600
    while not is_run_dir(run_dir):
        assert procs["train"].poll() is None, output()
        assert time.monotonic() < deadline, output()
        time.sleep(0.05)
    loads, builds, specs, specs_while_training, seen_training = 0, 0, 0, 0, set()
    try:
        while True:
            done = procs["train"].poll() is not None and procs["derive"].poll() is not None
            for _ in range(5):  # loads are cheaper than site builds: several per build
                run = load_whole(run_dir)
                loads += 1
                if run.snapshots:
                    read_last_snapshot(run)
                training = run.status == "training"
                if training:
                    seen_training.add(len(run.snapshots))
            views = RunLayout(run_dir).views_dir
            for spec in [*views.rglob("*.vl.json"), *views.rglob("*.vl.json.gz")]:
                read_view(spec)  # the views being rewritten by the derive process
                specs += 1
                specs_while_training += training
            site = build_site(config)
            builds += 1
            assert mkdocs_warnings == [], mkdocs_warnings
            for spec in [*site.rglob("*.vl.json"), *site.rglob("*.vl.json.gz")]:
                read_view(spec)
                specs += 1
                specs_while_training += training
            if done:
                break
            assert time.monotonic() < deadline, f"not done in 600 s\n{output()}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert all(p.returncode == 0 for p in procs.values()), output()
    assert f"TRAINED {steps}" in logs["train"].read_text(), output()
    run = load_whole(run_dir)
    assert run.status == "finished" and [s.step for s in run.snapshots] == list(range(1, steps + 1))
    assert len(run.snapshots[-1].layers["conv"].samples) > 0
    # The loop really overlapped the training: several loads saw it part-way.
    assert len(seen_training) >= 3, (seen_training, loads)
    assert builds >= 3 and specs_while_training > 0, (builds, specs, specs_while_training)
    print(
        f"{loads} loads, {builds} site builds ({len(seen_training)} part-way states seen, "
        f"{min(seen_training)} to {max(seen_training)} snapshots), {specs} chart specs parsed "
        f"({specs_while_training} during training)"
    )


# ------------------------------------------------------------- two trainings in one log_dir

TRAIN_ON_GO = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback

    log_dir, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 96)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="out"),
    ], name="same_model")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(log_dir=log_dir, snapshot_every=4, maps=False, verbose=0)
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.002)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    print("RUN", cb.run_dir)
    """
)


@pytest.mark.slow
def test_two_trainings_started_together_in_one_log_dir_get_two_runs(tmp_path):
    # Two processes, same model name, no run_name, released together just after a second
    # starts (so their dated names most likely fall in the same second), real clock.
    script = tmp_path / "train.py"
    script.write_text(TRAIN_ON_GO)
    log_dir, go = tmp_path / "runs", tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(2)]
    logs = [tmp_path / f"train-{i}.log" for i in range(2)]
    procs = []
    for ready, log in zip(readies, logs, strict=True):
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(log_dir), str(ready), str(go)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env(),
                )
            )

    def output():
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

    try:
        deadline = time.monotonic() + 300
        while not all(r.exists() for r in readies):
            assert all(p.poll() is None for p in procs), output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.01)
        while time.time() % 1 > 0.05:  # just after a second starts
            time.sleep(0.002)
        go.write_text("go")
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in procs), output()
    dirs = [
        Path(line.split(" ", 1)[1])
        for log in logs
        for line in log.read_text().splitlines()
        if line.startswith("RUN ")
    ]
    assert len(dirs) == 2 and dirs[0] != dirs[1], (dirs, output())
    print("run directories:", sorted(d.name for d in dirs))
    assert sorted(d.name for d in log_dir.iterdir()) == sorted(d.name for d in dirs)
    for run_dir in dirs:
        run = load_whole(run_dir)
        assert run.name == run_dir.name and run.status == "finished"
        assert [s.step for s in run.snapshots] == [4, 8, 12]
        read_last_snapshot(run)
        assert len(run.snapshots[-1].layers["conv"].samples) > 0
