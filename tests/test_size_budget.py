"""Size of runs and views (issue 16, item 7): compact encodings that read back the same."""

import base64
import re
import struct
import zlib

import numpy as np
import pytest

from deepeyes_keras.charts import layer_spec, render
from deepeyes_keras.charts.layer_data import ACTIVATION_CODES, CODE_TOP, layer_rows
from deepeyes_keras.derive.thumbnails import ThumbnailCache, png_bytes
from deepeyes_keras.run.writer import npz_bytes


def _inputs(n_filters=8, n_points=30, seed=0):
    rng = np.random.default_rng(seed)
    act = rng.gamma(1.0, 1.0, (n_points, n_filters)) * (rng.random(n_filters) < 0.8)
    return dict(layer="conv1", step=100, max_activation=act.max(axis=0, initial=0.0),
                frequency=rng.random(n_filters), reliability_age=rng.integers(0, 100, n_filters),
                filter_xy=rng.normal(size=(n_filters, 2)),
                filter_label=rng.integers(0, 3, n_filters), filter_strength=rng.random(n_filters),
                points_xy=rng.normal(size=(n_points, 2)), point_label=rng.integers(0, 3, n_points),
                point_activation=act, thumbnails=[None] * n_points, n_labels=3)  # fmt: skip


def test_activation_codes_are_one_character_per_filter():
    inputs = _inputs()
    act = np.asarray(inputs["point_activation"])
    keep = {k: v for k, v in inputs.items() if k not in ("layer", "n_labels")}
    rows = layer_rows(**keep, activation_codes=True)
    share = act / np.where(act.max(axis=0) > 0, act.max(axis=0), 1.0)
    for row in rows.points:
        a = row["a"]
        assert isinstance(a, str) and len(a) == 8
        levels = np.array([ACTIVATION_CODES.index(c) for c in a])
        np.testing.assert_array_equal(levels, np.rint(CODE_TOP * share[row["point"]]).astype(int))
        assert row["amax"] == int(np.rint(100 * share[row["point"]].max()))


def _fields(label):
    label = label.replace("\u2212", "-")
    return dict(part.split(": ", 1) for part in label.split("; ") if ": " in part)


def _overlay(spec):
    svg = render(spec, "svg").decode()
    return {
        int(f["point"]): float(f["activation"])
        for f in map(_fields, re.findall(r'aria-label="([^"]*)"', svg))
        if "activation" in f and "point" in f
    }


def test_coded_views_draw_the_same_overlay_when_rendered():
    plain = layer_spec(**_inputs(), selected_filter=3)
    coded = layer_spec(**_inputs(), selected_filter=3, activation_codes=True)
    want, got = _overlay(plain), _overlay(coded)
    assert set(got) == set(want) and len(got) > 10
    # ints are 1/100 steps, codes 1/CODE_TOP steps: both round the same share
    assert max(abs(got[p] - want[p]) for p in want) <= 0.5 / CODE_TOP + 0.5 / 100 + 1e-9
    points = {p["point"]: p for p in coded["datasets"]["points"]}
    for p, value in got.items():
        assert abs(value - ACTIVATION_CODES.index(points[p]["a"][3]) / CODE_TOP) < 0.006


def _decode_grey_png(data):
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", payload[:10])
        if kind == b"IDAT":
            idat += payload
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all() and colour == 0
    if depth == 8:
        return raw[:, 1:], depth
    nibbles = np.stack([raw[:, 1:] >> 4, raw[:, 1:] & 15], axis=2).reshape(height, -1)
    return nibbles[:, :width], depth


def test_four_bit_thumbnails_keep_16_grey_levels():
    x = np.random.default_rng(0).random((7, 9))
    grey8, depth8 = _decode_grey_png(png_bytes(x))
    grey4, depth4 = _decode_grey_png(png_bytes(x, bit_depth=4))
    assert (depth8, depth4) == (8, 4) and grey4.shape == (7, 9)
    np.testing.assert_array_equal(grey4, (grey8.astype(int) * 15 + 127) // 255)
    mnist_like = np.zeros((28, 28))
    mnist_like[6:22, 12:16] = np.linspace(0, 1, 16)[:, None]
    cache = ThumbnailCache()
    (url,) = cache.get("L0", np.array([1]), mnist_like[None])
    smaller = base64.b64decode(url.split(",", 1)[1])
    assert len(smaller) < len(png_bytes(mnist_like))


def test_run_arrays_are_compressed_and_read_back_exactly(tmp_path):
    arrays = {"L0.patch": np.zeros((200, 28, 28, 1), np.float16),
              "L0.uid": np.arange(200, dtype=np.int64)}  # fmt: skip
    data = npz_bytes(arrays)
    assert len(data) < 0.05 * sum(a.nbytes for a in arrays.values())  # blank patches
    path = tmp_path / "x.npz"
    path.write_bytes(data)
    with np.load(path) as back:
        for name, value in arrays.items():
            np.testing.assert_array_equal(back[name], value)
            assert back[name].dtype == value.dtype


def test_rows_name_their_instance_instead_of_inlining_its_thumbnail():
    inputs = _inputs(n_points=30)
    keep = {k: v for k, v in inputs.items() if k not in ("layer", "n_labels")}
    uids = np.arange(1000, 1030)
    rows = layer_rows(**keep, point_uid=uids, max_points=12)
    assert len(rows.points) == 12
    for row in rows.points:  # the subsample keeps each point's own instance
        assert "image" not in row and row["uid"] == 1000 + row["point"]
    with_images = layer_rows(**keep, max_points=12)
    assert [r["point"] for r in with_images.points] == [r["point"] for r in rows.points]
    assert all("image" in r and "uid" not in r for r in with_images.points)
    with pytest.raises(ValueError, match=r"point_uid.*Expected 30 integer"):
        layer_rows(**keep, point_uid=uids[:5])
    with pytest.raises(ValueError, match=r"point_uid.*float"):
        layer_rows(**keep, point_uid=uids + 0.5)


def test_views_of_a_run_are_a_fifth_of_views_with_inline_thumbnails(recorded_runs):
    """The views stage's files (compressed views, thumbnails shared by the snapshots) against
    what it wrote before: every view as plain JSON with its thumbnails inline (the same view,
    read back). Measured on the fixture runs: 0.17 and 0.18; the 2,000-step LeNet run: 0.21
    (bench/run_size.py). The sharing alone (plain JSON without images): about 0.5."""
    from deepeyes_keras.charts import spec_json
    from deepeyes_keras.run.reader import load_run
    from deepeyes_keras.run.view_files import file_bytes, read_view

    for name in ("tiny-a", "tiny-b"):
        run = load_run(recorded_runs / name)
        keys = [info["key"] for info in run.manifest["analysed_layers"]]
        paths = [run.layout.view(key, snap.step) for snap in run.snapshots for key in keys]
        inline = sum(len(spec_json(read_view(p)).encode()) for p in paths)
        stored = sum(p.stat().st_size for p in paths)
        stored += sum(run.layout.thumbnails(key).stat().st_size for key in keys)
        assert stored < 0.25 * inline, (name, stored / inline)
        plain = sum(len(file_bytes(p)) for p in paths)  # decompressed, no thumbnails
        assert plain < 0.65 * inline, (name, plain / inline)
