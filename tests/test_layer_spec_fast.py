"""The layer page through its template (`layer_spec`'s default) is the page Altair builds.

`layer_spec` builds each `PageShape` once with placeholders and fills in each snapshot's values
(`deepeyes_keras/charts/common.py`: `build_template`); `layer_spec(..., cached=False)` builds
the whole chart with Altair from the values (validated as it is built). The two must give equal
specs for every configuration, the filled spec must be valid Vega-Lite, and two snapshots of one
layer filled from one template must not see each other's values.
"""

import functools
import json
import pathlib
import re

import altair as alt
import jsonschema
import numpy as np
import pytest

from deepeyes_keras.charts import layer as layer_module
from deepeyes_keras.charts.common import Slot, Template, build_template, placed
from deepeyes_keras.charts.layer import layer_spec, layer_template
from deepeyes_keras.charts.variance import LOG_ABOVE

# ----------------------------------------------------------------------------- inputs


def inputs(n_filters=8, n_points=40, n_labels=3, seed=0, thumbnails=True, step=100, **kw):
    """Seeded layer_spec arguments: gamma activations, some silent filters, some thumbnails."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, n_labels, n_points)
    act = rng.gamma(1.0, 1.0 + seed, (n_points, n_filters)) * (rng.random(n_filters) < 0.8)
    images = [
        f"data:image/png;base64,{seed:04d}{i:04d}" if thumbnails and i % 3 else None
        for i in range(n_points)
    ]
    return dict(
        layer=f"conv{seed}",
        step=step,
        max_activation=act.max(axis=0, initial=0.0),
        frequency=rng.random(n_filters),
        reliability_age=rng.integers(0, step + 1, n_filters),
        filter_xy=rng.normal(size=(n_filters, 2)),
        filter_label=np.where(
            rng.random(n_filters) < 0.2, -1, rng.integers(0, n_labels, n_filters)
        ),
        filter_strength=rng.random(n_filters),
        points_xy=rng.normal(size=(n_points, 2)) * (1 + seed) + 3.0 * label[:, None],
        point_label=label,
        point_activation=act,
        thumbnails=images,
        n_labels=n_labels,
        **kw,
    )


def t4(n_filters, seed=0, rank=None, width=None, oversized=True, text="evidence " * 12):
    """T4 keyword arguments: a non-decreasing curve of `n_filters` shares ending at 1."""
    rng = np.random.default_rng(seed + 100)
    shares = np.cumsum(np.sort(rng.random(n_filters))[::-1])
    return dict(
        cumulative_variance=(shares / shares[-1]).round(4).tolist(),
        signal_rank=max(1, n_filters // 4) if rank is None else rank,
        suggested_width=max(1, n_filters // 2) if width is None else width,
        oversized=oversized,
        width_text=text,
    )


CONFIGS = {
    "small": inputs(),
    "small, T4": inputs(seed=1, **t4(8, 1)),
    "selected filter": inputs(seed=2, selected_filter=3),
    "selected filter, T4, codes": inputs(
        seed=3, selected_filter=0, activation_codes=True, **t4(8, 3)
    ),
    "weights": inputs(seed=4, point_weight=np.arange(40) % 5 + 1),
    "one label, no thumbnails": inputs(seed=5, n_labels=1, thumbnails=False),
    "ten labels, codes": inputs(seed=6, n_labels=10, n_points=120, activation_codes=True),
    "no points": inputs(seed=7, n_points=0),
    "one filter, rank 0, no text": inputs(
        seed=8, n_filters=1, **t4(1, 8, rank=0, width=1, oversized=False, text=None)
    ),
    "65 filters, selected": inputs(seed=9, n_filters=65, selected_filter=64),
    "wide T4 (log axis)": inputs(seed=10, n_filters=LOG_ABOVE + 1, **t4(LOG_ABOVE + 1, 10)),
    "wide T4, rank 0 (linear axis)": inputs(
        seed=11, n_filters=LOG_ABOVE + 1, **t4(LOG_ABOVE + 1, 11, rank=0, oversized=False)
    ),
    "300 filters, subsampled, weights, codes": inputs(
        seed=12,
        n_filters=300,
        n_points=200,
        max_points=150,
        activation_codes=True,
        point_weight=np.arange(200) % 3 + 1,
        **t4(300, 12),
    ),
    "zero maxima, odd name": inputs(seed=13, step=0),
}
CONFIGS["zero maxima, odd name"].update(
    layer='dense "x" \\ {0} %s \ue000', max_activation=np.zeros(8), frequency=np.zeros(8)
)


def cleared_fast(kw: dict) -> dict:
    layer_template.cache_clear()
    return layer_spec(**kw)


# ----------------------------------------------------------------------------- equality


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_filled_template_is_the_spec_altair_builds(name):
    kw = CONFIGS[name]
    slow = layer_spec(**kw, cached=False)
    fast = cleared_fast(kw)
    assert fast == slow
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)
    again = layer_spec(**kw)  # now from the cache
    assert again == slow
    assert not re.search("\ue000[^\ue001]*\ue001", json.dumps(fast, ensure_ascii=False))


def test_the_shape_reaches_the_page():
    def x_scale(spec):
        (points,) = _find(spec, lambda d: d.get("name") == "variance_1")
        return points["encoding"]["x"]["scale"]

    assert x_scale(cleared_fast(CONFIGS["wide T4 (log axis)"]))["type"] == "log"
    assert "type" not in x_scale(cleared_fast(CONFIGS["wide T4, rank 0 (linear axis)"]))
    assert _param(cleared_fast(CONFIGS["selected filter"]), "filter")["value"] == [{"filter": 3}]
    assert "value" not in _param(cleared_fast(CONFIGS["small"]), "filter")


def test_nan_inputs_give_the_same_json_safe_spec():
    kw = inputs(seed=14)
    kw["max_activation"][2] = np.nan
    kw["frequency"][1] = np.inf
    kw["points_xy"][3, 0] = np.nan
    fast = cleared_fast(kw)
    assert fast == layer_spec(**kw, cached=False)
    json.dumps(fast, allow_nan=False)


def test_pages_of_one_shape_share_one_template():
    layer_template.cache_clear()
    for step in (10, 20, 40, 80):  # four snapshots of one layer: one build, three fills
        layer_spec(**inputs(seed=step, step=step, **t4(8, step)))
    info = layer_template.cache_info()
    assert (info.misses, info.hits, info.currsize) == (1, 3, 1)
    layer_spec(**inputs(seed=1, selected_filter=2))  # another shape: another template
    assert layer_template.cache_info().currsize == 2


# ----------------------------------------------------------------------------- schema


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    path = pathlib.Path(alt.__file__).parent / "vegalite" / "v6" / "schema"
    schema = json.loads((path / "vega-lite-schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize(
    "name", ["small", "selected filter, T4, codes", "weights", "wide T4 (log axis)", "no points"]
)
def test_filled_specs_are_valid_vega_lite(name):
    spec = cleared_fast(CONFIGS[name])
    errors = [e.message[:200] for e in _validator().iter_errors(spec)]
    assert not errors, errors[:3]
    # Altair's own reading of the spec, validated (the datasets are free-form rows).
    alt.VConcatChart.from_dict({k: v for k, v in spec.items() if k != "datasets"}, validate=True)


def test_a_spec_broken_through_the_template_would_fail_the_schema():
    spec = cleared_fast(CONFIGS["small"])
    spec["vconcat"][0]["hconcat"][0]["layer"][0]["mark"]["strokeWidth"] = "wide"
    assert list(_validator().iter_errors(spec))


# ----------------------------------------------------------------------------- no leaks


def _find(spec, pred):
    """Every dict in `spec` for which `pred` holds."""
    out, stack = [], [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if pred(node):
                out.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _param(spec, name):
    (found,) = [p for p in spec["params"] if p["name"] == name]
    return found


def _input_map_domains(spec):
    units = _find(spec, lambda d: d.get("name") == "input_map_0")
    (unit,) = units
    return [unit["encoding"][c]["scale"]["domain"] for c in ("x", "y")]


def _is_variance_view(node: dict) -> bool:
    title = node.get("title")
    return isinstance(title, dict) and str(title.get("text", "")).startswith("Width needed")


def _snapshot(step, seed, selected, width):
    weights = np.arange(40) % 4 + 1
    evidence = t4(8, seed, rank=2, width=width, text=f"text of step {step}")
    return inputs(seed=seed, step=step, selected_filter=selected, point_weight=weights, **evidence)


def test_two_snapshots_of_one_layer_do_not_leak_into_each_other():
    a_kw, b_kw = _snapshot(100, 21, 1, 4), _snapshot(200, 22, 6, 7)
    a_slow, b_slow = layer_spec(**a_kw, cached=False), layer_spec(**b_kw, cached=False)
    layer_template.cache_clear()
    a = layer_spec(**a_kw)
    a["title"] = "changed"  # a caller changing its spec changes nothing in the template
    a["params"].append({"name": "extra"})
    _param(a, "heatmap_top")["value"] = -1
    b = layer_spec(**b_kw)
    assert layer_template.cache_info().currsize == 1  # one shape: both filled from one template
    assert b == b_slow
    assert layer_spec(**a_kw) == a_slow

    # Each snapshot's own values, independently of the builder.
    for spec, kw, slow in ((b, b_kw, b_slow), (layer_spec(**a_kw), a_kw, a_slow)):
        assert spec["title"] == f"{kw['layer']}, step {kw['step']}"
        assert _param(spec, "filter")["value"] == [{"filter": kw["selected_filter"]}]
        assert _param(spec, "keep")["value"] == [{"k": kw["suggested_width"]}]
        top = float(np.max(kw["max_activation"]))
        assert _param(spec, "heatmap_top")["value"] == pytest.approx(top, rel=1e-3)
        assert f"max(heatmap_top, {_param(spec, 'heatmap_top')['value']})" in json.dumps(spec)
        xy = np.asarray(kw["points_xy"])
        (x0, x1), (y0, y1) = _input_map_domains(spec)
        assert x0 < xy[:, 0].min() < xy[:, 0].max() < x1 and y0 < xy[:, 1].min() < y1
        shown = [p["point"] for p in spec["datasets"]["points"]]
        assert shown == list(range(len(xy)))
        assert [p["x"] for p in spec["datasets"]["points"]] == pytest.approx(xy[:, 0], rel=1e-3)
        (variance,) = _find(spec, _is_variance_view)
        assert variance["title"]["text"].startswith(f"Width needed (T4): {kw['suggested_width']} ")
        assert variance["title"]["subtitle"][0] == kw["width_text"]
        weights = [p["weight"] for p in spec["datasets"]["points"]]
        sized = _find(spec, lambda d: d.get("field") == "weight" and "scale" in d)
        assert [d["scale"]["domain"] for d in sized] == [[1, max(max(weights), 2)]] * 2
        assert spec == slow
    assert b["title"] != a_slow["title"] and _input_map_domains(b) != _input_map_domains(a_slow)


# ----------------------------------------------------------------------------- the mechanism


def test_template_fill_converts_through_the_recorded_functions():
    def build(s):
        half = placed(s["top"], lambda v: v / 2)
        x = alt.X("x:Q", scale=alt.Scale(domain=[placed(half, int), s["top"]]))
        return (
            alt.Chart(alt.Data(name="rows"), title=f"{s['name']}: top {half}")
            .mark_point()
            .encode(x=x)
        )

    template = build_template(build, ["name", "top"])
    first = template.fill({"name": "a", "top": 9})
    second = template.fill({"name": "b {top}", "top": 3.0})
    assert first["title"] == "a: top 4.5" and first["encoding"]["x"]["scale"]["domain"] == [4, 9]
    assert second["title"] == "b {top}: top 1.5"
    assert second["encoding"]["x"]["scale"]["domain"] == [1, 3.0]
    assert template.fill({"name": "a", "top": 9}) == first  # the template is unchanged


def test_slots_refuse_what_a_template_cannot_reproduce():
    slot = Slot("\ue000x\ue001")
    with pytest.raises(TypeError, match="placed"):
        bool(slot)
    with pytest.raises(RuntimeError, match="outside build_template"):
        placed(slot, int)
    template = Template({"title": "\ue000x\ue001"}, ("x",), {})
    with pytest.raises(ValueError, match=r"no value for \['x'\]"):
        template.fill({})


def test_the_uncached_build_uses_no_template(monkeypatch):
    def refuse(shape):
        raise AssertionError("template used")

    monkeypatch.setattr(layer_module, "layer_template", refuse)
    spec = layer_spec(**CONFIGS["small"], cached=False)
    assert spec["title"] == "conv0, step 100"
