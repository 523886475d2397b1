"""Input maps and filter maps of every snapshot, computed off the training thread.

The worker also writes each snapshot's chart specs once its maps exist (``views.py``).

The maps are a stage of their own: they read a run directory and write
``maps/L<i>/step-NNNNNNNN.npz`` beside the snapshots, atomically. :func:`compute_missing_maps` does
the work for whatever snapshots lack maps, in step order, so it is idempotent and can be re-run
(``deepeyes maps RUN``). :class:`MapWorker` runs it in a separate process at idle priority (no
TensorFlow, no shared interpreter lock with training): each time a snapshot lands when the maps
are computed during training, otherwise (``maps_during_training``) once fit returns, writing only
the run-wide views meanwhile. ``wait_for_maps()`` and the interpreter's exit wait for it, so every
snapshot gets its maps.

Layouts stay comparable from one snapshot to the next: the input map of a snapshot starts from the
previous snapshot's layout of the same layer (instances still in the reservoir keep their place,
new ones start at their nearest kept neighbours, see ``embedding.carry_layout``) and runs a short
optimisation; the first snapshot of a layer starts from PCA with the full schedule.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from deepeyes_keras import embedding
from deepeyes_keras.reader import load_run
from deepeyes_keras.store import write_npz

PCA_DIMENSIONS = 50  # descriptors are reduced to this many dimensions before t-SNE
FRESH_SCHEDULE = {"early_iter": 250, "n_iter": 300}
CARRIED_SCHEDULE = {"early_iter": 0, "n_iter": 150}


def maps_path(run_dir: Path, key: str, step: int) -> Path:
    return Path(run_dir) / "maps" / key / f"step-{int(step):08d}.npz"


def _reduce(descriptors: np.ndarray, seed: int) -> np.ndarray:
    x = np.nan_to_num(descriptors.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] <= PCA_DIMENSIONS or x.shape[0] <= PCA_DIMENSIONS:
        return x
    from sklearn.decomposition import PCA

    return PCA(PCA_DIMENSIONS, random_state=seed).fit_transform(x).astype(np.float32)


def layer_maps(
    layer, *, previous: dict | None = None, max_points: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Computes the input map and filter map of one layer at one snapshot.

    Args:
        layer: a :class:`~deepeyes_keras.reader.LayerSnapshot`.
        previous: the maps of the same layer at the previous snapshot, to start from.
        max_points: bound on the input map's points (a seeded subset of the reservoir).
        seed: seed of the subset and the embeddings.

    Returns:
        Arrays: ``uid`` and ``xy`` of the input map's points; ``filter_xy``, ``filter_label``,
        ``filter_strength`` and ``filter_perplexity`` of the filter map; ``seconds``.
    """
    began = time.perf_counter()
    samples = layer.samples
    order = np.arange(len(samples))
    if len(order) > max_points:
        order = np.sort(np.random.default_rng(seed).choice(len(order), max_points, replace=False))
    uid = samples.uid[order]
    x = _reduce(samples.descriptor[order], seed)
    if previous is not None and len(previous["uid"]) and len(uid):
        init = embedding.carry_layout(list(previous["uid"]), previous["xy"], list(uid), x)
        xy = embedding.input_map(x, init=init, seed=seed, **CARRIED_SCHEDULE)
    else:
        xy = embedding.input_map(x, seed=seed, **FRESH_SCHEDULE)
    fmap = embedding.filter_map(layer.jaccard, layer.label_activation, seed=seed)
    return {
        "uid": uid.astype(np.int64),
        "xy": np.asarray(xy, np.float32),
        "filter_xy": np.asarray(fmap.xy, np.float32),
        "filter_label": np.asarray(fmap.label, np.int32),
        "filter_strength": np.asarray(fmap.strength, np.float32),
        "filter_perplexity": np.float32(fmap.perplexity_used),
        "seconds": np.float32(time.perf_counter() - began),
    }


def missing_maps(run) -> list[tuple[int, str]]:
    """(step, layer key) pairs of the run that have no maps yet, in step order."""
    return [
        (snap.step, layer.key)
        for snap in run.snapshots
        for layer in snap.layers.values()
        if not maps_path(run.path, layer.key, snap.step).is_file()
    ]


