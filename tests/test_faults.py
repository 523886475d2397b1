"""A full or vanishing disk during training: training goes on, nothing written is damaged.

The faults tried here are listed in viewer_site/reference/faults.md ("A full or vanishing disk"):
a write failing with ENOSPC or EACCES (injected into the writer's one write function,
``deepeyes_keras.run.writer.write_file``, through the ``write_bytes`` it calls), the run
directory removed in the middle of training, a real 2 MB tmpfs filling up, ``strict=True``, and
two trainings started together in one log_dir.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pytest

import deepeyes_keras.record.resume as callback_module  # where the dated name is made
import deepeyes_keras.run.writer as writer_module
from deepeyes_keras import DeepEyesCallback, load_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def images(n=80, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1)).astype("float32"), rng.integers(0, 3, n)


def small_cnn():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="dense"),
        ],
        name="small_cnn",
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def deepeyes(log_dir, **kwargs):
    kwargs.setdefault("run_name", "run")
    kwargs.setdefault("snapshot_every", 2)
    kwargs.setdefault("sample_every", 1)
    return DeepEyesCallback(log_dir=log_dir, verbose=0, maps=False, **kwargs)


class Steps(keras.callbacks.Callback):
    """Calls ``act(step)`` after each training step (counted over epochs), and at the end."""

    def __init__(self, act, at_end=None):
        super().__init__()
        self.act, self.at_end, self.step = act, at_end, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.act(self.step)

    def on_train_end(self, logs=None):
        if self.at_end is not None:
            self.at_end()


class Fault:
    """Makes the writer's writes of one kind of file fail, while ``active``."""

    KINDS = {
        "entries": lambda p: p.name.startswith("entries-"),
        "arrays": lambda p: p.parent.name == "snapshots" and p.suffix == ".npz",
        "record": lambda p: p.parent.name == "snapshots" and p.suffix == ".json",
        "manifest": lambda p: p.name == "manifest.json",
    }

    def __init__(self, monkeypatch, kind, code=errno.ENOSPC):
        self.kind, self.code, self.active, self.failed = kind, code, False, []
        real = writer_module.write_bytes

        def write_bytes(path, data):
            path = Path(path)
            if self.active and self.KINDS[kind](path):
                # As a full disk does: the temporary file is created, half written, then fails.
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                tmp.write_bytes(data[: len(data) // 2])
                self.failed.append(path)
                raise OSError(self.code, os.strerror(self.code))
            return real(path, data)

        monkeypatch.setattr(writer_module, "write_bytes", write_bytes)


def fit_recording(model, x, y, callbacks, **kwargs):
    """Runs fit and returns the DeepEyes warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, verbose=0, callbacks=callbacks, **kwargs)
    return [str(w.message) for w in caught if "DeepEyes" in str(w.message)]


def steps_on_disk(run_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "snapshots").glob("step-*.json"))


def check_consistent(run_dir):
    """Every snapshot file loads, the manifest lists exactly those, no temporary file is left,
    and every snapshot's reservoir instances are stored exactly once. Returns the loaded run."""
    run_dir = Path(run_dir)
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name], "temporary files left"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    listed = [s["step"] for s in manifest["snapshots"]]
    assert listed == steps_on_disk(run_dir)
    arrays = sorted(int(p.stem.split("-")[1]) for p in (run_dir / "snapshots").glob("*.npz"))
    assert arrays == listed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = load_run(run_dir)
    assert [s.step for s in run.snapshots] == listed and not run.skipped
    for snap in run.snapshots:
        for name in run.layer_names:
            samples = snap.layers[name].samples  # raises when an instance is not stored
            assert np.array_equal(samples.uid, snap.layers[name].reservoir_uids)
    for info in manifest.get("analysed_layers", []):
        chunks = sorted((run_dir / "samples" / info["key"]).glob("entries-*.npz"))
        uids = np.concatenate([np.load(c)["uid"] for c in chunks]) if chunks else np.zeros(0)
        assert len(uids) == len(np.unique(uids)), "an instance stored twice"
        chunk_steps = [int(c.stem.split("-")[1]) for c in chunks]
        assert set(chunk_steps) <= set(listed), "a sample chunk of a snapshot not listed"
    return run


@pytest.mark.parametrize(
    "kind, code",
    [
        ("entries", errno.ENOSPC),
        ("arrays", errno.ENOSPC),
        ("record", errno.EACCES),
        ("manifest", errno.ENOSPC),
    ],
)
def test_failed_snapshots_warn_and_their_samples_go_next(tmp_path, monkeypatch, kind, code):
    fault = Fault(monkeypatch, kind, code)
    toggle = Steps(lambda step: setattr(fault, "active", 6 <= step <= 10))
    cb = deepeyes(tmp_path)
    x, y = images()
    # The toggle runs before DeepEyes on each step: steps 6, 8 and 10 fail to write.
    said = fit_recording(small_cnn(), x, y, [toggle, cb], epochs=2)  # 20 steps
    run_dir = tmp_path / "run"
    failed = [m for m in said if "not written" in m]
    assert len(failed) == 3, said
    for step, message, path in zip((6, 8, 10), failed, fault.failed, strict=True):
        assert f"snapshot at step {step} not written" in message
        assert f"{step:08d}" in path.name or kind == "manifest"
        assert str(path) in message and os.strerror(code) in message
    assert len(said) == 3, said  # nothing else was said
    run = check_consistent(run_dir)
    assert [s.step for s in run.snapshots] == [2, 4, 12, 14, 16, 18, 20]
    assert run.status == "finished"
    assert not [p for p in run_dir.rglob("*0000000[68]*")] and not list(run_dir.rglob("*10.*"))
    # The samples and metrics the failed snapshots held were written with step 12.
    for info in run.manifest["analysed_layers"]:
        chunk = np.load(run_dir / "samples" / info["key"] / "entries-00000012.npz")
        assert set(range(5, 13)) <= set(chunk["step"].tolist()), info["key"]
    assert run.metrics()["step"] == list(range(1, 21))
    assert run.snapshots[2].metrics["step"] == list(range(5, 13))
    total = sum(s.layers["conv"].perplexity_histogram.sum() for s in run.snapshots)
    assert total == pytest.approx(run.snapshots[-1].layers["conv"].histogram_cumulative.sum())


def test_strict_raises_out_of_fit_and_keeps_what_was_written(tmp_path, monkeypatch):
    fault = Fault(monkeypatch, "arrays")
    toggle = Steps(lambda step: setattr(fault, "active", step >= 6))
    cb = deepeyes(tmp_path, strict=True)
    x, y = images()
    with pytest.raises(OSError, match="No space left on device") as raised:
        small_cnn().fit(x, y, batch_size=8, verbose=0, callbacks=[toggle, cb])
    assert raised.value.errno == errno.ENOSPC and "step-00000006.npz" in str(raised.value)
    assert toggle.step == 6  # raised at the first failed write
    run = check_consistent(tmp_path / "run")
    assert [s.step for s in run.snapshots] == [2, 4] and run.status == "training"
    assert run.manifest["settings"]["strict"] is True


def test_strict_is_checked_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="strict"):
        DeepEyesCallback(log_dir=tmp_path, strict="yes")
    cb = deepeyes(tmp_path)
    small_cnn().fit(*images(16), batch_size=8, verbose=0, callbacks=[cb])
    assert load_run(cb.run_dir).manifest["settings"]["strict"] is False


