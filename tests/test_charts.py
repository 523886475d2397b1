"""Tests for deepeyes_keras.charts: the overview, the histograms and the layer page's views.

Specs are checked on fragments of the dict, against the Vega-Lite v6 JSON schema that Altair ships,
and by rendering them with vl-convert (a real Vega runtime, no browser): the SVG's aria labels
carry each mark's encoded values, which lets the tests check that the linking expressions
(selected filter, overlay, sort, brush, snapshot) compute the right values. Clicking and dragging
themselves need a browser and are not exercised here.
"""

import ast
import functools
import json
import pathlib
import re
import shutil
import struct
import zlib

import altair as alt
import jsonschema
import numpy as np
import pytest

from deepeyes_keras import charts
from deepeyes_keras.charts import histograms_spec, layer_spec, overview_spec, render, spec_json
from deepeyes_keras.charts.common import clean_number
from deepeyes_keras.charts.filter_map import circle_area
from deepeyes_keras.charts.heatmap import KEPT_EXPR, heatmap_grid
from deepeyes_keras.charts.patches import BAR_TOOLTIP
from deepeyes_keras.charts.variance import MAX_CURVE_POINTS
from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.thumbnails import patch_thumbnail
from deepeyes_keras.derive.views import layer_view, width_evidence
from deepeyes_keras.run.reader import load_run

