"""The maps' thread count under contention (issue 15: steady on a busy machine)."""

import os
import subprocess
import sys
import time

import numpy as np

from deepeyes_keras.derive import tsne


def test_one_thread_when_the_cores_are_taken():
    assert tsne.threads_now(2, idle=2.0) == 2
    assert tsne.threads_now(2, idle=1.6) == 2
    assert tsne.threads_now(2, idle=1.2) == 1
    assert tsne.threads_now(2, idle=0.0) == 1
    assert tsne.threads_now(1, idle=2.0) == 1
    # several layers at once: one thread each, in every thread, whatever the idle cores
    import threading

    seen = []
    with tsne.fixed_threads(1):
        worker = threading.Thread(target=lambda: seen.append(tsne.threads_now(2, idle=2.0)))
        worker.start()
        worker.join()
        seen.append(tsne.threads_now(2, idle=2.0))
    assert seen == [1, 1] and tsne.threads_now(2, idle=2.0) == 2


def test_idle_cores_from_proc_stat_leave_out_our_own_cpu(monkeypatch):
    """Fake /proc/stat and os.times: 2 cores, 100 jiffies per core-second, 1 s apart."""
    clock = iter([10.0, 11.0, 12.0, 12.1])
    stats = iter([(0.0, 0.0), (100.0, 200.0), (200.0, 400.0), (200.0, 420.0)])
    own = iter([0.0, 0.0, 1.0, 1.0])  # the second second, this process used one core itself
    sleeps = []

    class Times:
        def __init__(self, cpu):
            self.user, self.system = cpu, 0.0

    monkeypatch.setattr(tsne, "_last_sample", [])
    monkeypatch.setattr(tsne, "_cpu_times", lambda: next(stats))
    monkeypatch.setattr(tsne.os, "times", lambda: Times(next(own)))
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    monkeypatch.setattr("time.sleep", sleeps.append)
    monkeypatch.setattr(tsne.os, "cpu_count", lambda: 2)
    # first call: a fresh sample; 100 of 200 jiffies idle, nothing of ours -> 1 core idle
    assert abs(tsne.idle_cores() - 1.0) < 1e-9
    assert sleeps == [tsne.IDLE_SAMPLE_SECONDS]
    # second call, 1 s later: 100 of 200 idle again, but the busy half was ours -> 2 idle
    assert abs(tsne.idle_cores() - 2.0) < 1e-9
    # third call 0.1 s later: too soon to measure again; the last figure, without sleeping
    assert abs(tsne.idle_cores() - 2.0) < 1e-9
    assert sleeps == [tsne.IDLE_SAMPLE_SECONDS]


def test_a_busy_process_beside_is_seen(monkeypatch):
    if not os.path.exists("/proc/stat"):
        return  # the load-average fallback is exercised where there is no /proc
    monkeypatch.setattr(tsne, "_last_sample", [])
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)
        idle = tsne.idle_cores(seconds=0.5)
    finally:
        child.wait()
    assert idle <= (os.cpu_count() or 1) - 0.5, idle  # the spinning child holds about one core


def test_embedding_runs_on_the_threads_chosen(monkeypatch):
    monkeypatch.setattr(tsne, "threads_now", lambda *a, **k: 1)
    seen = []
    real = tsne.tsne_embedding

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tsne, "tsne_embedding", spy)
    x = np.random.default_rng(0).normal(size=(60, 5))
    y0 = tsne.small_init(tsne.pca_coords(x, 0), 0)
    xy = tsne.run_opentsne(
        x, "euclidean", 10, y0, 0, [(20, 12.0, 0.5), (20, 1.0, 0.8)], lambda f, m: None
    )
    assert seen == [1] and xy.shape == (60, 2) and np.isfinite(xy).all()