def test_the_last_manifest_rewrite_failing_only_warns(tmp_path, monkeypatch):
    fault = Fault(monkeypatch, "manifest")
    at_end = Steps(lambda step: None, at_end=lambda: setattr(fault, "active", True))
    cb = deepeyes(tmp_path)
    said = fit_recording(small_cnn(), *images(), [at_end, cb])  # 10 steps, snapshot at 10
    assert len(said) == 1 and "manifest with status 'finished' not written" in said[0], said
    assert str(tmp_path / "run" / "manifest.json") in said[0]
    run = check_consistent(tmp_path / "run")
    assert [s.step for s in run.snapshots] == [2, 4, 6, 8, 10] and run.status == "training"


@pytest.mark.parametrize("removed_at, kept", [(7, [8, 10, 12, 14, 16, 18, 20]), (20, [])])
def test_a_removed_run_directory_is_written_again(tmp_path, removed_at, kept):
    cb = deepeyes(tmp_path)

    def remove(step):
        if step == removed_at:
            shutil.rmtree(cb.run_dir)

    said = fit_recording(small_cnn(), *images(), [cb, Steps(remove)], epochs=2)
    assert len(said) == 1 and "lost its manifest" in said[0], said
    assert str(tmp_path / "run") in said[0]
    run = check_consistent(tmp_path / "run")
    assert [s.step for s in run.snapshots] == kept and run.status == "finished"
    assert len(run.manifest["analysed_layers"]) == 2
    if kept:
        assert run.model_config is not None
        # The whole reservoir was stored again with the first snapshot after the removal.
        chunk = np.load(tmp_path / "run" / "samples" / "L0" / "entries-00000008.npz")
        assert chunk["step"].min() == 1


# -- a real full disk ----------------------------------------------------------------------------

FILL_A_SMALL_DISK = textwrap.dedent(
    """
    import json, os, sys, warnings
    from pathlib import Path
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback, load_run

    disk = Path(sys.argv[1])
    # Ballast leaves about 300 KB: the run fills it, then the ballast is removed.
    ballast = disk / "ballast"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    ballast.write_bytes(b"x" * (free - 300_000))
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(16, name="fc"),
        keras.layers.Dense(3, name="out"),
    ], name="filler")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(log_dir=disk, run_name="run", snapshot_every=2, sample_every=1,
                          reservoir_size=1000, maps=False, verbose=0)
    said, freed_at = [], []

    class FreeUp(keras.callbacks.Callback):
        step = 0

        def on_train_batch_end(self, batch, logs=None):
            FreeUp.step += 1
            if not freed_at and sum("not written" in m for m in said) >= 2:
                ballast.unlink()
                freed_at.append(FreeUp.step)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Watch(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                said[:] = [str(w.message) for w in caught if "DeepEyes" in str(w.message)]

        model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb, Watch(), FreeUp()])
        said[:] = [str(w.message) for w in caught if "DeepEyes" in str(w.message)]
    print(json.dumps({"said": said, "freed_at": freed_at, "steps": FreeUp.step}))
    """
)


