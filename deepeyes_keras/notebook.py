"""DeepEyes in a notebook: the viewer's linked charts as Altair objects, also live during training.

:func:`show` returns the same chart the viewer draws (the run's training curves, its perplexity
histograms, or one layer's linked view at a snapshot) as an Altair chart, which Jupyter and VS Code
notebooks display as they display any Altair chart (with the renderer the user chose;
``alt.renderers.enable(...)``). :class:`LiveChart` is a Keras callback that shows a chart when
``fit`` starts and redraws it from the latest snapshot as training goes on. Layer views need the
snapshot's maps; where they are not computed yet, the latest snapshot that has them is shown, and
``deepeyes maps RUN`` (or ``callback.wait_for_maps()``) computes the rest.
``viewer_site/guide/notebooks.md`` shows both; ``case_studies/notebook/deepeyes.ipynb`` runs them.

Example:
    >>> run = load_run("deepeyes_runs/lenet")                    # doctest: +SKIP
    >>> show(run)                                                # training curves
    >>> show(run, layer="conv1", step=300)                       # conv1's linked view
    >>> model.fit(x, y, callbacks=[cb := DeepEyesCallback(), LiveChart(cb, view="histograms")])
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import altair as alt

from deepeyes_keras.derive import views
from deepeyes_keras.names import did_you_mean
from deepeyes_keras.run.layout import DamagedFileError
from deepeyes_keras.run.reader import Run, load_run
from deepeyes_keras.run.view_files import read_view

VIEWS = ("overview", "histograms", "layer")
_CLASSES = {
    "vconcat": alt.VConcatChart,
    "hconcat": alt.HConcatChart,
    "concat": alt.ConcatChart,
    "layer": alt.LayerChart,
}


def to_altair(spec: dict) -> alt.TopLevelMixin:
    """An Altair chart object of a Vega-Lite spec dict (a concatenation, layer or single chart)."""
    cls = next((c for key, c in _CLASSES.items() if key in spec), alt.Chart)
    return cls.from_dict(spec, validate=False)


def _as_run(run) -> Run:
    if isinstance(run, Run):
        return load_run(run.path)  # a fresh read: the run may have grown since it was loaded
    if isinstance(run, str | Path):
        return load_run(run)
    run_dir = getattr(run, "run_dir", None)  # a DeepEyesCallback
    if run_dir is None:
        raise ValueError(
            f"Expected a run (load_run(path)), a run directory or a DeepEyesCallback whose fit has "
            f"started. Received: {type(run).__name__}."
        )
    return load_run(run_dir)


def view_spec(run, view: str = "overview", *, layer: str | None = None, step: int | None = None):
    """The Vega-Lite spec dict of one view of a run (what :func:`show` draws).

    Args:
        run: a :class:`~deepeyes_keras.run.reader.Run`, a run directory, or a DeepEyesCallback.
        view: ``"overview"`` (training curves), ``"histograms"`` or ``"layer"`` (the default
            when ``layer`` is given).
        layer: the analysed layer's name, for the layer view.
        step: the snapshot (the nearest one is taken); default the latest snapshot whose maps
            are computed.

    Raises:
        ValueError: an unknown view or layer (with close matches), or no snapshot with maps yet.
    """
    run = _as_run(run)
    if layer is not None and view == "overview":
        view = "layer"
    if view not in VIEWS:
        raise ValueError(f"Unknown view {view!r}: expected one of {', '.join(VIEWS)}.")
    if not run.snapshots:
        raise ValueError(f"Run {run.name!r} has no snapshot yet: train a few steps first.")
    if view == "overview":
        return views.overview(run)
    if view == "histograms":
        return views.histograms(run)
    if layer not in run.layer_names:
        hint = did_you_mean(str(layer), run.layer_names) if layer else None
        raise ValueError(
            f"The layer view needs layer=<name> of an analysed layer of run {run.name!r}"
            f"{f' ({hint})' if hint else ''}; its layers: {run.layer_names}."
        )
    snaps = [s for s in run.snapshots if s.layers[layer].maps is not None]
    if not snaps:
        raise ValueError(
            f"No snapshot of {run.name!r} has the maps of {layer!r} yet: they are computed in the "
            f"background; wait, or run `deepeyes maps {run.path}`."
        )
    if step is None:
        snap = snaps[-1]
    else:
        snap = min(snaps, key=lambda s: (abs(s.step - int(step)), s.step))
    path = run.layout.view_file(snap.layers[layer].key, snap.step)
    if path.is_file():
        try:
            return read_view(path)  # any form, its thumbnails joined in (a notebook has no URL)
        except DamagedFileError as err:  # drawn from the run's data instead, and said
            warnings.warn(f"DeepEyes: {err} Showing the view computed now.", stacklevel=3)
    return views.layer_view(snap, layer)


def show(run, view: str = "overview", *, layer: str | None = None, step: int | None = None):
    """The viewer's chart of a run as an Altair chart (see :func:`view_spec` for the arguments).

    Example:
        >>> show(load_run("deepeyes_runs/lenet"), layer="conv1", step=300)  # doctest: +SKIP
    """
    return to_altair(view_spec(run, view, layer=layer, step=step))


class LiveRedraw:
    """Displays a DeepEyes chart and redraws it while ``fit`` runs (the logic of LiveChart).

    Args:
        callback: the DeepEyesCallback recording the run.
        view, layer, step: as for :func:`show` (``step`` None follows the latest snapshot).
        min_seconds: the least time between two redraws.
    """

    def __init__(self, callback, view: str = "overview", *, layer=None, step=None, min_seconds=2.0):
        self.callback, self.view, self.layer, self.step = callback, view, layer, step
        self.min_seconds = float(min_seconds)
        self.handle = None
        self.redraws = 0
        self._seen = None
        self._last = -float("inf")

    def redraw(self, force: bool = False) -> None:
        """Redraws when the run has a new snapshot (or always, with ``force``)."""
        now = time.monotonic()
        run_dir = getattr(self.callback, "run_dir", None)
        if run_dir is None or (not force and now - self._last < self.min_seconds):
            return
        self._last = now
        run = load_run(run_dir)
        latest = run.snapshots[-1].step if run.snapshots else None
        if latest is None or (latest == self._seen and not force):
            return
        try:
            chart = show(run, self.view, layer=self.layer, step=self.step)
        except ValueError as err:  # e.g. no maps yet: say so where the chart will be
            chart = alt.Chart().mark_text().properties(title=str(err))
        self._seen = latest
        from IPython.display import display

        if self.handle is None:
            self.handle = display(chart, display_id=True)
        else:
            self.handle.update(chart)
        self.redraws += 1


_LIVE_CLASS = None


def LiveChart(callback, view: str = "overview", *, layer=None, step=None, min_seconds=2.0):  # noqa: N802 - used as a class
    """A Keras callback that displays a DeepEyes chart and redraws it while ``fit`` runs.

    Put it after the DeepEyesCallback in ``callbacks``. It redraws when the run has a new snapshot
    (checked at most every ``min_seconds``, and once when training ends). Arguments as for
    :class:`LiveRedraw`. (A function so that importing this module needs no TensorFlow.)

    Example:
        >>> cb = DeepEyesCallback()                                         # doctest: +SKIP
        >>> model.fit(x, y, callbacks=[cb, LiveChart(cb, view="histograms")])  # doctest: +SKIP
    """
    global _LIVE_CLASS
    if _LIVE_CLASS is None:
        import keras

        class _LiveChart(keras.callbacks.Callback, LiveRedraw):
            def __init__(self, *args, **kwargs):
                keras.callbacks.Callback.__init__(self)
                LiveRedraw.__init__(self, *args, **kwargs)

            def on_train_batch_end(self, batch, logs=None):
                self.redraw()

            def on_train_end(self, logs=None):
                self.redraw(force=True)

        _LIVE_CLASS = _LiveChart
    return _LIVE_CLASS(callback, view, layer=layer, step=step, min_seconds=min_seconds)
