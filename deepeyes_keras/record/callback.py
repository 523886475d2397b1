"""DeepEyesCallback: record the paper's statistics while ``fit`` runs.

The callback checks its arguments (``deepeyes_keras/record/arguments.py``) and the layers to
analyse (``deepeyes_keras/record/selection.py``), and wraps the model's train step so that the
recorder (``deepeyes_keras/record/recorder.py``) captures a few images of each batch (the wrapper
and the compiled functions kept across fits: ``deepeyes_keras/record/step_hook.py``). It measures
them on the steps that ``deepeyes_keras/record/schedule.py`` picks and, on snapshot steps, writes
a snapshot (``deepeyes_keras/record/snapshot.py``) into the run directory through
``deepeyes_keras/run/writer.py``; ``deepeyes_keras/record/describe.py`` builds the manifest's
description of the run and model. How it samples is told in ``viewer_site/reference/sampling.md``.

Example:
    >>> model.fit(x, y, epochs=2, callbacks=[DeepEyesCallback()])   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras.record.arguments import (
    check_bool,
    check_layers,
    check_log_dir,
    check_positive_int,
    check_probe_data,
    check_run_name,
    check_snapshot_every,
    check_tensorboard,
)
from deepeyes_keras.record.budget import MEMORY_BUDGET_MB, left_out_message
from deepeyes_keras.record.describe import model_config, model_manifest, run_manifest, utc_now
from deepeyes_keras.record.distribute import check_single_worker, check_single_worker_env, is_chief
from deepeyes_keras.record.recorder import Recorder
from deepeyes_keras.record.resume import dated_name, plan_run, restored_step
from deepeyes_keras.record.schedule import is_measured_step, is_snapshot_step
from deepeyes_keras.record.selection import check_graph_model, resolve_layers
from deepeyes_keras.record.snapshot import SnapshotAssembler, snapshot_record
from deepeyes_keras.record.step_hook import StepHook
from deepeyes_keras.run.writer import RunWriter


def maps_during_training_default() -> bool:
    """True when training has an accelerator or at least 8 CPU cores to share with the maps."""
    accelerators = tf.config.list_physical_devices("GPU") + tf.config.list_physical_devices("TPU")
    return bool(accelerators) or (os.cpu_count() or 1) >= 8


class DeepEyesCallback(keras.callbacks.Callback):
    """Samples receptive fields during ``fit`` and writes DeepEyes snapshots.

    Per training step, a few images of the batch are picked at random (seeded) inside the compiled
    train step; one cached sub-model returns the input and output of every analysed layer; random
    positions are sampled in conv layers; the statistics (perplexity histograms, max and
    frequency activation, reliability, weighted Jaccard sums, per-label sums) are updated as
    TensorFlow ops and a bounded reservoir keeps instances for the input map. Snapshots are written
    atomically to ``log_dir/run_name``; read them with :func:`deepeyes_keras.load_run`.

    Args:
        log_dir: directory that holds the runs.
        run_name: the run's directory name; default ``<date>-<time>-<model name>``.
        layers: names of the layers to analyse (``outer/inner`` for a layer inside a nested
            model); default every Conv (also depthwise and separable), Dense and recurrent layer at
            any depth, within ``memory_budget_mb``.
        snapshot_every: ``"auto"`` (steps 10, 20, 40, 80, then every 100) or an integer number of
            steps. A snapshot is also written when training ends.
        sample_every: measure on every n-th training step (1 = every step, as the paper's code).
            Sampling fewer steps keeps the cost of watching low (see the benchmarks page,
            ``viewer_site/reference/benchmarks.md``).
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
        memory_budget_mb: bound on the recorder's variables (reservoirs and statistics) when
            ``layers`` is not given: on a big network the default layers are at most 24, spread
            over its depth, whose variables fit this many MB (None: every analysable layer).
            ``layers=[...]`` is never cut.
        tensorboard: a TensorBoard log directory: each snapshot's findings become events in its
            ``deepeyes-<run name>`` (``viewer_site/reference/tensorboard.md``). None: no events.
        strict: raise when a write fails during training (full disk...); False: warn and go on
            (``viewer_site/reference/faults.md``).
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
        memory_budget_mb=MEMORY_BUDGET_MB,
        tensorboard=None,
        strict=False,
        verbose=1,
    ):
        super().__init__()
        check_single_worker_env()  # multi-worker fit fails upstream before set_model is reached
        self.log_dir = check_log_dir(log_dir)
        self.run_name = check_run_name(run_name)
        self.layers = check_layers(layers)
        self.snapshot_every = check_snapshot_every(snapshot_every)
        self.probe_data = check_probe_data(probe_data)
        self.sample_every = check_positive_int("sample_every", sample_every)
        self.dense_steps = check_positive_int("dense_steps", dense_steps, minimum=0)
        self.images_per_step = check_positive_int("images_per_step", images_per_step)
        self.positions_per_image = check_positive_int("positions_per_image", positions_per_image)
        self.reservoir_size = check_positive_int("reservoir_size", reservoir_size)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.jit_compile = check_bool("jit_compile", jit_compile)
        mb = memory_budget_mb
        self.memory_budget_mb = None if mb is None else check_positive_int("memory_budget_mb", mb)
        self.maps = check_bool("maps", maps)
        self.maps_during_training = check_bool(
            "maps_during_training", maps_during_training, allow_none=True
        )
        self.tensorboard = check_tensorboard(tensorboard)
        self.strict = check_bool("strict", strict)
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
        self._snapshots = SnapshotAssembler()
        self._fit_start = None
        self._map_worker = None
        self._previous_worker = None
        self._seen_step = 0
        self._epoch_base = 0
        self._hook = StepHook(self, self._capture)  # record/step_hook.py

    @property
    def run_dir(self) -> Path | None:
        """Directory of the current run (None before the first ``fit``)."""
        return self._writer.run_dir if self._writer else None

    # -- Keras hooks ---------------------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        check_single_worker(model.distribute_strategy)  # multi-worker fit fails upstream today
        check_graph_model(model)
        if self._recorded_model is not None and self._recorded_model is not model:
            self._reset()  # a different model: a new run
        self._recorded_model = model
        self._layers, skipped = resolve_layers(model, self.layers)
        if skipped:
            warnings.warn(
                f"DeepEyes cannot analyse {len(skipped)} layer(s); they are skipped: "
                f"{'; '.join(skipped)}.",
                stacklevel=2,
            )
        self._is_writer = is_chief(model.distribute_strategy)
        if model.built and self._recorder is None:
            self._ensure_recorder()
        self._hook.install(model)

    def on_train_begin(self, logs=None):
        self._fit_start = time.perf_counter()
        if self._writer is None and self._is_writer:
            model_name = self._recorded_model.name
            run_dir, resumed, unique = plan_run(
                self.log_dir, self.run_name, self._choose_run_dir(), self._recorded_model
            )
            # Fails here, before any step, if unwritable; a dated name is claimed exclusively.
            writer = RunWriter(run_dir, strict=self.strict, unique=unique)
            manifest = run_manifest(writer.run_dir.name, model_name, self._settings())
            if resumed is not None:  # record/resume.py: a new run linked to the interrupted one
                manifest["resumed_from"] = resumed
                self._resume_maps(resumed["path"])
            writer.open(manifest)
            self._writer = writer
            if self.verbose:
                names = [tap.name for tap in self._recorder.taps] if self._recorder else None
                print(
                    f"DeepEyes: recording layers {names or [n for n, _ in self._layers]} to "
                    f"{writer.run_dir}"
                )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        at_step = restored_step(self._recorded_model)  # a restored model's step: ours follows
        if self._recorder is not None and at_step > int(self._recorder.step.numpy()):
            self._recorder.step.assign(at_step)
            self._last_snapshot_step = max(self._last_snapshot_step, at_step)
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
        if is_measured_step(
            previous, step, dense_steps=self.dense_steps, sample_every=self.sample_every
        ):
            self._recorder.measure()
        if step > self._last_snapshot_step and is_snapshot_step(
            previous, step, self.snapshot_every
        ):
            self._snapshot(step)

    def on_epoch_end(self, epoch, logs=None):
        self._pending_epochs.append(dict(logs or {}, epoch=int(epoch)))

    def on_train_end(self, logs=None):
        model = self._recorded_model
        if self._recorder is not None:
            step = int(self._recorder.step.numpy())
            if step > self._last_snapshot_step:
                self._snapshot(step)
        if self._previous_worker is not None:
            self._previous_worker.finish()
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
            self._writer.set_status("finished", updated=utc_now())
            if self.verbose:
                n = len(self._writer.manifest["snapshots"])
                print(f"DeepEyes: {n} snapshots in {self._writer.run_dir}")
        self._hook.uninstall(model)

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

    def _capture(self, data):
        recorder = self._ensure_recorder()
        recorder.capture(self._probe if self._probe is not None else data)

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
                    choose=self.layers is None,
                    memory_budget_mb=self.memory_budget_mb,
                )
                self._warn_left_out(self._recorder)
                if self.probe_data is not None:
                    self._probe = tf.nest.map_structure(
                        lambda a: tf.constant(np.asarray(a)), tuple(self.probe_data)
                    )
        return self._recorder

    def _resume_maps(self, previous) -> None:
        """The interrupted run's missing maps, computed in the background too."""
        if self.maps:
            from deepeyes_keras.derive.worker import MapWorker

            self._previous_worker = MapWorker(previous, seed=self.seed)
            self._previous_worker.notify(views_only=not self._maps_now())

    def _warn_left_out(self, recorder: Recorder) -> None:
        if recorder.left_out:
            warnings.warn(left_out_message(recorder, self.memory_budget_mb), stacklevel=3)

    # -- snapshots -----------------------------------------------------------------------------

    def _snapshot(self, step: int) -> None:
        if self._writer is None:
            self._last_snapshot_step = step
            return
        began = time.perf_counter()
        if self._writer.recover():  # the run directory vanished: store the whole reservoir again
            self._snapshots = SnapshotAssembler()
        if "analysed_layers" not in self._writer.manifest:
            self._writer.manifest.update(model_manifest(self._recorded_model, self._recorder))
            self._writer.write_model_config(model_config(self._recorded_model))
        kept = copy.deepcopy(self._snapshots)  # a failed write leaves its samples to the next
        state = self._recorder.read(self._snapshots.written_uid)
        if state["step"] != step:  # the per-step count drifted (never seen): trust the variable
            step = self._seen_step = state["step"]
        arrays, samples, layers = self._snapshots.assemble(self._recorder, state, step)
        metrics, self._pending_metrics = self._pending_metrics, {}
        epochs, self._pending_epochs = self._pending_epochs, []
        record = snapshot_record(
            step=step,
            epoch=self._epoch,
            fit_seconds=time.perf_counter() - (self._fit_start or began),
            metrics=metrics,
            epoch_logs=epochs,
            layers=layers,
        )
        record["read_seconds"] = time.perf_counter() - began
        if not self._writer.write_snapshot(record, arrays, samples):  # it warned (or raised)
            self._snapshots, self._pending_metrics, self._pending_epochs = kept, metrics, epochs
            return
        if self.maps:
            if self._map_worker is None or not self._map_worker.accepting:
                from deepeyes_keras.derive.worker import MapWorker

                self._map_worker = MapWorker(self._writer.run_dir, seed=self.seed)
            self._map_worker.notify(views_only=not self._maps_now())
        self.last_blocking_seconds = time.perf_counter() - began
        self._last_snapshot_step = step

    # -- manifest ------------------------------------------------------------------------------

    def _choose_run_dir(self) -> Path:
        return self.log_dir / (self.run_name or dated_name(self._recorded_model.name))

    def _settings(self) -> dict:
        """The sampling settings the manifest records."""
        return {
            "sample_every": self.sample_every,
            "dense_steps": self.dense_steps,
            "images_per_step": self.images_per_step,
            "positions_per_image": self.positions_per_image,
            "reservoir_size": self.reservoir_size,
            "snapshot_every": self.snapshot_every,
            "seed": self.seed,
            "probe_data": self.probe_data is not None,
            "memory_budget_mb": self.memory_budget_mb,
            "tensorboard": None if self.tensorboard is None else str(self.tensorboard),
            "strict": self.strict,
        }
