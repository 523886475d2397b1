"""What a run's manifest says about the run, the libraries and the model being recorded.

The manifest is written in two parts. :func:`run_manifest` is written when ``fit`` starts: the
run's name, library versions and sampling settings. :func:`model_manifest` is added at the first
snapshot, once the recorder exists (a Sequential model without ``keras.Input`` is only built by
``fit``): every layer of the model and the geometry of each analysed layer. The keys are listed in
``viewer_site/reference/run-format.md``; :class:`deepeyes_keras.run.writer.RunWriter` writes them.

Example:
    >>> manifest = run_manifest("run", "lenet", {"seed": 0, "sample_every": 10})
    >>> manifest["settings"]["n_bins"], manifest["model"]
    (30, {'name': 'lenet'})
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras import __version__
from deepeyes_keras.record.recorder import Recorder
from deepeyes_keras.record.taps import LayerTap
from deepeyes_keras.run.layout import BETA, N_BINS, THETA, layer_key


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second (``"2025-01-31T12:00:00+00:00"``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions of deepeyes_keras and of the libraries that shape the recorded numbers."""
    return {
        "deepeyes_keras": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def run_manifest(run_name: str, model_name: str, settings: Mapping[str, object]) -> dict:
    """The manifest written when ``fit`` starts, before any step.

    Args:
        run_name: the run directory's name.
        model_name: the recorded model's name.
        settings: the callback's sampling settings (``sample_every``, ``seed``, ...); the
            statistics' constants (``beta``, ``theta``, ``n_bins``) and the program name are
            added.

    Returns:
        ``format``, ``run_name``, ``created``, ``versions``, ``settings`` and ``model`` (its name).
    """
    return {
        "format": "deepeyes-run",
        "run_name": run_name,
        "created": utc_now(),
        "versions": library_versions(),
        "settings": {
            **settings,
            "beta": BETA,
            "theta": THETA,
            "n_bins": N_BINS,
            "argv": sys.argv[:1],
        },
        "model": {"name": model_name},
    }


def layer_entry(layer: keras.layers.Layer, *, analysed: bool) -> dict:
    """One layer of the model: name, class, output shape, filters, parameters, analysed."""
    try:
        out_shape = list(layer.output.shape)
    except (AttributeError, ValueError):  # a layer without a symbolic output
        out_shape = None
    return {
        "name": layer.name,
        "class": type(layer).__name__,
        "output_shape": out_shape,
        "filters": int(out_shape[-1]) if out_shape and out_shape[-1] else None,
        "parameters": int(layer.count_params()) if layer.built else 0,
        "analysed": analysed,
    }


def analysed_layer_entry(
    tap: LayerTap, patch_shape: tuple[int, ...], input_names: list[str] | None = None
) -> dict:
    """One analysed layer: its key, shapes, output grid, descriptor, inputs and input-space map."""
    names = input_names or [f"input_{i}" for i in range(max(tap.sources, default=-1) + 1)]
    return {
        "index": tap.index,
        "key": layer_key(tap.index),
        "name": tap.name,
        "class": type(tap.layer).__name__,
        "kind": tap.kind,
        "n_filters": tap.n_filters,
        "input_shape": list(tap.in_shape),
        "output_shape": list(tap.out_shape),
        "grid": list(tap.grid),
        "descriptor_size": tap.descriptor_size,
        "raw_descriptor_size": tap.raw_descriptor_size,
        "descriptor_projection": "signed-hash" if tap.projected else None,
        "inputs": [names[i] for i in tap.sources],
        "patch_input": None if tap.patch_input is None else names[tap.patch_input],
        "recurrent": tap.recurrent,
        "patch_shape": list(patch_shape),
        "space_map": None
        if tap.space_map is None
        else [{"scale": m.scale, "offset": m.offset, "size": m.size} for m in tap.space_map],
        "parameters": int(tap.layer.count_params()),
    }


def model_manifest(model: keras.Model, recorder: Recorder) -> dict:
    """The manifest's description of the model, added at the first snapshot.

    Args:
        model: the model being trained (built).
        recorder: its recorder (for the input shape, labels and analysed layers).

    Returns:
        ``model`` (name, class, input shape, labels, parameters and every layer) and
        ``analysed_layers`` (one entry per analysed layer, in recording order).
    """
    # A nested model counts as analysed when a layer inside it is.
    analysed = {part for tap in recorder.taps for part in _prefixes(tap.name)}
    return {
        "model": {
            "name": model.name,
            "class": type(model).__name__,
            "input_shape": list(recorder.input_shape),
            "inputs": [
                {"name": name, "shape": list(shape), "dtype": str(dtype)}
                for name, shape, dtype in zip(
                    recorder.input_names, recorder.input_shapes, recorder.input_dtypes, strict=True
                )
            ],
            "recorder_bytes": int(recorder.estimated_bytes),
            "left_out_by_budget": list(recorder.left_out),
            "n_labels": recorder.n_labels,
            "parameters": int(model.count_params()),
            "layers": [
                layer_entry(layer, analysed=layer.name in analysed) for layer in model.layers
            ],
        },
        "analysed_layers": [
            analysed_layer_entry(tap, recorder.patch_shape(tap), recorder.input_names)
            for tap in recorder.taps
        ],
    }


def _prefixes(name: str) -> list[str]:
    """``"a/b/c"`` -> ``["a", "a/b", "a/b/c"]`` (a layer and the nested models holding it)."""
    parts = name.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def model_config(model: keras.Model) -> dict:
    """The model's Keras architecture and compile settings, to rebuild it without the script.

    ``deepeyes redesign`` rebuilds the recorded network from it when the user's hook file has no
    ``build_model()``. A model Keras cannot serialise (custom layers without ``get_config``)
    records the error instead, and the hook must then build the model.
    """
    out: dict = {"keras_version": keras.__version__, "architecture": None, "compile": None}
    try:
        out["architecture"] = json.loads(model.to_json())
    except Exception as err:  # noqa: BLE001 - any serialisation failure is recorded, not raised
        out["error"] = f"architecture: {type(err).__name__}: {err}"
    try:
        out["compile"] = model.get_compile_config() if getattr(model, "compiled", False) else None
    except Exception as err:  # noqa: BLE001
        out["error"] = f"compile: {type(err).__name__}: {err}"
    return out
