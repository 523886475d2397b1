"""Maps of every snapshot: computed off the training thread, carried between snapshots."""

import json
import os
import time

import keras
import numpy as np
import pytest
from scipy.spatial import procrustes

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.derive.maps import compute_missing_maps, layer_maps
from deepeyes_keras.derive.report import format_report
from deepeyes_keras.derive.worker import MapWorker

pytestmark = pytest.mark.slow


def tiny_run(tmp_path, maps, **options):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    # Three image templates plus noise: the receptive fields form clusters worth embedding.
    templates = rng.random((3, 8, 8, 1)) * 2
    x = (templates[y] + 0.2 * rng.random((96, 8, 8, 1))).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(
        log_dir=tmp_path, run_name="r", snapshot_every=4, maps=maps, reservoir_size=300, verbose=0,
        **options,
    )
    model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb]
    )  # 12 steps: ends on a snapshot
    cb.wait_for_maps()
    return cb.run_dir


@pytest.mark.parametrize("during", [True, False, None])
def test_every_snapshot_has_maps_when_fit_returns(tmp_path, during):
    run = load_run(tiny_run(tmp_path, maps=True, maps_during_training=during))
    assert [s.step for s in run.snapshots] == [4, 8, 12]
    for snap in run.snapshots:
        for name, layer in snap.layers.items():
            maps = layer.maps
            assert maps is not None, (snap.step, name)
            assert maps["xy"].shape == (len(maps["uid"]), 2)
            assert np.isfinite(maps["xy"]).all()
            assert set(maps["uid"]) <= set(layer.reservoir_uids)
            n_filters = layer.max_activation.shape[0]
            assert maps["filter_xy"].shape == (n_filters, 2)
            assert maps["filter_label"].shape == (n_filters,)
        # The worker also writes the findings of every snapshot (T1-T5 with their evidence), in
        # files of the findings stage: the recorder's snapshot records are left as written.
        assert set(snap.findings["layers"]) == {"conv", "out"}
        assert "findings" not in snap.record
        assert (run.path / "findings" / f"step-{snap.step:08d}.json").is_file()
    summary = json.loads((run.path / "findings.json").read_text())
    assert summary["step"] == 12
    report = format_report(summary)
    assert "conv" in report and "suggest width" in report
    for name in ("overview", "histograms"):
        assert (run.path / "views" / f"{name}.vl.json").is_file()
    assert (run.path / "views" / "step-00000012" / "L1.vl.json").is_file()


def test_maps_can_be_computed_later_and_layouts_stay_comparable(tmp_path):
    run_dir = tiny_run(tmp_path, maps=False)
    assert not (run_dir / "maps").exists()
    written = compute_missing_maps(run_dir)
    assert written == 3 * 2
    assert compute_missing_maps(run_dir) == 0  # idempotent
    run = load_run(run_dir)
    a, b = run.snapshots[1].layers["conv"].maps, run.snapshots[2].layers["conv"].maps
    shared, ia, ib = np.intersect1d(a["uid"], b["uid"], return_indices=True)
    assert len(shared) > 50
    _, _, carried = procrustes(a["xy"][ia], b["xy"][ib])
    # The same snapshot embedded from scratch (PCA start) moves the shared points clearly more.
    fresh = layer_maps(run.snapshots[2].layers["conv"], previous=None)
    _, _, scratch = procrustes(a["xy"][ia], fresh["xy"][ib])
    assert carried < 0.75 * scratch, (carried, scratch)
    assert (run_dir / "maps" / "L0" / "step-00000012.npz").is_file()


def test_a_script_ending_right_after_fit_still_gets_every_map(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np, keras
        from deepeyes_keras import DeepEyesCallback
        rng = np.random.default_rng(0)
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                  keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        cb = DeepEyesCallback(log_dir={str(tmp_path)!r}, run_name="exit", snapshot_every=3,
                              verbose=0)
        model.fit(rng.random((48, 8, 8, 1)), rng.integers(0, 3, 48), batch_size=8, verbose=0,
                  callbacks=[cb])
    """)  # no wait_for_maps(): the interpreter waits at exit
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    run = load_run(tmp_path / "exit")
    assert [s.step for s in run.snapshots] == [3, 6]
    assert all(layer.maps is not None for s in run.snapshots for layer in s.layers.values())


def test_export_markdown_with_images_for_a_wiki(tmp_path):
    import re

    from deepeyes_keras.cli import main

    run_dir = tiny_run(tmp_path, maps=False)
    assert main(["maps", str(run_dir)]) == 0
    out = tmp_path / "wiki"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    page = (out / "index.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert images == [
        "overview.png",
        "histograms.png",
        "L0-step-00000012.png",
        "L1-step-00000012.png",
    ]
    from test_charts import MIN_PIXEL_VARIANCE, decode_png, grey_on_white

    for name in images:  # each view of this real run renders to a non-blank picture
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert grey_on_white(decode_png(data)).var() > MIN_PIXEL_VARIANCE, name
    assert "## Findings" in page and "suggest width" in page
    assert main(["export", str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_background_worker_runs_every_thread_at_idle_priority(tmp_path):
    """Training must keep the cores: no thread of the maps process (BLAS pools included) may run
    at normal priority. Linux sets the policy per thread, so it must precede every import."""
    worker = MapWorker(tmp_path)  # waits for its first notice: alive, modules imported
    try:
        pid = worker._process.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until numpy's thread pool exists (if it has one)
            with open(f"/proc/{pid}/status") as status:
                threads = int(next(ln for ln in status if ln.startswith("Threads:")).split()[1])
            if threads > 1:
                break
            time.sleep(0.2)
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert {os.sched_getscheduler(t) for t in tids} == {os.SCHED_IDLE}
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the trainer itself is untouched
    finally:
        worker.finish()
        worker.wait(verbose=False)


def test_views_only_notices_defer_the_maps_until_the_last_notice(tmp_path):
    run_dir = tiny_run(tmp_path, maps=False)
    worker = MapWorker(run_dir)
    try:
        worker.notify(views_only=True)
        views = [run_dir / "views" / f"{name}.vl.json" for name in ("overview", "histograms")]
        deadline = time.monotonic() + 300  # written one after the other: wait for both
        while not all(v.is_file() for v in views) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(v.is_file() for v in views)
        assert not list(run_dir.glob("maps/*/*.npz"))  # deferred: no t-SNE yet
    finally:
        worker.finish()  # the last notice: every snapshot's maps, then stop
        worker.wait(verbose=False)
    assert worker.errors == []
    run = load_run(run_dir)
    assert all(layer.maps is not None for s in run.snapshots for layer in s.layers.values())


def test_maps_during_training_default_follows_the_machine():
    import tensorflow as tf

    from deepeyes_keras.record.callback import maps_during_training_default

    has_accelerator = bool(tf.config.list_physical_devices("GPU"))
    assert maps_during_training_default() == (has_accelerator or os.cpu_count() >= 8)
    with pytest.raises(ValueError, match="maps_during_training"):
        DeepEyesCallback(maps_during_training="yes")
