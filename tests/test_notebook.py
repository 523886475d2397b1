"""The example notebook runs in a real kernel, and its outputs hold the DeepEyes charts.

It is executed with nbclient as a user would run it top to bottom: the histograms chart is
displayed during fit and redrawn from the latest snapshot (LiveChart), then conv1's linked layer
view and the training curves are shown. Also: show() returns the same specs the viewer uses.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import altair as alt
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "case_studies" / "notebook" / "deepeyes.ipynb"


def _outputs(cell) -> str:
    return json.dumps(cell.get("outputs", []))


@pytest.mark.slow
def test_example_notebook_runs_and_shows_the_charts(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    live, layer, curves = _outputs(code[1]), _outputs(code[2]), _outputs(code[3])
    # The live chart was displayed with a display id and redrawn at least once.
    assert "display_data" in live and "vega" in live.lower() and "redrawn" in live
    redrawn = int(live.split("redrawn ")[1].split(" ")[0])
    assert redrawn >= 2
    assert "conv1" in layer and "vega" in layer.lower()
    assert "loss" in curves


def test_show_returns_the_viewers_specs(recorded_runs):
    from deepeyes_keras import load_run
    from deepeyes_keras.derive.views import layer_view
    from deepeyes_keras.notebook import show, view_spec
    from deepeyes_keras.run.view_files import read_view

    run = load_run(recorded_runs / "tiny-a")
    path = run.layout.view("L0", 12)  # gzipped, its points naming their thumbnails (uid)
    stored = json.loads(gzip.decompress(path.read_bytes()))
    assert stored["usermeta"]["deepeyes"]["thumbnails"] and "uid" in stored["datasets"]["points"][0]
    spec = view_spec(run, layer="conv1")  # the written view, its thumbnails joined in
    assert spec == read_view(path) == layer_view(run.snapshots[-1], "conv1")
    points = spec["datasets"]["points"]
    assert len(points) == len(stored["datasets"]["points"]) and "usermeta" not in spec
    assert all(p["image"].startswith("data:image/png;base64,") and "uid" not in p for p in points)
    assert isinstance(show(run, layer="conv1", step=5), alt.VConcatChart | alt.HConcatChart)
    assert show(run, "histograms").to_dict()["$schema"].startswith("https://vega.github.io")
    with pytest.raises(ValueError, match=r"conv1"):
        view_spec(run, layer="conv")
    with pytest.raises(ValueError, match=r"Unknown view"):
        view_spec(run, "curves")
