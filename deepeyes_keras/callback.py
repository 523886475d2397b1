"""DeepEyesCallback: record the paper's statistics while ``fit`` runs."""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras import __version__
from deepeyes_keras.statistics import BETA, N_BINS, THETA, finalize
from deepeyes_keras.store import RunWriter
from deepeyes_keras.taps import Recorder, check_graph_model, resolve_layers

_EARLY_SNAPSHOTS = (10, 20, 40, 80)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"Invalid value for argument {name}. Received: {name}={value!r}. "
            f"Expected an integer >= {minimum}."
        )
    return int(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def maps_during_training_default() -> bool:
    """True when training has an accelerator or at least 8 CPU cores to share with the maps."""
    accelerators = tf.config.list_physical_devices("GPU") + tf.config.list_physical_devices("TPU")
    return bool(accelerators) or (os.cpu_count() or 1) >= 8


class DeepEyesCallback(keras.callbacks.Callback):
    """Samples receptive fields during ``fit`` and writes DeepEyes snapshots.

    Per training step, a few images of the batch are picked at random (seeded) inside the compiled
    train step; one cached sub-model returns the input and output of every analysed layer; random
    positions are sampled in conv layers; the statistics of DESIGN.md (perplexity histograms, max
    and frequency activation, reliability, weighted Jaccard sums, per-label sums) are updated as
    TensorFlow ops and a bounded reservoir keeps instances for the input map. Snapshots are written
    atomically to ``log_dir/run_name``; read them with :func:`deepeyes_keras.load_run`.

    Args:
        log_dir: directory that holds the runs.
        run_name: the run's directory name; default ``<date>-<time>-<model name>``.
        layers: names of the layers to analyse; default every Conv1D, Conv2D and Dense layer.
        snapshot_every: ``"auto"`` (steps 10, 20, 40, 80, then every 100) or an integer number of
            steps. A snapshot is also written when training ends.
        sample_every: measure on every n-th training step (1 = every step, as the paper's code).
            Sampling fewer steps keeps the cost of watching low; see docs/overhead.
        dense_steps: also measure on each of the first ``dense_steps`` steps, when the network
            changes fastest.
        images_per_step: images of the batch (chosen at random) measured on a sampled step.
        positions_per_image: random positions (with replacement) sampled per image in conv layers.
        reservoir_size: instances kept per layer for the input map.
        probe_data: optional fixed ``(x, y)`` to sample from instead of the training batches.
        seed: seed of every random draw.
        maps: compute each snapshot's input map and filter map in a low-priority background
            process. ``fit`` does not wait for the last ones: ``wait_for_maps()`` does, and so
            does the interpreter at exit. With False, compute them later with
            ``deepeyes maps RUN``.
        maps_during_training: compute the maps while training runs (True), or only once ``fit``
            returns (False: during training the background process then writes only the cheap
            run-wide views, curves and perplexity histograms). None (default) decides by the
            machine: during training when TensorFlow sees a GPU or TPU, or the machine has at
            least 8 CPU cores; otherwise after fit, because on a few CPU cores a concurrent
            t-SNE slows training by 30-70% even at idle priority (shared caches and memory
            bandwidth; see the benchmarks page).
        jit_compile: compile the measurement with XLA (the train step itself is left as Keras
            compiles it).
        verbose: 0 silent, 1 a line when recording starts and ends.

    Example:
        >>> model.fit(x, y, epochs=2, callbacks=[DeepEyesCallback()])   # doctest: +SKIP
        >>> run = deepeyes_keras.load_run("deepeyes_runs/<run name>")      # doctest: +SKIP
    """

    def __init__(
        self,
        log_dir="deepeyes_runs",
        *,
        run_name=None,
        layers=None,
        snapshot_every="auto",
        sample_every=10,
        dense_steps=20,
        images_per_step=16,
        positions_per_image=10,
        reservoir_size=2000,
        probe_data=None,
        seed=0,
        maps=True,
        maps_during_training=None,
        jit_compile=False,
        verbose=1,
    ):
        super().__init__()
        if not isinstance(log_dir, str | Path) or not str(log_dir):
            raise ValueError(
                f"Invalid value for argument log_dir. Received: log_dir={log_dir!r}. "
                "Expected a directory path."
            )
        if run_name is not None and (
            not isinstance(run_name, str)
            or not run_name.strip()
            or "/" in run_name
            or "\\" in run_name
        ):
            raise ValueError(
                f"Invalid value for argument run_name. Received: run_name={run_name!r}."
                " Expected a non-empty name without path separators."
            )
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise ValueError(
                    f"Invalid value for argument layers. Received: layers={layers!r}. "
                    "Expected a list of layer names, e.g. layers=['conv1', 'fc1']."
                )
            layers = list(layers)
            if not layers:
                raise ValueError(
                    "Invalid value for argument layers. Received: layers=[]. "
                    "Expected at least one layer name, or None for the default."
                )
        if snapshot_every != "auto":
            _positive_int("snapshot_every", snapshot_every)
        if probe_data is not None:
            if not isinstance(probe_data, tuple | list) or len(probe_data) != 2:
                raise ValueError(
                    "Invalid value for argument probe_data. Expected a tuple (x, y) of "
                    f"arrays. Received: {type(probe_data).__name__}."
                )
            if len(probe_data[0]) != len(probe_data[1]) or len(probe_data[0]) == 0:
                raise ValueError(
                    "Invalid value for argument probe_data: x and y must be non-empty "
                    f"and of equal length; got {len(probe_data[0])} and "
                    f"{len(probe_data[1])}."
                )
        self.log_dir = Path(log_dir)
        self.run_name = run_name
        self.layers = layers
        self.snapshot_every = snapshot_every
        self.sample_every = _positive_int("sample_every", sample_every)
        self.dense_steps = _positive_int("dense_steps", dense_steps, minimum=0)
        self.images_per_step = _positive_int("images_per_step", images_per_step)
        self.positions_per_image = _positive_int("positions_per_image", positions_per_image)
        self.reservoir_size = _positive_int("reservoir_size", reservoir_size)
        self.probe_data = probe_data
        self.seed = _positive_int("seed", seed, minimum=0)
        if not isinstance(jit_compile, bool):
            raise ValueError(
                "Invalid value for argument jit_compile. Received: "
                f"jit_compile={jit_compile!r}. Expected True or False."
            )
        if not isinstance(maps, bool):
            raise ValueError(
                f"Invalid value for argument maps. Received: maps={maps!r}. Expected True or False."
            )
        if maps_during_training is not None and not isinstance(maps_during_training, bool):
            raise ValueError(
                "Invalid value for argument maps_during_training. Received: "
                f"maps_during_training={maps_during_training!r}. Expected True, False or None."
            )
        self.maps = maps
        self.maps_during_training = maps_during_training
        self.jit_compile = jit_compile
        self.verbose = verbose
        self._reset()

    # -- state ---------------------------------------------------------------------------------

    def _reset(self):
        self._recorded_model = None
        self._layers = None
        self._recorder = None
        self._probe = None
        self._writer = None
        self._is_writer = True
        self._epoch = 0
        self._pending_metrics: dict[str, list] = {}
        self._pending_epochs: list[dict] = []
        self._last_snapshot_step = 0
        self._prev_hist: dict[int, np.ndarray] = {}
        self._prev_interval: dict[int, np.ndarray] = {}
        self._written_uid: dict[int, int] = {}
        self._fit_start = None
        self._map_worker = None
        self._seen_step = 0
        self._epoch_base = 0

    @property
    def run_dir(self) -> Path | None:
        """Directory of the current run (None before the first ``fit``)."""
        return self._writer.run_dir if self._writer else None

    # -- Keras hooks ---------------------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        check_graph_model(model)
        if self._recorded_model is not None and self._recorded_model is not model:
            self._reset()  # a different model: a new run
        self._recorded_model = model
        self._layers, skipped = resolve_layers(model, self.layers)
        if skipped:
            warnings.warn(
                f"DeepEyes cannot analyse layer(s) {skipped} (only Conv1D, Conv2D and "
                "Dense are supported); they are skipped.",
                stacklevel=2,
            )
        self._is_writer = _is_chief(model.distribute_strategy)
        if model.built and self._recorder is None:
            self._ensure_recorder()
        self._install(model)

    def on_train_begin(self, logs=None):
        self._fit_start = time.perf_counter()
        if self._writer is None and self._is_writer:
            run_dir = self._choose_run_dir()
            if (run_dir / "manifest.json").exists():
                raise FileExistsError(
                    f"DeepEyesCallback: run directory {str(run_dir)!r} already holds a run. Pass "
                    "another run_name (or none, for a dated name), or delete that directory. "
                    "(Calling fit again with the same callback continues its run.)"
                )
            writer = RunWriter(run_dir)
            writer.open(
                self._manifest_base(writer.run_dir.name)
            )  # fails here, before any step, if unwritable
            self._writer = writer
            if self.verbose:
                names = [layer.name for layer in self._layers]
                print(f"DeepEyes: recording layers {names} to {writer.run_dir}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        if self._recorder is not None:  # exact even after an interrupted fit (one read per epoch)
            self._seen_step = int(self._recorder.step.numpy())
        self._epoch_base = self._seen_step

    def on_train_batch_end(self, batch, logs=None):
        # Kept minimal: runs every step. The heavy work is in the compiled train step.
        for name, value in (logs or {}).items():
            self._pending_metrics.setdefault(name, []).append(value)
        # Keras passes the index in the epoch of the last step this call covers; counting here
        # avoids reading the step variable (a device sync) every step. Snapshots re-check it.
        step = self._epoch_base + int(batch) + 1
        self._pending_metrics.setdefault("step", []).append(step)
        # With steps_per_execution > 1 several steps pass between two calls: act when a sampled
        # or snapshot step lies in (previous step, step].
        previous, self._seen_step = self._seen_step, step
        if step <= self.dense_steps or _crossed(previous, step, self.sample_every, offset=1):
            self._recorder.measure()
        if self._is_snapshot_step(previous, step):
            self._snapshot(step)

    def on_epoch_end(self, epoch, logs=None):
        self._pending_epochs.append(dict(logs or {}, epoch=int(epoch)))

    def on_train_end(self, logs=None):
        model = self._recorded_model
        if self._recorder is not None:
            step = int(self._recorder.step.numpy())
            if step > self._last_snapshot_step:
                self._snapshot(step)
        if self._map_worker is not None:
            # The last maps (or, when deferred, all of them) are computed in the background:
            # fit() returns now.
            self._map_worker.finish()
            if self.verbose:
                print(
                    "DeepEyes: the last input and filter maps are being computed in the "
                    "background (callback.wait_for_maps() waits for them)."
                )
        if self._writer is not None:
            self._writer.set_status("finished", updated=_now())
            if self.verbose:
                n = len(self._writer.manifest["snapshots"])
                print(f"DeepEyes: {n} snapshots in {self._writer.run_dir}")
        self._uninstall(model)

    def _maps_now(self) -> bool:
        """Whether maps are computed while training runs (see ``maps_during_training``)."""
        if self.maps_during_training is None:
            self.maps_during_training = maps_during_training_default()
        return self.maps_during_training

    def wait_for_maps(self, verbose: bool | None = None) -> None:
        """Blocks until every snapshot's maps are written (they are computed in the background)."""
        if self._map_worker is not None:
            self._map_worker.wait(verbose=bool(self.verbose if verbose is None else verbose))
            if self._map_worker.errors:
                raise RuntimeError(
                    f"DeepEyes could not compute some maps: "
                    f"{self._map_worker.errors}. Run `deepeyes maps "
                    f"{self.run_dir}` to retry."
                )

    # -- capture inside the train step ---------------------------------------------------------

    def _install(self, model):
        if getattr(model.train_step, "_deepeyes_callback", None) is self:
            return
        original = getattr(model.train_step, "_deepeyes_original", model.train_step)

        def train_step(data):
            logs = original(data)
            recorder = self._ensure_recorder()
            recorder.capture(self._probe if self._probe is not None else data)
            return logs

        train_step._deepeyes_original = original
        train_step._deepeyes_callback = self
        model.train_step = train_step
        model.train_function = None  # make fit() trace the wrapped step

    def _uninstall(self, model):
        if model is not None and "train_step" in vars(model):
            del model.train_step
            model.train_function = None

    def _ensure_recorder(self) -> Recorder:
        if self._recorder is None:
            model = self._recorded_model
            # Called while the train step is traced: build variables and the tap model eagerly.
            with tf.init_scope():
                out_dim = int(model.outputs[0].shape[-1] or 1)
                self._recorder = Recorder(
                    model,
                    self._layers,
                    images_per_step=self.images_per_step,
                    positions_per_image=self.positions_per_image,
                    reservoir_size=self.reservoir_size,
                    n_labels=max(out_dim, 2),
                    seed=self.seed,
                    strategy=model.distribute_strategy,
                    jit_compile=self.jit_compile,
                )
                if self.probe_data is not None:
                    x, y = self.probe_data
                    self._probe = (tf.constant(np.asarray(x)), tf.constant(np.asarray(y)))
        return self._recorder

    # -- snapshots -----------------------------------------------------------------------------

    def _is_snapshot_step(self, previous: int, step: int) -> bool:
        if step <= self._last_snapshot_step:
            return False
        if self.snapshot_every == "auto":
            early = any(previous < s <= step for s in _EARLY_SNAPSHOTS)
            return early or _crossed(previous, step, 100)
        return _crossed(previous, step, self.snapshot_every)

    def _snapshot(self, step: int) -> None:
        if self._writer is None:
            self._last_snapshot_step = step
            return
        began = time.perf_counter()
        if "analysed_layers" not in self._writer.manifest:
            self._writer.manifest.update(self._manifest_model())
        state = self._recorder.read(self._written_uid)
        if state["step"] != step:  # the per-step count drifted (never seen): trust the variable
            step = self._seen_step = state["step"]
        arrays, samples, layer_records = {}, {}, {}
        for tap, layer_state in zip(self._recorder.taps, state["layers"], strict=True):
            key = f"L{tap.index}"
            stats = finalize(layer_state["stats"], step=step)
            cumulative = stats.pop("histogram_cumulative")
            interval = cumulative - self._prev_hist.get(tap.index, 0.0)
            change = interval - self._prev_interval.get(tap.index, 0.0)
            self._prev_hist[tap.index] = cumulative
            self._prev_interval[tap.index] = interval
            stats["perplexity_histogram"] = interval
            stats["perplexity_change"] = change
            stats["histogram_cumulative"] = cumulative
            stats["reservoir_uids"] = layer_state["reservoir_uids"]
            for name, value in stats.items():
                arrays[f"{key}.{name}"] = value
            samples[key] = self._new_samples(tap, layer_state["new_samples"])
            raw = layer_state["stats"]
            layer_records[tap.name] = {
                "key": key,
                "instances": int(raw["instances"]),
                "weighted_instances": float(raw["weighted_instances"]),
                "nonfinite": int(raw["nonfinite"]),
                "reservoir_filled": int(len(stats["reservoir_uids"])),
            }
        metrics, self._pending_metrics = self._pending_metrics, {}
        epochs, self._pending_epochs = self._pending_epochs, []
        record = {
            "step": step,
            "epoch": self._epoch,
            "time": _now(),
            "fit_seconds": time.perf_counter() - (self._fit_start or began),
            "metrics": metrics,
            "epoch_logs": epochs,
            "layers": layer_records,
        }
        record["read_seconds"] = time.perf_counter() - began
        self._writer.write_snapshot(record, arrays, samples)
        if self.maps:
            if self._map_worker is None or not self._map_worker.accepting:
                from deepeyes_keras.maps import MapWorker

                self._map_worker = MapWorker(self._writer.run_dir, seed=self.seed)
            self._map_worker.notify(views_only=not self._maps_now())
        self.last_blocking_seconds = time.perf_counter() - began
        self._last_snapshot_step = step

    def _new_samples(self, tap, new) -> dict[str, np.ndarray]:
        """Reservoir instances not yet written, with their input-space boxes."""
        if len(new["uid"]):
            self._written_uid[tap.index] = int(new["uid"].max())
        positions = new["position"].astype(np.int64)
        start, size = self._boxes(tap, positions)

        def half(a):
            a = np.nan_to_num(a, nan=0.0, posinf=_FLOAT16_MAX, neginf=-_FLOAT16_MAX)
            return np.clip(a, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)

        return {
            "uid": new["uid"].astype(np.int64),
            "step": new["step"].astype(np.int64),
            "image": new["image"].astype(np.int64),
            "position": positions,
            "label": new["label"].astype(np.int32),
            "box_start": start,
            "box_size": size,
            "descriptor": half(new["descriptor"]),
            "activation": new["activation"].astype(np.float32),
            "patch": half(new["patch"]),
        }

    def _boxes(self, tap, positions):
        in_spatial = self._recorder.input_shape[:-1] if len(self._recorder.input_shape) > 1 else ()
        n = len(positions)
        if not tap.space_map:  # the whole input
            start = np.zeros((n, len(in_spatial)), np.int64)
            size = np.tile(np.asarray(in_spatial, np.int64), (n, 1)).reshape(n, len(in_spatial))
            return start, size
        coords = (
            np.stack(np.unravel_index(positions, tap.grid), axis=1)
            if n
            else np.zeros((0, len(tap.grid)), np.int64)
        )
        scale = np.array([m.scale for m in tap.space_map])
        offset = np.array([m.offset for m in tap.space_map])
        sizes = np.array([m.size for m in tap.space_map])
        return (coords * scale + offset).astype(np.int64), np.tile(sizes, (n, 1)).astype(np.int64)

    # -- manifest ------------------------------------------------------------------------------

    def _choose_run_dir(self) -> Path:
        if self.run_name:
            return self.log_dir / self.run_name
        base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{self._recorded_model.name}"
        candidate, n = self.log_dir / base, 2
        while candidate.exists():
            candidate, n = self.log_dir / f"{base}-{n}", n + 1
        return candidate

    def _manifest_base(self, run_name: str) -> dict:
        return {
            "format": "deepeyes-run",
            "run_name": run_name,
            "created": _now(),
            "versions": {
                "deepeyes_keras": __version__,
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "settings": {
                "sample_every": self.sample_every,
                "dense_steps": self.dense_steps,
                "images_per_step": self.images_per_step,
                "positions_per_image": self.positions_per_image,
                "reservoir_size": self.reservoir_size,
                "snapshot_every": self.snapshot_every,
                "seed": self.seed,
                "beta": BETA,
                "theta": THETA,
                "n_bins": N_BINS,
                "probe_data": self.probe_data is not None,
                "argv": sys.argv[:1],
            },
            "model": {"name": self._recorded_model.name},
        }

    def _manifest_model(self) -> dict:
        model = self._recorded_model
        rec = self._recorder
        analysed = {tap.name: tap for tap in rec.taps}
        layers = []
        for layer in model.layers:
            try:
                out_shape = list(layer.output.shape)
            except (AttributeError, ValueError):
                out_shape = None
            layers.append(
                {
                    "name": layer.name,
                    "class": type(layer).__name__,
                    "output_shape": out_shape,
                    "filters": int(out_shape[-1]) if out_shape and out_shape[-1] else None,
                    "parameters": int(layer.count_params()) if layer.built else 0,
                    "analysed": layer.name in analysed,
                }
            )
        return {
            "model": {
                "name": model.name,
                "class": type(model).__name__,
                "input_shape": list(rec.input_shape),
                "n_labels": rec.n_labels,
                "parameters": int(model.count_params()),
                "layers": layers,
            },
            "analysed_layers": [
                {
                    "index": tap.index,
                    "key": f"L{tap.index}",
                    "name": tap.name,
                    "class": type(tap.layer).__name__,
                    "kind": tap.kind,
                    "n_filters": tap.n_filters,
                    "input_shape": list(tap.in_shape),
                    "output_shape": list(tap.out_shape),
                    "grid": list(tap.grid),
                    "descriptor_size": tap.descriptor_size,
                    "patch_shape": list(rec.patch_shape(tap)),
                    "space_map": None
                    if tap.space_map is None
                    else [
                        {"scale": m.scale, "offset": m.offset, "size": m.size}
                        for m in tap.space_map
                    ],
                    "parameters": int(tap.layer.count_params()),
                }
                for tap in rec.taps
            ],
        }


def _crossed(previous: int, step: int, every: int, offset: int = 0) -> bool:
    """True when some s in (previous, step] has (s - offset) % every == 0."""
    return (step - offset) // every > (previous - offset) // every


def _is_chief(strategy) -> bool:
    """Only one process writes: the chief (or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0