# ----------------------------------------------------------------------------- helpers


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    path = pathlib.Path(alt.__file__).parent / "vegalite" / "v6" / "schema"
    schema = json.loads((path / "vega-lite-schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def assert_valid(spec: dict) -> None:
    errors = [e.message[:200] for e in _validator().iter_errors(spec)]
    assert not errors, errors[:3]
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")


def walk(obj):
    """Every dict inside a JSON-like structure."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def view(spec: dict, name: str) -> dict:
    (found,) = [d for d in walk(spec) if d.get("name") == name and "mark" in d]
    return found


def layer_of(spec: dict, unit_name: str) -> dict:
    (found,) = [
        d for d in walk(spec) if any(u.get("name") == unit_name for u in d.get("layer", []))
    ]
    return found


def param(spec: dict, name: str) -> dict:
    (found,) = [p for p in spec.get("params", []) if p["name"] == name]
    return found


def aria_labels(spec: dict) -> list[str]:
    return re.findall(r'aria-label="([^"]*)"', render(spec, "svg").decode())


def fields_of(label: str) -> dict[str, str]:
    """An aria label "a: 1; b: x" as a dict; d3's minus sign (U+2212) made ASCII."""
    label = label.replace("\u2212", "-")
    return dict(part.split(": ", 1) for part in label.split("; ") if ": " in part)


def decode_png(data: bytes) -> np.ndarray:
    """8-bit non-interlaced PNG (grey, RGB, grey+alpha or RGBA) -> (h, w, channels) uint8."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, header, idat = 8, None, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (0, 2, 4, 6)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: running sum along the row, per channel, modulo 256
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up
            row = line + prev
        else:  # Average (3) or Paeth (4): sequential, done byte by byte
            row, cur, up = np.zeros_like(line), line.tolist(), prev.tolist()
            for i in range(len(cur)):
                left = int(row[i - bpp]) if i >= bpp else 0
                corner = up[i - bpp] if i >= bpp else 0
                if kind == 3:
                    pred = (left + up[i]) // 2
                else:
                    p = left + up[i] - corner
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else corner)
                row[i] = (cur[i] + pred) % 256
        out[y] = row
        prev = out[y]
    return out.reshape(height, width, bpp)


def grey_on_white(pixels: np.ndarray) -> np.ndarray:
    x = pixels.astype(np.float64)
    if x.shape[2] in (2, 4):  # composite the alpha channel on white
        alpha = x[:, :, -1:] / 255.0
        x = x[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)
    return x.mean(axis=2)


# A rendered chart is "not blank" when its grey levels vary: a blank (all white) image has
# variance 0; these charts' axes, text and marks give several hundred.
MIN_PIXEL_VARIANCE = 100.0


def assert_renders(spec: dict) -> None:
    pixels = decode_png(render(spec, "png", scale=0.5))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, pixels.shape  # errors give 10x10
    assert grey_on_white(pixels).var() > MIN_PIXEL_VARIANCE
    assert render(spec, "svg").lstrip().startswith(b"<svg")


def layer_inputs(n_filters=8, n_points=40, n_labels=3, seed=0, thumbnails=True, **kw) -> dict:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, n_labels, n_points)
    act = rng.gamma(1.0, 1.0, (n_points, n_filters)) * (rng.random(n_filters) < 0.8)
    images = [
        patch_thumbnail(rng.random((5, 5, 1)), max_side=10) if thumbnails else None
        for _ in range(n_points)
    ]
    return dict(
        layer="conv1",
        step=100,
        max_activation=act.max(axis=0, initial=0.0),
        frequency=rng.random(n_filters),
        reliability_age=rng.integers(0, 100, n_filters),
        filter_xy=rng.normal(size=(n_filters, 2)),
        filter_label=np.where(
            rng.random(n_filters) < 0.2, -1, rng.integers(0, n_labels, n_filters)
        ),
        filter_strength=rng.random(n_filters),
        points_xy=rng.normal(size=(n_points, 2)) + 3.0 * label[:, None],
        point_label=label,
        point_activation=act,
        thumbnails=images,
        n_labels=n_labels,
        **kw,
    )


def histogram_inputs(steps=(10, 20, 40, 80, 100, 200)):
    rng = np.random.default_rng(0)
    layers = [{"name": "conv1", "n_filters": 20}, {"name": "dense", "n_filters": 500}]
    snapshots = [
        {
            "step": s,
            "layers": {
                layer["name"]: {
                    "histogram": rng.poisson(20, 30).tolist(),
                    "change": rng.normal(0, 5, 30).tolist(),
                }
                for layer in layers
            },
        }
        for s in steps
    ]
    return layers, snapshots


# The T4 evidence of an 8-filter layer (as the findings hold it): r = 3, suggested width 6.
CURVE = [0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0]
T4 = dict(cumulative_variance=CURVE, signal_rank=3, suggested_width=6, oversized=True,
          width_text="3 directions above the noise (Gavish-Donoho; noise 2% of the variance); "
          "k(0.99) = 6 of 8: suggested width 6 = 2 x 3 (verify by retraining)")  # fmt: skip


METRICS = {
    "step": [10, 20, 30, 40],
    "loss": [2.3, 1.2, None, 0.6],
    "accuracy": [0.1, 0.5, 0.7, np.nan],
}


@pytest.fixture(scope="module")
def specs():
    return {
        "overview": overview_spec(METRICS),
        "histograms": histograms_spec(*histogram_inputs()),
        "layer": layer_spec(**layer_inputs()),
        "layer_t4": layer_spec(**layer_inputs(), **T4),
    }


# ----------------------------------------------------------------------------- every spec


@pytest.mark.parametrize("kind", ["overview", "histograms", "layer", "layer_t4"])
def test_spec_is_valid_strict_deterministic_and_explicitly_named(specs, kind):
    spec = specs[kind]
    assert_valid(spec)
    text = spec_json(spec)
    assert "NaN" not in text and "Infinity" not in text
    assert "param_" not in text
    json.loads(text)  # strict JSON
    again = {
        "overview": lambda: overview_spec(METRICS),
        "histograms": lambda: histograms_spec(*histogram_inputs()),
        "layer": lambda: layer_spec(**layer_inputs()),
        "layer_t4": lambda: layer_spec(**layer_inputs(), **T4),
    }[kind]()
    assert spec_json(again) == text


@pytest.mark.parametrize("kind", ["overview", "histograms", "layer", "layer_t4"])
def test_spec_renders_to_a_non_blank_png_and_svg(specs, kind):
    assert_renders(specs[kind])


def test_clean_number_and_spec_json():
    assert clean_number(123456.0) == 123500
    assert clean_number(0.000123456) == 0.0001235
    assert clean_number(np.float32(np.inf)) is None and clean_number(None) is None
    assert spec_json({"b": [np.nan, 1.5], "a": {"c": float("-inf")}}) == (
        '{"a": {"c": null}, "b": [null, 1.5]}'
    )
    assert spec_json({"a": np.array([1.0, np.inf]), "b": np.float32(0.5)}) == (
        '{"a": [1.0, null], "b": 0.5}'
    )


# The stage's contract: Altair only; of this package, only charts/ and the run layout.
ALLOWED_IMPORTS = {"altair", "numpy", "vl_convert", "__future__", "collections", "dataclasses"}
ALLOWED_IMPORTS |= {"json", "math", "textwrap", "typing", "deepeyes_keras.run.layout"}
ALLOWED_IMPORTS |= {"contextvars", "functools", "re"}  # the layer page's template and its cache


def test_charts_package_imports_only_altair_numpy_and_the_run_layout():
    folder = pathlib.Path(charts.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert {m.stem for m in modules} >= {"common", "rendering", "overview", "histograms", "layer"}
    for module in modules:
        tree = ast.parse(module.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [
            name
            for name in names
            if not name.startswith("deepeyes_keras.charts.")
            and name not in ALLOWED_IMPORTS
            and name.split(".")[0] not in ALLOWED_IMPORTS
        ]
        assert not bad, (module.name, bad)
    assert callable(charts.render) and charts.__all__ == [
        "histograms_spec",
        "layer_spec",
        "overview_spec",
        "render",
        "spec_json",
    ]


# ----------------------------------------------------------------------------- overview


def test_overview_one_panel_per_metric_and_nulls_dropped(specs):
    spec = specs["overview"]
    assert [v["name"] for v in spec["vconcat"]] == ["metric_loss", "metric_accuracy"]
    rows = spec["datasets"]["metrics"]
    assert {(r["metric"], r["step"]) for r in rows if r["series"] == "per step"} == {
        ("loss", 10),
        ("loss", 20),
        ("loss", 40),
        ("accuracy", 10),
        ("accuracy", 20),
        ("accuracy", 30),
    }
    panel = [v for v in spec["vconcat"] if v["name"] == "metric_loss"][0]
    assert all(u["encoding"]["x"]["field"] == "step" for u in panel["layer"])
    assert any("tooltip" in u["encoding"] for u in panel["layer"])


def test_overview_without_metrics_and_bad_input():
    assert_valid(overview_spec({"step": []}))
    with pytest.raises(ValueError, match="'step'"):
        overview_spec({"loss": [1.0]})
    with pytest.raises(ValueError, match="as long as 'step'"):
        overview_spec({"step": [1, 2], "loss": [1.0]})


# ----------------------------------------------------------------------------- histograms


def test_histograms_rows_filter_on_snapshot_select(specs):
    spec = specs["histograms"]
    snap = param(spec, "snapshot")
    assert snap["value"] == 200
    assert snap["bind"]["input"] == "select"
    assert snap["bind"]["options"] == [10, 20, 40, 80, 100, 200]
    for i, name in enumerate(["conv1", "dense"]):
        for kind in ("histogram", "change"):
            unit = view(spec, f"{kind}_{i}")
            (flt,) = [t["filter"] for t in unit["transform"]]
            assert "snapshot" in flt and f"'{name}'" in flt
    # bins span 1..F; change bars coloured green up, red down; y domains fixed per layer
    dense_rows = [r for r in spec["datasets"]["histograms"] if r["layer"] == "dense"]
    assert min(r["lo"] for r in dense_rows) == 1 and max(r["hi"] for r in dense_rows) == 500
    change = view(spec, "change_1")["encoding"]
    assert change["color"]["scale"]["range"] == ["#2ca02c", "#d62728"]
    assert change["y"]["scale"]["domain"][0] == -change["y"]["scale"]["domain"][1]
    assert spec["resolve"]["scale"]["y"] == "independent"


def test_histogram_snapshot_param_picks_the_step_when_rendered():
    layers, snapshots = histogram_inputs()
    spec = histograms_spec(layers, snapshots)
    param(spec, "snapshot")["value"] = 40  # what choosing 40 in the select box does
    labels = list(map(fields_of, aria_labels(spec)))
    counts = [float(f["instances in bin"]) for f in labels if "instances in bin" in f]
    chosen, before = snapshots[2]["layers"], snapshots[1]["layers"]
    assert counts == chosen["conv1"]["histogram"] + chosen["dense"]["histogram"]
    # Bars are shares of the interval's instances; the change is the change of share.
    shares = [float(f["share"].rstrip("%")) / 100 for f in labels if "share" in f]
    changes = [
        float(f["change of share"].rstrip("%")) / 100 for f in labels if "change of share" in f
    ]
    expected_share, expected_change = [], []
    for name in ("conv1", "dense"):
        now = np.array(chosen[name]["histogram"], float) / sum(chosen[name]["histogram"])
        then = np.array(before[name]["histogram"], float) / sum(before[name]["histogram"])
        expected_share += now.tolist()
        expected_change += (now - then).tolist()
    np.testing.assert_allclose(shares, expected_share, atol=6e-4)  # labels round to 0.1%
    np.testing.assert_allclose(changes, expected_change, atol=6e-4)


def test_a_short_last_interval_is_compared_as_a_distribution_not_as_a_collapse():
    # The end-of-training snapshot often covers one step (160 instances against 1,600): raw
    # counts read as a large red collapse; as shares the same distribution shows no change.
    layers = [{"name": "conv1", "n_filters": 20}]
    shape = np.linspace(1, 3, 30)
    full = (1600 * shape / shape.sum()).round()
    short = (160 * shape / shape.sum()).round()
    snaps = [
        {"step": 1900, "layers": {"conv1": {"histogram": full.tolist()}}},
        {"step": 2000, "layers": {"conv1": {"histogram": full.tolist()}}},
        {"step": 2001, "layers": {"conv1": {"histogram": short.tolist()}}},
    ]
    spec = histograms_spec(layers, snaps)
    rows = [r for r in spec["datasets"]["histograms"] if r["step"] == 2001]
    assert max(abs(r["change"]) for r in rows) < 0.005  # shares agree to rounding
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    labels = param(spec, "snapshot")["bind"]["labels"]
    assert labels[-1] == f"2001 (1 step, {short.sum():.0f} instances)"
    assert labels[1] == f"2000 (100 steps, {full.sum():,.0f} instances)"


def test_histograms_reject_bad_input():
    layers, snapshots = histogram_inputs()
    snapshots[0]["layers"]["conv1"]["histogram"] = [1] * 29
    with pytest.raises(ValueError, match="29 bins"):
        histograms_spec(layers, snapshots)
    with pytest.raises(ValueError, match="layers"):
        histograms_spec([], snapshots)


# ----------------------------------------------------------------------------- layer: structure


def test_layer_params_are_named_and_bound(specs):
    spec = specs["layer"]
    assert sorted(p["name"] for p in spec["params"]) == [
        "brush",
        "filter",
        "heatmap_mode",
        "heatmap_range",
        "heatmap_sort",
        "heatmap_top",
        "overlay",
    ]
    assert param(spec, "heatmap_mode")["bind"] == {
        "input": "radio",
        "options": ["max", "frequency"],
        "name": "heatmap colour ",
    }
    assert param(spec, "heatmap_sort")["bind"]["options"] == ["index", "value"]
    overlay = param(spec, "overlay")
    assert overlay["bind"]["options"] == ["label", "filter", "max over all filters"]
    assert overlay["value"] == "filter"
    sel = param(spec, "filter")
    assert sel["select"] == {
        "type": "point",
        "fields": ["filter"],
        "toggle": False,
        "clear": "dblclick",
    }
    assert {"heatmap", "filter_map"} <= set(sel["views"])
    for name in sel["views"]:
        view(spec, name)  # every listed view exists
    brush = param(spec, "brush")
    assert brush["select"]["type"] == "interval"
    assert [view(spec, v)["mark"]["type"] for v in brush["views"]] == ["circle"]


def test_layer_views_are_linked(specs):
    spec = specs["layer"]
    for name in ("heatmap", "filter_map"):
        conditions = [d for d in walk(view(spec, name)["encoding"]) if d.get("param")]
        assert conditions and all(c == {**c, "param": "filter", "empty": False} for c in conditions)
    heat = json.dumps(view(spec, "heatmap")["transform"])
    assert "heatmap_mode == 'frequency' ? datum.frequency : datum.max" in heat
    assert "heatmap_sort == 'value'" in heat and "row_number" in heat
    # the input map's overlay layer reads the selected filter and the overlay mode
    input_map = layer_of(spec, param(spec, "brush")["views"][0])
    calc = [
        t["calculate"]
        for u in input_map["layer"]
        for t in u.get("transform", [])
        if "calculate" in t
    ]
    assert calc and "datum.a[filter.filter[0]]" in calc[0] and "overlay ==" in calc[0]
    # both patch views filter by the brush
    for name in ("patches", "patch_bars"):
        assert {"filter": {"param": "brush"}} in view(spec, name)["transform"]
    assert view(spec, "patches")["encoding"]["url"]["field"] == "image"
    bars = json.dumps(view(spec, "patch_bars")["transform"])
    assert "sequence(0, length(datum.a))" in bars and '"flatten"' in bars


def test_layer_data_rows(specs):
    spec, inputs = specs["layer"], layer_inputs()
    filters, points = spec["datasets"]["filters"], spec["datasets"]["points"]
    assert [f["filter"] for f in filters] == list(range(8))
    # stale rule: age > 0.5 * step
    assert [f["stale"] for f in filters] == list(inputs["reliability_age"] > 50)
    assert {f["label"] for f in filters} <= {"0", "1", "2", "none"}
    first = points[0]
    assert first["image"].startswith("data:image/png;base64,") and first["step"] == 100
    act = np.clip(inputs["point_activation"], 0, None)
    expected = np.rint(100 * act[0] / np.where(act.max(0) > 0, act.max(0), 1)).astype(int)
    assert first["a"] == expected.tolist() and first["amax"] == expected.max()
    tooltip = view(spec, param(spec, "brush")["views"][0])["encoding"]["tooltip"]
    assert {t["field"] for t in tooltip} >= {"image", "label", "step"}


def test_points_are_bounded_and_seeded():
    inputs = layer_inputs(n_filters=4, n_points=5000, thumbnails=False, max_points=2000)
    spec = layer_spec(**inputs)
    points = spec["datasets"]["points"]
    assert len(points) == 2000
    ids = [p["point"] for p in points]
    assert ids == sorted(set(ids))
    assert [p["point"] for p in layer_spec(**inputs)["datasets"]["points"]] == ids
    inputs["seed"] = 1
    assert [p["point"] for p in layer_spec(**inputs)["datasets"]["points"]] != ids
    # wide layers: points x filters bounded by max_values
    wide = layer_spec(**layer_inputs(n_filters=50, n_points=300, thumbnails=False, max_values=5000))
    assert len(wide["datasets"]["points"]) == 100


def test_heatmap_stays_legible_for_4096_filters():
    assert heatmap_grid(4096) == (64, 64, 6)
    spec = layer_spec(**layer_inputs(n_filters=4096, n_points=10, thumbnails=False))
    heat = view(spec, "heatmap")
    cols, rows, cell = heatmap_grid(4096)
    assert (cols, rows) == (64, 64) and cell >= 4
    sized = layer_of(spec, "heatmap")
    assert sized["width"] == sized["height"] == 64 * cell <= 400
    assert len(sized["layer"]) == 3  # cells and the two legends: no index labels on 4096 cells
    assert "% 64" in json.dumps(heat["transform"])
    assert heat["encoding"]["x"]["scale"]["domain"] == [-0.5, 63.5]
    # more than 256 filters: the bar chart keeps the top 64
    assert "datum.order <= 64" in json.dumps(view(spec, "patch_bars")["transform"])
    assert heatmap_grid(20) == (5, 4, 40)


def test_layer_without_points_and_with_unknown_labels():
    inputs = layer_inputs(n_points=0)
    inputs["filter_label"] = np.array([np.nan, -1, 0, 1, 2, 0, 1, 2])
    spec = layer_spec(**inputs)
    assert_valid(spec)
    assert spec["datasets"]["points"] == []
    assert [f["label"] for f in spec["datasets"]["filters"]][:3] == ["none", "none", "0"]
    assert render(spec, "svg").startswith(b"<svg")


def test_layer_rejects_inconsistent_shapes():
    inputs = layer_inputs()
    inputs["frequency"] = inputs["frequency"][:5]
    with pytest.raises(ValueError, match="frequency"):
        layer_spec(**inputs)
    inputs = layer_inputs()
    inputs["thumbnails"] = inputs["thumbnails"][:3]
    with pytest.raises(ValueError, match="thumbnails. Received: 3"):
        layer_spec(**inputs)
    with pytest.raises(ValueError, match="selected_filter"):
        layer_spec(**layer_inputs(selected_filter=8))


# ----------------------------------------------------------------------------- layer: T4 evidence


def test_variance_view_draws_the_curve_the_rules_and_the_title(specs):
    spec = specs["layer_t4"]
    assert spec["datasets"]["variance"] == [{"k": k + 1, "share": c} for k, c in enumerate(CURVE)]
    assert spec["datasets"]["variance_rules"] == [
        {"k": 3, "label": "signal rank r = 3"},
        {"k": 6, "label": "suggested width 6"},
    ]
    (unit,) = param(spec, "keep")["views"]
    curve = layer_of(spec, unit)
    assert curve["title"]["text"] == "Width needed (T4): 6 of 8 filters (cut proposed)"
    subtitle = " ".join(curve["title"]["subtitle"])
    assert T4["width_text"] in subtitle and "visual aid" in subtitle
    points = view(spec, unit)
    assert points["data"] == {"name": "variance"} and points["mark"]["type"] == "circle"
    assert points["encoding"]["x"]["field"] == "k" and points["encoding"]["y"]["field"] == "share"
    assert points["encoding"]["x"]["scale"] == {"domain": [0, 8], "nice": False}
    assert points["encoding"]["y"]["scale"]["domain"] == [0, 1]
    assert {t["field"] for t in points["encoding"]["tooltip"]} == {"k", "share"}
    marks = {(u["mark"]["type"], u["data"]["name"]): u for u in curve["layer"]}
    assert marks["line", "variance"]["encoding"]["x"]["field"] == "k"
    rules = marks["rule", "variance_rules"]["encoding"]
    assert rules["x"]["field"] == "k" and rules["color"]["field"] == "label"
    assert rules["color"]["scale"]["domain"] == ["signal rank r = 3", "suggested width 6"]
    delta = [u for u in curve["layer"] if u["encoding"].get("y", {}).get("datum") == 0.99]
    assert [u["mark"]["type"] for u in delta] == ["rule", "text"]
    # the column left of the filter map: the heatmap above the curve
    first = spec["vconcat"][0]["hconcat"][0]["vconcat"][0]
    assert first["layer"][0]["name"] == "heatmap"


def test_keep_param_links_the_curve_to_the_heatmap(specs):
    spec = specs["layer_t4"]
    assert sorted(p["name"] for p in spec["params"]) == [
        "brush", "filter", "heatmap_mode", "heatmap_range", "heatmap_sort", "heatmap_top", "keep",
        "overlay",
    ]  # fmt: skip
    keep = param(spec, "keep")
    assert keep["select"] == {"type": "point", "fields": ["k"], "nearest": True, "on": "click",
                              "toggle": False, "clear": "dblclick"}  # fmt: skip
    assert keep["value"] == [{"k": 6}]  # starts at the suggested width
    heat = view(spec, "heatmap")
    transforms = json.dumps(heat["transform"])
    assert KEPT_EXPR in transforms and "keep.k[0]" in KEPT_EXPR and '"max_rank"' in transforms
    assert heat["encoding"]["opacity"]["condition"][0] == {"test": "!datum.kept", "value": 0.12}
    # the other links are as without the evidence
    assert param(spec, "filter")["views"] == param(specs["layer"], "filter")["views"]
    assert param(spec, "brush")["views"] == param(specs["layer"], "brush")["views"]
    assert heat["encoding"]["stroke"]["condition"][0]["param"] == "filter"


def _heatmap_cells(spec: dict) -> dict[int, dict[str, str]]:
    return {int(c["filter"]): c for c in map(fields_of, aria_labels(spec)) if "rank by max" in c}


def test_keep_fades_the_filters_beyond_the_picked_width_when_rendered():
    inputs = layer_inputs()
    spec = layer_spec(**inputs, **T4)
    cells = _heatmap_cells(spec)
    order = sorted(range(8), key=lambda k: (-inputs["max_activation"][k], k))
    assert [int(cells[k]["rank by max"]) for k in order] == list(range(1, 9))
    assert {k for k, c in cells.items() if c["kept"] == "true"} == set(order[:6])
    labels = aria_labels(spec)
    assert "text: keep 6: 99.0% of the variance" in labels
    # what a click on k = 2 does; a double click (empty selection) keeps every filter
    param(spec, "keep")["value"] = [{"k": 2}]
    assert {k for k, c in _heatmap_cells(spec).items() if c["kept"] == "true"} == set(order[:2])
    param(spec, "keep")["value"] = []
    assert all(c["kept"] == "true" for c in _heatmap_cells(spec).values())
    assert not [a for a in aria_labels(spec) if a.startswith("text: keep")]


def test_without_t4_evidence_there_is_no_variance_view(specs):
    spec = specs["layer"]
    assert "keep" not in {p["name"] for p in spec["params"]}
    assert set(spec["datasets"]) == {"filters", "points"}
    assert not [d for d in walk(spec) if str(d.get("name", "")).startswith("variance")]
    assert "keep" not in spec_json(spec) and "max_rank" not in spec_json(spec)
    none = dict(cumulative_variance=None, signal_rank=None, suggested_width=None)
    assert spec_json(layer_spec(**layer_inputs(), **none)) == spec_json(spec)


def test_wide_layers_get_a_bounded_curve_on_a_log_axis():
    n = 5000
    curve = np.cumsum(np.r_[np.full(20, 0.045), np.full(n - 20, 0.1 / (n - 20))])
    spec = layer_spec(**layer_inputs(n_filters=n, n_points=4, thumbnails=False),
                      cumulative_variance=curve, signal_rank=20, suggested_width=37)  # fmt: skip
    rows = spec["datasets"]["variance"]
    ks = [r["k"] for r in rows]
    assert len(rows) <= MAX_CURVE_POINTS and ks == sorted(set(ks))
    assert {1, 20, 37, n} <= set(ks)
    assert all(r["share"] == clean_number(curve[r["k"] - 1]) for r in rows)
    (unit,) = param(spec, "keep")["views"]
    assert view(spec, unit)["encoding"]["x"]["scale"] == {
        "type": "log", "domain": [1, n], "nice": False
    }  # fmt: skip
    assert "(no cut)" in layer_of(spec, unit)["title"]["text"]


def test_t4_evidence_is_checked():
    inputs = layer_inputs()
    with pytest.raises(ValueError, match=r"\['signal_rank'\] = None"):
        layer_spec(**inputs, cumulative_variance=CURVE, suggested_width=6)
    with pytest.raises(ValueError, match="Received: 7 values. Expected 8"):
        layer_spec(**inputs, **{**T4, "cumulative_variance": CURVE[:7]})
    with pytest.raises(ValueError, match="non-decreasing shares"):
        layer_spec(**inputs, **{**T4, "cumulative_variance": CURVE[::-1]})
    with pytest.raises(ValueError, match="suggested_width=9. Expected 1..8"):
        layer_spec(**inputs, **{**T4, "suggested_width": 9})


SCHEMA1 = pathlib.Path(__file__).parent / "fixtures" / "schema1" / "schema1-run"


def test_layer_view_draws_the_findings_t4_evidence_when_there_is_some(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(SCHEMA1, run_dir)
    # schema 1's findings hold no curve: the views are as before the evidence existed
    snap = load_run(run_dir).snapshots[-1]
    assert width_evidence(snap, "fc1") == {}
    assert "variance" not in layer_view(snap, "fc1")["datasets"]
    # without findings at all (removed from the records), then with the findings stage's
    for record in (run_dir / "snapshots").glob("*.json"):
        data = json.loads(record.read_text())
        data.pop("findings"), data.pop("findings_summary", None)
        record.write_text(json.dumps(data))
    snap = load_run(run_dir).snapshots[-1]
    assert snap.findings is None and width_evidence(snap, "fc1") == {}
    before = layer_view(snap, "fc1")
    assert "variance" not in before["datasets"]
    assert write_findings(run_dir) == 2
    snap = load_run(run_dir).snapshots[-1]
    t4 = snap.findings["layers"]["fc1"]["T4"]
    spec = layer_view(snap, "fc1")
    assert [r["share"] for r in spec["datasets"]["variance"]] == [
        clean_number(c) for c in t4["cumulative_variance"]
    ]
    assert [r["k"] for r in spec["datasets"]["variance_rules"]] == [
        t4["signal_rank"], t4["suggested_width"]
    ]  # fmt: skip
    assert param(spec, "keep")["value"] == [{"k": t4["suggested_width"]}]
    assert spec["datasets"]["filters"] == before["datasets"]["filters"]
    assert_valid(spec)


# ----------------------------------------------------------------------------- layer: rendered


def _overlay_values(spec: dict) -> dict[int, float]:
    return {
        int(f["point"]): float(f["activation"])
        for f in map(fields_of, aria_labels(spec))
        if "activation" in f and "point" in f
    }


def test_selected_filter_drives_the_overlay_when_rendered():
    spec = layer_spec(**layer_inputs(selected_filter=3))
    points = spec["datasets"]["points"]
    got = _overlay_values(spec)
    assert got == {p["point"]: p["a"][3] / 100 for p in points}
    # "max over all filters": max_k a_k / max over points of a_k
    param(spec, "overlay")["value"] = "max over all filters"
    assert _overlay_values(spec) == {p["point"]: p["amax"] / 100 for p in points}
    # "label": no overlay at all
    param(spec, "overlay")["value"] = "label"
    assert _overlay_values(spec) == {}


def test_without_selection_filter_overlay_falls_back_to_labels():
    assert _overlay_values(layer_spec(**layer_inputs())) == {}


def test_heatmap_sort_and_mode_when_rendered():
    inputs = layer_inputs()
    spec = layer_spec(**inputs)
    param(spec, "heatmap_sort")["value"] = "value"
    param(spec, "heatmap_mode")["value"] = "frequency"
    cells = [fields_of(a) for a in aria_labels(spec) if a.startswith("col: ")]
    assert len(cells) == 8
    order = sorted(cells, key=lambda c: (int(c["row"]), int(c["col"])))
    assert [int(c["filter"]) for c in order] == np.argsort(-inputs["frequency"]).tolist()
    assert all(abs(float(c["value"]) - float(c["frequency"])) < 1e-3 for c in cells)


def test_brush_filters_the_patch_view_when_rendered():
    spec = layer_spec(**layer_inputs())
    points = spec["datasets"]["points"]
    param(spec, "brush")["value"] = {"x": [-1.0, 1.5], "y": [-1.0, 1.5]}
    inside = [p for p in points if -1 <= p["x"] <= 1.5 and -1 <= p["y"] <= 1.5]
    assert 0 < len(inside) < len(points)
    labels = aria_labels(spec)
    shown = sorted(int(fields_of(a)["point"]) for a in labels if a.startswith("pcol: "))
    assert shown == [p["point"] for p in inside]
    bars = {
        int(f["filter"]): float(f[BAR_TOOLTIP])
        for f in map(fields_of, labels)
        if BAR_TOOLTIP in f and "filter" in f
    }
    assert bars == {k: max(p["a"][k] for p in inside) / 100 for k in range(8)}


def test_render_rejects_unknown_format(specs):
    with pytest.raises(ValueError, match="fmt='jpeg'"):
        render(specs["overview"], "jpeg")


# ----------------------------------------------------------------------------- layer: in a browser

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


SIGNAL = "JSON.stringify(view.signal('{}'))"


def open_in_chromium(browser, spec: dict, height: int = 1000):
    """A page of `browser` showing `spec` with vega-embed (SVG), its view as ``window.view``."""
    import vl_convert

    page_html = (
        f"<div id='vis'></div><script>{vl_convert.javascript_bundle(vl_version='6.4')}</script>"
        f"<script>vegaEmbed('#vis', {spec_json(spec)}, {{renderer: 'svg', actions: false}})"
        ".then(r => { window.view = r.view; }, e => { window.failed = String(e); });</script>"
    )
    page = browser.new_page(viewport={"width": 1300, "height": height})
    page.set_content(page_html)
    page.wait_for_function("window.view || window.failed", timeout=30_000)
    assert page.evaluate("window.failed || null") is None
    return page


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_layer_spec_clicks_and_brush_in_headless_chromium():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    spec = layer_spec(**layer_inputs(n_filters=12, n_points=60))
    signal = SIGNAL
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = open_in_chromium(browser, spec)
            # a click on heatmap cell 5 selects filter 5 and rings it in the filter map
            page.query_selector_all("g.heatmap_marks path")[5].click(force=True)  # label on top
            assert json.loads(page.evaluate(signal.format("filter")))["filter"] == [5]
            rings = [c.get_attribute("stroke-width") for c in page.query_selector_all(
                "g.filter_map_marks path")]  # fmt: skip
            assert [i for i, w in enumerate(rings) if w != "0"] == [5]
            # the input map's overlay layer now draws every point
            overlay = page.query_selector_all("g[class*='layer_1_marks'] path")
            assert len(overlay) == 60
            # a click in the filter map selects there and outlines the heatmap cell
            page.query_selector_all("g.filter_map_marks path")[2].click(force=True)
            strokes = [c.get_attribute("stroke") for c in page.query_selector_all(
                "g.heatmap_marks path")]  # fmt: skip
            assert [i for i, s in enumerate(strokes) if s] == [2]
            # dragging on the input map brushes; the patch view shows the brushed points
            unit = param(spec, "brush")["views"][0]
            box = page.query_selector(f"g.{unit}_marks").bounding_box()
            x0, y0 = box["x"] + 5, box["y"] + box["height"] / 2
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + box["width"] / 2, y0 + box["height"] / 2, steps=4)
            page.mouse.up()
            brush = json.loads(page.evaluate(signal.format("brush")))
            inside = [
                q for q in spec["datasets"]["points"]
                if min(brush["x"]) <= q["x"] <= max(brush["x"])
                and min(brush["y"]) <= q["y"] <= max(brush["y"])
            ]  # fmt: skip
            assert 0 < len(inside) < 60
            assert len(page.query_selector_all("g.patches_marks image")) == len(inside)
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_clicking_the_variance_curve_fades_the_heatmap_in_headless_chromium():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    inputs = layer_inputs()
    spec = layer_spec(**inputs, **T4)
    order = sorted(range(8), key=lambda k: (-inputs["max_activation"][k], k))
    (unit,) = param(spec, "keep")["views"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = open_in_chromium(browser, spec, height=1100)

            def faded() -> set[int]:
                cells = page.query_selector_all("g.heatmap_marks path")
                return {k for k, c in enumerate(cells) if c.get_attribute("opacity") == "0.12"}

            assert json.loads(page.evaluate(SIGNAL.format("keep")))["k"] == [6]
            assert faded() == set(order[6:])
            box = page.query_selector_all(f"g.{unit}_marks path")[1].bounding_box()  # k = 2
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.click(x, y)
            assert json.loads(page.evaluate(SIGNAL.format("keep")))["k"] == [2]
            assert faded() == set(order[2:])
            page.mouse.dblclick(x, y)
            assert json.loads(page.evaluate(SIGNAL.format("keep"))) == {}
            assert faded() == set()
            # the filter selection still works beside it
            page.query_selector_all("g.heatmap_marks path")[5].click(force=True)  # label on top
            assert json.loads(page.evaluate(SIGNAL.format("filter")))["filter"] == [5]
        finally:
            browser.close()


# ----------------------------------------------------------------------------- issue 16: viewer


def _keras_logs(true: dict[str, np.ndarray], steps_per_epoch: int) -> dict[str, np.ndarray]:
    """What Keras logs per step: the running mean since the epoch's first step."""
    out = {}
    for name, values in true.items():
        parts = [values[i : i + steps_per_epoch] for i in range(0, len(values), steps_per_epoch)]
        out[name] = np.concatenate([np.cumsum(p) / np.arange(1, len(p) + 1) for p in parts])
    return out


@pytest.mark.parametrize("epoch_info", ["epoch_logs", "epoch list", "none"])
def test_overview_recovers_per_step_values_from_running_means(epoch_info):
    rng = np.random.default_rng(3)
    spe, epochs = 40, 3
    t = np.arange(spe * epochs)
    true = {"loss": 2 * np.exp(-t / 50) + 0.1 + 0.05 * rng.standard_normal(len(t)),
            "accuracy": np.clip(1 - 0.8 * np.exp(-t / 40) + 0.02 * rng.standard_normal(len(t)),
                                0, 1)}  # fmt: skip
    logged = _keras_logs(true, spe)
    metrics = {"step": (t + 1).tolist(), **{k: v.tolist() for k, v in logged.items()}}
    logs = [{"epoch": e, **{k: float(v[(e + 1) * spe - 1]) for k, v in logged.items()},
             "val_loss": 0.3 + 0.1 * e, "val_accuracy": 0.9} for e in range(epochs)]  # fmt: skip
    kwargs = {}
    if epoch_info == "epoch_logs":
        kwargs["epoch_logs"] = logs
    elif epoch_info == "epoch list":
        metrics["epoch"] = (t // spe).tolist()
    spec = overview_spec(metrics, **kwargs)
    rows = spec["datasets"]["metrics"]
    for name in ("loss", "accuracy"):
        per_step = [r["value"] for r in rows if r["metric"] == name and r["series"] == "per step"]
        np.testing.assert_allclose(per_step, true[name], rtol=1e-3, atol=1e-3)
        smoothed = np.array([r["value"] for r in rows
                             if r["metric"] == name and r["series"] == "smoothed"])  # fmt: skip
        reference, acc = [], 0.0  # debiased EMA, weight 0.6
        for i, v in enumerate(true[name]):
            acc = 0.6 * acc + 0.4 * v
            reference.append(acc / (1 - 0.6 ** (i + 1)))
        np.testing.assert_allclose(smoothed, reference, rtol=2e-3, atol=1e-3)
    validation = [(r["step"], r["value"]) for r in rows
                  if r["metric"] == "loss" and r["series"] == "validation"]  # fmt: skip
    assert validation == ([(40, 0.3), (80, 0.4), (120, 0.5)] if kwargs.get("epoch_logs") else [])


def test_overview_axes_end_at_the_last_step_and_zoom_to_the_data():
    steps = list(range(1, 101))
    true = {"accuracy": 0.97 + 0.02 * np.sin(np.arange(100)), "loss": np.full(100, 0.1)}
    logged = _keras_logs(true, 100)
    spec = overview_spec({"step": steps, **{k: v.tolist() for k, v in logged.items()}})
    panel = [v for v in spec["vconcat"] if v["name"] == "metric_accuracy"][0]
    x, y = panel["layer"][0]["encoding"]["x"], panel["layer"][0]["encoding"]["y"]
    assert x["scale"]["domain"][1] == 100 and x["scale"]["nice"] is False
    lo, hi = y["scale"]["domain"]
    assert 0.9 < lo < hi < 1.01 and hi - lo < 0.1  # zoomed to the data, not 0..1
    marks = [u["mark"] for u in panel["layer"]]
    raw = [m for m in marks if m.get("opacity") == 0.45][0]
    assert raw["strokeWidth"] <= 1 and "point" not in raw  # faint, thin, no point marks
    # one shared colour legend for every panel: no "Conflicting legend property" warning
    legends = [u["encoding"]["color"]["legend"] for v in spec["vconcat"] for u in v["layer"]]
    assert all(leg == legends[0] for leg in legends)


def test_default_snapshot_skips_a_short_tail():
    from deepeyes_keras.charts.histograms import default_step as chart_default
    from deepeyes_keras.site.pages import default_step as page_default

    for rule in (chart_default, page_default):
        assert rule([1000, 2000, 2001]) == 2000
        assert rule([10, 20, 40, 80, 100, 200, 300]) == 300
        assert rule([6, 12]) == 12 and rule([5]) == 5
        assert rule([100, 200, 240]) == 200 and rule([100, 200, 250]) == 250  # 0.5 of 100
    layers, snapshots = histogram_inputs()
    steps = sorted(s["step"] for s in snapshots)
    assert param(histograms_spec(layers, snapshots), "snapshot")["value"] == chart_default(steps)


def test_heatmap_legends_name_each_mode_and_the_range_is_fixed():
    spec = layer_spec(**layer_inputs())
    legends = {}
    for unit in layer_of(spec, "heatmap")["layer"]:
        legend = unit["encoding"]["color"].get("legend")
        if legend:
            legends[legend["title"]] = legend["titleOpacity"]["expr"]
    assert set(legends) == {"max activation", "frequency (> 0.5 max)"}
    assert "'max'" in legends["max activation"]
    assert "'frequency'" in legends["frequency (> 0.5 max)"]
    assert param(spec, "heatmap_range")["bind"]["options"] == ["fixed across snapshots",
                                                               "per snapshot"]  # fmt: skip
    mu = layer_inputs()["max_activation"]
    assert param(spec, "heatmap_top")["value"] == pytest.approx(mu.max(), rel=1e-3)
    # fixed: 0..heatmap_top (raised by the viewer) in max mode, 0..1 in frequency mode
    domain = view(spec, "heatmap")["encoding"]["color"]["scale"]["domain"]["expr"]
    assert "heatmap_top" in domain and "heatmap_range" in domain
    # every cell's index is printed (8 filters), and the filter map labels its circles
    texts = [u for u in walk(spec) if isinstance(u.get("mark"), dict)
             and u["mark"].get("type") == "text" and u.get("encoding", {}).get("text")]  # fmt: skip
    assert sum(u["encoding"]["text"]["field"] == "filter" for u in texts) == 2


def test_filter_map_marks_are_legible_for_a_small_layer():
    small, big = circle_area(20)
    assert big >= 400 and big / small >= 4  # visible difference across the size legend
    spec = layer_spec(**layer_inputs())
    size = view(spec, "filter_map")["encoding"]["size"]
    assert size["legend"]["values"] == [0.25, 0.5, 0.75, 1.0]


def test_input_map_weights_are_point_sizes_and_legends_hide_by_mode():
    inputs = layer_inputs()
    weights = np.arange(1, len(inputs["points_xy"]) + 1)
    spec = layer_spec(**inputs, point_weight=weights)
    unit = view(spec, param(spec, "brush")["views"][0])
    assert unit["encoding"]["size"]["field"] == "weight"
    assert unit["encoding"]["size"]["scale"]["domain"] == [1, int(weights.max())]
    assert "weight" in {t["field"] for t in unit["encoding"]["tooltip"]}
    assert "OVERLAY_ON" not in json.dumps(unit) and "filter.filter" in json.dumps(
        unit["encoding"]["color"]["legend"])  # fmt: skip
    # without weights: no size channel
    plain = view(layer_spec(**inputs), param(spec, "brush")["views"][0])
    assert "size" not in plain["encoding"]


def test_patch_bars_without_a_brush_show_means_not_ones():
    spec = layer_spec(**layer_inputs())
    labels = aria_labels(spec)
    bars = {int(f["filter"]): float(f[BAR_TOOLTIP]) for f in map(fields_of, labels)
            if BAR_TOOLTIP in f and "filter" in f}  # fmt: skip
    points = spec["datasets"]["points"]
    expected = {k: np.mean([p["a"][k] for p in points]) / 100 for k in range(8)}
    assert bars == pytest.approx(expected, abs=6e-3)
    assert not all(v == 1 for v in bars.values())
    assert any("nothing brushed" in a for a in labels)
