"""Tests for derive.thumbnails: the PNG encoder is checked by decoding with zlib alone."""

import base64
import json
import re
import struct
import zlib

import numpy as np
import pytest

from deepeyes_keras.derive.thumbnails import (
    CONSTANT_GREY,
    PNG_SIGNATURE,
    data_url,
    patch_thumbnail,
    png_bytes,
)


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit grey/RGB PNG whose rows all use filter type 0, checking every CRC."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0) and color in (0, 2)
    channels = 1 if color == 0 else 3
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every row
    pixels = rows[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def _url_to_pixels(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return decode_png(base64.b64decode(url[len(prefix) :]))


def _expected(x: np.ndarray) -> np.ndarray:
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def test_grey_png_round_trip_matches_normalised_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7))
    got = decode_png(png_bytes(x))
    assert got.shape == (5, 7)
    np.testing.assert_array_equal(got, _expected(x))
    assert got.min() == 0 and got.max() == 255
    # (h, w, 1) is the same grey image
    np.testing.assert_array_equal(decode_png(png_bytes(x[:, :, None])), got)


def test_rgb_png_round_trip_and_scale():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 3, size=(3, 4, 3))
    got = decode_png(png_bytes(x, scale=3))
    assert got.shape == (9, 12, 3)
    small = _expected(x)  # one normalisation over all channels, not per channel
    np.testing.assert_array_equal(got[::3, ::3], small)
    np.testing.assert_array_equal(got[2::3, 1::3], small)


def test_constant_and_non_finite_images():
    np.testing.assert_array_equal(decode_png(png_bytes(np.full((2, 2), 7.0))), CONSTANT_GREY)
    np.testing.assert_array_equal(decode_png(png_bytes(np.full((2, 2), np.nan))), CONSTANT_GREY)
    got = decode_png(png_bytes(np.array([[0.0, np.inf], [1.0, 2.0]])))
    np.testing.assert_array_equal(got, [[0, 0], [128, 255]])


@pytest.mark.parametrize(
    "shape, kw",
    [((2, 2, 2), {}), ((2,), {}), ((0, 3), {}), ((2, 2), {"scale": 0}), ((2, 2), {"scale": 1.5})],
)
def test_png_bytes_rejects_bad_input(shape, kw):
    with pytest.raises(ValueError, match="Received"):
        png_bytes(np.zeros(shape), **kw)


def test_data_url_is_base64_png():
    url = data_url(np.eye(3))
    np.testing.assert_array_equal(_url_to_pixels(url), np.eye(3) * 255)


def test_mnist_like_patch_thumbnail_is_small():
    rng = np.random.default_rng(2)
    patch = np.zeros((28, 28, 1))
    patch[6:22, 12:16, 0] = rng.uniform(0.6, 1.0, size=(16, 4))  # a "1" stroke
    url = patch_thumbnail(patch, max_side=32)
    assert len(url) < 2048
    pixels = _url_to_pixels(url)
    assert pixels.shape == (28, 28)  # round(32 / 28) = 1: no upscaling
    assert pixels[0, 0] == 0 and pixels[10, 13] > 100


def test_patch_layouts():
    # small image: upscaled so the longer side is about max_side
    assert _url_to_pixels(patch_thumbnail(np.eye(5)[:, :, None] * [1, 1, 1])).shape == (30, 30, 3)
    # 1-D signal (L, c) -> c rows x L columns, rows repeated to at least max_side // 4 pixels
    sig = np.stack([np.linspace(0, 1, 16), np.linspace(1, 0, 16)], axis=1)
    px = _url_to_pixels(patch_thumbnail(sig, max_side=32))
    assert px.shape == (8, 32)
    assert px[0, 0] == 0 and px[0, -1] == 255 and px[-1, 0] == 255
    # tabular (D,) -> 1 x D strip
    px = _url_to_pixels(patch_thumbnail(np.arange(8.0), max_side=32))
    assert px.shape == (8, 32)
    np.testing.assert_array_equal(px[0, ::4], _expected(np.arange(8.0)))
    # large patches are subsampled
    assert _url_to_pixels(patch_thumbnail(np.ones((224, 224, 3)), max_side=32)).shape[0] <= 64
    assert patch_thumbnail(np.zeros((0,))) is None
    assert patch_thumbnail(np.zeros((4, 0, 1))) is None
    with pytest.raises(ValueError, match="max_side"):
        patch_thumbnail(np.eye(2), max_side=0)


# ------------------------------------------------------------------ thumbnails shared by views


def _grey_levels(url: str) -> np.ndarray:
    """The 4-bit grey levels (0..15) of a data-URL PNG written with bit_depth=4."""
    data = base64.b64decode(url.split(",", 1)[1])
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", payload[:10])
        idat += payload if kind == b"IDAT" else b""
        pos += 12 + n
    assert (depth, colour) == (4, 0)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)[:, 1:]
    return np.stack([rows >> 4, rows & 15], axis=2).reshape(height, -1)[:, :width]


def _views(run, key):
    return [run.layout.view(key, snap.step) for snap in run.snapshots]