def compute_missing_maps(run_dir, *, max_points: int = 2000, seed: int = 0, progress=None) -> int:
    """Computes every missing map of a run, in step order; returns how many were written.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
        progress: optional ``callable(done, total, message)``.
    """
    run = load_run(run_dir)
    todo = set(missing_maps(run))
    total, done = len(todo), 0
    previous: dict[str, dict] = {}
    for snap in run.snapshots:
        for name, layer in snap.layers.items():
            path = maps_path(run.path, layer.key, snap.step)
            if (snap.step, layer.key) not in todo:
                if path.is_file():
                    with np.load(path) as data:
                        previous[layer.key] = {"uid": data["uid"], "xy": data["xy"]}
                continue
            arrays = layer_maps(
                layer, previous=previous.get(layer.key), max_points=max_points, seed=seed
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            write_npz(path, arrays)
            previous[layer.key] = arrays
            done += 1
            if progress:
                progress(
                    done,
                    total,
                    f"maps of {name} at step {snap.step} ({float(arrays['seconds']):.1f} s)",
                )
    return done


def _worker_main(run_dir: str, max_points: int, seed: int) -> None:
    """Entry point of the worker process: ``python -m deepeyes_keras.maps RUN MAX_POINTS SEED``.

    Reads one line per snapshot notice ("snapshot") or "stop" on stdin, and writes one JSON line
    per event on stdout. It never imports TensorFlow, nor the user's script (which
    ``multiprocessing``'s spawn would re-import, re-running an unguarded training script).
    """
    import json
    import sys
    import warnings

    warnings.filterwarnings("ignore", message="Loky-backed parallel loops")
    from deepeyes_keras.findings import write_findings
    from deepeyes_keras.views import _ThumbnailCache, write_views

    def send(*event):
        print(json.dumps(event), flush=True)

    cache = _ThumbnailCache()
    for line in sys.stdin:
        message = line.strip()
        try:
            if message == "views":  # maps deferred until training ends: the cheap views only
                write_views(run_dir, cache=cache)
                continue
            compute_missing_maps(
                run_dir,
                max_points=max_points,
                seed=seed,
                progress=lambda d, t, m: send("progress", d, t, m),
            )
            write_views(run_dir, cache=cache)
            write_findings(run_dir)
        except Exception as err:  # noqa: BLE001 - reported to the parent, which shows it
            send("error", repr(err))
        if message == "stop":
            break
    send("stopped")


# How the worker starts: lower its priority FIRST, then import anything. Linux sets scheduling per
# thread and new threads inherit it, so the policy must be set before numpy's BLAS pool or
# openTSNE's threads exist (a `nice` after `import numpy` leaves those threads at full priority).
# SCHED_IDLE runs the worker only on otherwise idle cores, and a training thread that wakes up
# takes its core back at once; where it is not available, nice 19 is the fallback.
_LAUNCH = """
import os, runpy
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
runpy.run_module("deepeyes_keras.maps", run_name="__main__", alter_sys=True)
"""


class MapWorker:
    """A background process that keeps a run's maps and views up to date.

    Args:
        run_dir: the run directory.
        max_points: bound on the points of each input map.
        seed: seed of the embeddings.
    """

    def __init__(self, run_dir, *, max_points: int = 2000, seed: int = 0, threads: int = 2):
        env = dict(os.environ)
        for name in ("DEEPEYES_MAP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS"):  # fmt: skip
            env[name] = str(int(threads))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(run_dir), str(max_points), str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self._events: queue.Queue = queue.Queue()
        # Read the worker's output continuously so its pipe never fills up and blocks it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.errors: list[str] = []
        self.accepting = True
        self._stopped = False
        # A script that ends right after fit() still gets every map: wait for them at exit.
        atexit.register(self.wait)

    def _read(self):
        for line in self._process.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                continue
        self._events.put(["stopped"])

    def _send(self, message: str) -> None:
        try:
            self._process.stdin.write(message + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.accepting = False

    def notify(self, *, views_only: bool = False) -> None:
        """Tells the worker a snapshot landed (cheap; never blocks training).

        With ``views_only`` it writes only the run-wide views (curves, histograms) for now; the
        maps of every snapshot so far follow at the next plain notice or at :meth:`finish`.
        """
        if self.accepting:
            self._send("views" if views_only else "snapshot")

    def finish(self) -> None:
        """Lets the worker catch up with the last snapshots, then stop; does not wait."""
        if self.accepting:
            self._send("stop")
            self.accepting = False
            try:
                self._process.stdin.close()
            except OSError:
                pass

    def wait(self, *, verbose: bool = True, timeout: float | None = None) -> None:
        """Waits (showing progress) until the worker has written every map and stopped."""
        self.finish()
        began = time.perf_counter()
        while not self._stopped:
            left = None if timeout is None else timeout - (time.perf_counter() - began)
            if left is not None and left <= 0:
                break
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                break
            if event[0] == "stopped":
                self._stopped = True
                break
            if event[0] == "error":
                self.errors.append(event[1])
                print(f"DeepEyes: computing maps failed: {event[1]}", flush=True)
            elif event[0] == "progress" and verbose:
                _, done, total, text = event
                if done == total or done % 8 == 0:
                    print(f"DeepEyes: maps {done}/{total} ({text})", flush=True)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
        atexit.unregister(self.wait)


if __name__ == "__main__":
    _worker_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