def test_a_real_full_disk(tmp_path):
    disk, copy, report = tmp_path / "disk", tmp_path / "copy", tmp_path / "report.json"
    disk.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(FILL_A_SMALL_DISK)
    # Train on the small disk, then copy the run out (a user namespace's tmpfs ends with it).
    body = f"{sys.executable} {script} {disk} > {report} && cp -a {disk / 'run'} {copy}"
    mount = f"mount -t tmpfs -o size=2m tmpfs {disk}"
    mounted = False
    if os.geteuid() == 0 and subprocess.run(mount.split(), capture_output=True).returncode == 0:
        mounted = os.path.ismount(disk)
        command = ["sh", "-c", body]
    else:
        namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
        probe = subprocess.run([*namespace, f"{mount} && test -w {disk}"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("no 2 MB tmpfs here: not root, and no user namespace to mount one in")
        command = [*namespace, f"{mount} && {body}"]
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    failed = [m for m in result["said"] if "not written" in m]
    assert len(failed) >= 2 and result["freed_at"], result
    for message in failed:
        assert "No space left on device" in message and str(disk / "run") in message, message
    run = check_consistent(copy)
    assert run.status == "finished", result
    steps = [s.step for s in run.snapshots]
    # Recording resumed once the ballast was gone: snapshots after it are on disk.
    assert steps and steps[-1] > result["freed_at"][0], (steps, result)
    assert run.metrics()["step"] == list(range(1, result["steps"] + 1))


# -- two trainings, one log_dir ------------------------------------------------------------------


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2025, 1, 2, 3, 4, 5, tzinfo=tz)


def test_a_dated_name_taken_gets_the_next_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(callback_module, "datetime", FrozenClock)
    base = "20250102-030405-small_cnn"
    (tmp_path / base).mkdir()  # taken, even without a manifest
    (tmp_path / f"{base}-2").mkdir()
    x, y = images(16)
    first = DeepEyesCallback(log_dir=tmp_path, verbose=0, maps=False)
    small_cnn().fit(x, y, batch_size=8, verbose=0, callbacks=[first])
    second = DeepEyesCallback(log_dir=tmp_path, verbose=0, maps=False)
    small_cnn().fit(x, y, batch_size=8, verbose=0, callbacks=[second])
    assert first.run_dir.name == f"{base}-3" and second.run_dir.name == f"{base}-4"
    for cb in (first, second):
        run = load_run(cb.run_dir)
        assert run.name == cb.run_dir.name and run.status == "finished"
    assert not list((tmp_path / base).iterdir())


TRAIN_WHEN_TOLD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from pathlib import Path
    import keras
    import numpy as np
    import deepeyes_keras.record.resume as callback_module  # where the dated name is made
    from deepeyes_keras import DeepEyesCallback

    class FrozenClock(datetime):  # both start "in the same second", whatever the machine's pace
        @classmethod
        def now(cls, tz=None):
            return datetime(2025, 1, 2, 3, 4, 5, tzinfo=tz)

    callback_module.datetime = FrozenClock
    log_dir, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 16)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="dense")],
                             name="same_model")
    model.compile("sgd", "sparse_categorical_crossentropy")
    cb = DeepEyesCallback(log_dir=log_dir, maps=False, verbose=0)
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.005)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[cb])
    print("RUN", cb.run_dir)
    """
)


def test_two_trainings_started_together_get_two_run_directories(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_WHEN_TOLD)
    log_dir, go = tmp_path / "runs", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    readies = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(log_dir), str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for ready in readies
    ]
    try:
        deadline = time.monotonic() + 240
        while not all(r.exists() for r in readies) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.write_text("go")
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    dirs = [Path(line.split(" ", 1)[1]) for out, _ in outputs for line in out.splitlines()
            if line.startswith("RUN ")]  # fmt: skip
    base = "20250102-030405-same_model"
    assert sorted(d.name for d in dirs) == [base, f"{base}-2"]
    for d in dirs:
        run = load_run(d)
        assert run.name == d.name and run.status == "finished" and len(run.snapshots) == 1


def test_claiming_a_run_directory_is_exclusive_under_a_crowd(tmp_path):
    # The name's check and its creation are one step: 16 threads let go at once on one name.
    import threading

    from deepeyes_keras.run.writer import claim_run_dir

    for round_ in range(10):
        base = tmp_path / f"round{round_}" / "20250102-030405-model"
        barrier, claimed = threading.Barrier(16), []

        def claim(base=base, barrier=barrier, claimed=claimed):
            barrier.wait()
            claimed.append(claim_run_dir(base).name)

        threads = [threading.Thread(target=claim) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claimed) == sorted([base.name] + [f"{base.name}-{n}" for n in range(2, 17)])
