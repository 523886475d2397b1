"""Chart specs (Vega-Lite v6, built with Altair) from plain data: one module per view.

The views: `overview.py` (training metrics over steps), `histograms.py` (perplexity histograms
of every layer) and the layer page, composed in `layer.py` from `heatmap.py`, `filter_map.py`,
`input_map.py`, `patches.py` and `variance.py` (the T4 evidence, when the findings hold it).
Shared pieces live in `common.py`; `rendering.py` writes a spec as strict JSON or draws it to
PNG/SVG. Builders return plain, JSON-ready dicts.

Example:
    >>> from deepeyes_keras import charts
    >>> charts.spec_json(charts.overview_spec({"step": [1], "loss": [0.5]}))[:10]
    '{"$schema"'
"""

from deepeyes_keras.charts.histograms import histograms_spec
from deepeyes_keras.charts.layer import layer_spec
from deepeyes_keras.charts.overview import overview_spec
from deepeyes_keras.charts.rendering import render, spec_json

__all__ = ["histograms_spec", "layer_spec", "overview_spec", "render", "spec_json"]