def test_each_layers_thumbnails_file_holds_exactly_what_its_views_show(recorded_runs):
    from deepeyes_keras.run.reader import load_run
    from deepeyes_keras.run.view_files import read_thumbnails, read_view

    checked = 0
    for name in ("tiny-a", "tiny-b"):
        run = load_run(recorded_runs / name)
        for info in run.manifest["analysed_layers"]:
            key, shown = info["key"], set()
            table = read_thumbnails(run.layout.thumbnails(key))
            for snap, path in zip(run.snapshots, _views(run, key), strict=True):
                raw = read_view(path, thumbnails=False)
                rows = raw["datasets"]["points"]
                assert rows and all("image" not in r and isinstance(r["uid"], int) for r in rows)
                assert raw["usermeta"] == {
                    "deepeyes": {"thumbnails": f"../thumbnails/{key}.json.gz"}
                }
                shown |= {str(r["uid"]) for r in rows}
                samples = snap.layers[info["name"]].samples
                patch_of = dict(zip(samples.uid.tolist(), samples.patch, strict=True))
                joined = read_view(path)["datasets"]["points"]
                for row, drawn in zip(rows, joined, strict=True):
                    patch = np.asarray(patch_of[row["uid"]], np.float32)
                    # The image of a point is the thumbnail of its own instance's patch...
                    assert drawn["image"] == table[str(row["uid"])]
                    assert drawn["image"] == patch_thumbnail(patch, bit_depth=4)
                    # ... whose pixels are that patch at 16 grey levels (nearest upscaling).
                    if patch.ndim == 3 and patch.shape[2] == 1 and np.ptp(patch) > 0:
                        levels = _grey_levels(drawn["image"])
                        step = levels.shape[0] // patch.shape[0]
                        want = (_expected(patch[:, :, 0]).astype(int) * 15 + 127) // 255
                        np.testing.assert_array_equal(levels[::step, ::step], want)
                        checked += 1
            assert set(table) == shown  # exactly the instances some view shows
    assert checked > 100


def test_views_stage_keeps_thumbnails_whole_and_repairs_what_is_lost(runs_copy):
    from deepeyes_keras.derive.views import write_views
    from deepeyes_keras.run.layout import RunLayout
    from deepeyes_keras.run.reader import load_run
    from deepeyes_keras.run.view_files import read_thumbnails, read_view, shown_uids, view_is_whole

    run_dir = runs_copy / "tiny-a"
    layout = RunLayout(run_dir)

    def write(**kw) -> set[str]:
        return {layout.relative(p) for p in write_views(run_dir, **kw)}

    run_wide = {"views/overview.vl.json", "views/histograms.vl.json"}
    assert write() == run_wide  # every layer view written before: none again
    # A lost thumbnails file: every view that names it is written again, with it.
    layout.thumbnails("L1").unlink()
    assert write(steps=[12]) == run_wide | {
        "views/thumbnails/L1.json.gz",
        "views/step-00000006/L1.vl.json.gz",
        "views/step-00000012/L1.vl.json.gz",
    }
    # A truncated view is written again; its thumbnails are all there already.
    path = layout.view("L0", 6)
    path.write_bytes(path.read_bytes()[:-40])
    assert not view_is_whole(path)
    assert write() == run_wide | {"views/step-00000006/L0.vl.json.gz"}
    # A view in the older form (plain, thumbnails inline) counts as written, until overwritten.
    old = layout.plain_view("L2", 6)
    old.write_text(json.dumps(read_view(layout.view("L2", 6))))
    layout.view("L2", 6).unlink()
    assert write() == run_wide and layout.view_file("L2", 6) == old
    assert "views/step-00000006/L2.vl.json.gz" in write(overwrite=True) and not old.exists()
    run = load_run(run_dir)
    for key in ("L0", "L1", "L2"):
        shown = {
            str(u) for p in _views(run, key) for u in shown_uids(read_view(p, thumbnails=False))
        }
        assert set(read_thumbnails(layout.thumbnails(key))) == shown


def test_read_view_names_what_is_damaged_or_missing(runs_copy):
    from deepeyes_keras.run.layout import DamagedFileError, RunLayout
    from deepeyes_keras.run.view_files import read_view

    layout = RunLayout(runs_copy / "tiny-a")
    layout.thumbnails("L0").unlink()
    with pytest.raises(
        DamagedFileError, match=r"L0\.json\.gz, which does not exist.*deepeyes maps"
    ):
        read_view(layout.view("L0", 6))
    assert "uid" in read_view(layout.view("L0", 6), thumbnails=False)["datasets"]["points"][0]
    path = layout.view("L1", 6)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DamagedFileError, match=r"L1\.vl\.json\.gz is damaged \(not a whole gzip"):
        read_view(path)


def test_a_view_renders_its_thumbnails_in_either_form(recorded_runs, tmp_path):
    """What export and notebooks draw: the compressed view with its thumbnails joined in, and the
    same view as older runs wrote it (plain JSON, thumbnails inline), render alike."""
    from deepeyes_keras.charts import render
    from deepeyes_keras.run.view_files import read_view

    path = recorded_runs / "tiny-a" / "views" / "step-00000012" / "L0.vl.json.gz"
    old = tmp_path / "L0.vl.json"
    old.write_text(json.dumps(read_view(path)))

    def drawn(spec) -> str:  # the renderer numbers its gradients and clips across calls
        return re.sub(r"(gradient_|clip)\d+", r"\1", render(spec, "svg").decode())

    svg = drawn(read_view(path))
    assert svg.count("<image") > 10 and "data:image/png;base64," in svg  # the patches view
    assert drawn(read_view(old)) == svg
    unjoined = render(read_view(path, thumbnails=False), "svg").decode()
    assert "<image" not in unjoined  # a spec drawn without its thumbnails shows no patch
