"""Identical instances are one weighted point of the input map (issue 16, item 4)."""

from types import SimpleNamespace

import numpy as np
import pytest

from deepeyes_keras.charts.layer_data import layer_rows
from deepeyes_keras.derive.embedding import collapse_duplicates
from deepeyes_keras.derive.maps import layer_maps
from deepeyes_keras.derive.views import map_points
from deepeyes_keras.run.reader import Samples


def _blank_and_distinct(k=30, distinct=40, seed=0):
    """k copies of a blank descriptor, then `distinct` random ones, shuffled."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.zeros((k, 25)), rng.random((distinct, 25)) + 0.1])
    order = rng.permutation(len(rows))
    return rows[order], order < k  # descriptors, which rows are blank


def test_k_copies_become_one_point_of_weight_k():
    x, blank = _blank_and_distinct(k=30, distinct=40)
    d = collapse_duplicates(x)
    assert len(d.first) == 41 and d.weight.sum() == 70
    blank_point = d.point[blank]
    assert len(set(blank_point.tolist())) == 1
    assert d.weight[blank_point[0]] == 30
    assert sorted(d.weight.tolist()) == [1] * 40 + [30]
    # every row maps to a point whose first row has the same descriptor
    np.testing.assert_array_equal(x[d.first][d.point], x)
    assert (np.diff(d.first) > 0).all()  # numbered by first appearance


def test_tolerance_is_relative_to_the_largest_value():
    base = np.array([[0.0, 1.0, 2.0], [0.5, 0.5, 0.5]])
    near = base[:1] + 2e-4 * 2.0 * np.array([[0.1, -0.2, 0.1]])  # within 1e-3 of max |x| = 2
    far = base[:1] + np.array([[0.01, 0.0, 0.0]])
    d = collapse_duplicates(np.concatenate([base, near, far]))
    assert d.point.tolist()[:3] == [0, 1, 0] and d.point[3] not in (0, 1)
    exact = collapse_duplicates(np.concatenate([base, near]), tolerance=0)
    assert len(exact.first) == 3


def test_bad_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        collapse_duplicates(np.zeros((3, 2)), tolerance=-1)
    with pytest.raises(ValueError, match="2-D"):
        collapse_duplicates(np.zeros(3))
    assert len(collapse_duplicates(np.zeros((0, 4))).first) == 0


def _layer(descriptors, seed=0):
    rng = np.random.default_rng(seed)
    n = len(descriptors)
    zeros = np.zeros(n, np.int64)
    samples = Samples(uid=np.arange(100, 100 + n), step=zeros, image=zeros, position=zeros,
                      label=zeros, box_start=zeros, box_size=zeros, activation=zeros,
                      patch=zeros, descriptor=descriptors.astype(np.float16))  # fmt: skip
    return SimpleNamespace(samples=samples, jaccard=np.eye(6), label_activation=rng.random((6, 3)))


def test_layer_map_embeds_each_distinct_descriptor_once():
    x, blank = _blank_and_distinct(k=60, distinct=50)
    maps = layer_maps(_layer(x), seed=0)
    assert len(maps["uid"]) == len(x)  # every instance keeps its place on the map
    assert len(maps["weight"]) == 51 and maps["weight"].sum() == len(x)
    blank_xy = maps["xy"][blank]
    assert np.ptp(blank_xy, axis=0).max() == 0  # the copies share one position
    assert maps["weight"][maps["point"][blank][0]] == 60
    distinct_xy = maps["xy"][~blank]
    assert len(np.unique(distinct_xy, axis=0)) == 50


def test_carried_layout_keeps_duplicates_together():
    x, blank = _blank_and_distinct(k=20, distinct=30, seed=1)
    first = layer_maps(_layer(x), seed=0)
    more, more_blank = _blank_and_distinct(k=25, distinct=30, seed=2)
    layer = _layer(np.concatenate([x, more]))
    second = layer_maps(layer, previous=first, seed=0)
    together = np.concatenate([blank, more_blank])
    assert np.ptp(second["xy"][together], axis=0).max() == 0
    assert second["weight"][second["point"][together][0]] == 45


def test_map_points_draw_the_latest_instance_with_the_common_label():
    maps = {"uid": np.arange(6), "point": np.array([0, 1, 0, 0, 2, 1])}
    step = np.array([10, 20, 50, 30, 40, 10])
    label = np.array([1, 2, 7, 7, 0, 2])
    points = map_points(maps, step, label)
    assert points.representative.tolist() == [2, 1, 4]
    assert points.weight.tolist() == [3, 2, 1]
    assert points.label.tolist() == [7, 2, 0]
    old = map_points({"uid": np.arange(3)}, np.array([1, 2, 3]), np.array([0, 1, 0]))
    assert old.representative.tolist() == [0, 1, 2] and old.weight.tolist() == [1, 1, 1]


def test_layer_rows_carry_the_weight():
    common = dict(step=10, max_activation=[1.0, 2.0], frequency=[0.5, 0.1],
                  reliability_age=[0, 8], filter_xy=[[0, 0], [1, 1]], filter_label=[0, -1],
                  filter_strength=[1, 0], points_xy=[[0, 1], [2, 3]], point_label=[1, 0],
                  point_activation=[[0.5, 2.0], [1.0, 0.0]], thumbnails=[None, None])  # fmt: skip
    rows = layer_rows(**common, point_weight=[40, 1])
    assert [p["weight"] for p in rows.points] == [40, 1]
    assert "weight" not in layer_rows(**common).points[0]
    with pytest.raises(ValueError, match="point_weight"):
        layer_rows(**common, point_weight=[0, 1])
    with pytest.raises(ValueError, match="point_weight"):
        layer_rows(**common, point_weight=[1, 1, 1])
