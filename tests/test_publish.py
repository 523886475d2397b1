"""Published views: small specs (with their thumbnails) that a site shows when the run is absent."""

from __future__ import annotations

import json
import shutil

import pytest

from deepeyes_keras.charts import spec_json
from deepeyes_keras.derive.publish import layer_view_within, publish, published_size
from deepeyes_keras.derive.thumbnails import ThumbnailCache
from deepeyes_keras.run.reader import load_run
from deepeyes_keras.run.view_files import read_thumbnails, read_view, shown_uids

BLOCKS = """# Page

```deepeyes
run: tiny-a
layer: conv1
step: 12
```

```deepeyes
run: tiny-a
view: histograms
```
"""


def test_publish_writes_self_contained_views_within_budget(runs_copy, tmp_path):
    out = tmp_path / "published"
    manifest = publish(runs_copy / "tiny-a", out, layers=["conv1", "fc1"], steps=[6, 12])
    entry = json.loads(manifest.read_text())
    assert entry["run_name"] == "tiny-a" and entry["steps"] == [6, 12]
    layer_views = {k: v for k, v in entry["views"].items() if "layer" in v}
    assert set(layer_views) == {"L0@6", "L0@12", "L1@6", "L1@12"}  # conv1, fc1
    shown: dict[str, set[str]] = {"L0": set(), "L1": set()}
    for name, item in layer_views.items():
        raw = json.loads((manifest.parent / item["file"]).read_text())  # plain JSON
        assert raw["usermeta"]["deepeyes"]["thumbnails"] == f"../thumbnails/{name[:2]}.json"
        assert all("image" not in p for p in raw["datasets"]["points"])
        shown[name[:2]] |= {str(u) for u in shown_uids(raw)}
        spec = read_view(manifest.parent / item["file"])
        assert item["bytes"] <= 1_000_000 and item["points"] == item["of"]
        points = spec["datasets"]["points"]
        assert len(points) == item["points"]
        assert all(p["image"].startswith("data:image/png") for p in points)
    # One thumbnails file per layer, listed, holding exactly the published points' instances.
    assert set(entry["thumbnails"]) == {"L0", "L1"}
    for key, item in entry["thumbnails"].items():
        assert set(read_thumbnails(manifest.parent / item["file"])) == shown[key]
    # The same view as the run's own when nothing had to be cut.
    own = read_view(runs_copy / "tiny-a" / "views" / "step-00000012" / "L0.vl.json.gz")
    assert read_view(manifest.parent / layer_views["L0@12"]["file"]) == own
    files = [*entry["views"].values(), *entry["thumbnails"].values()]
    assert published_size(manifest) == manifest.stat().st_size + sum(
        (manifest.parent / v["file"]).stat().st_size for v in files
    )
    assert published_size(manifest) < 2_000_000


def test_publishing_again_keeps_the_thumbnails_of_earlier_views(runs_copy, tmp_path):
    out = tmp_path / "published"
    publish(runs_copy / "tiny-a", out, layers=["conv1"], steps=[6])
    manifest = publish(runs_copy / "tiny-a", out, layers=["conv1"], steps=[12])
    entry = json.loads(manifest.read_text())
    assert {"L0@6", "L0@12"} <= set(entry["views"])
    for item in (entry["views"]["L0@6"], entry["views"]["L0@12"]):
        points = read_view(manifest.parent / item["file"])["datasets"]["points"]
        assert all(p["image"].startswith("data:image/png") for p in points)


def test_a_view_over_budget_keeps_fewer_points_and_says_so(recorded_runs):
    snap = load_run(recorded_runs / "tiny-a").snapshots[-1]
    full = layer_view_within(snap, "conv1", 10**9, ThumbnailCache())
    # the smallest view (MIN_POINTS points): its fixed part is what no cut can remove
    floor = layer_view_within(snap, "conv1", 0, ThumbnailCache())
    assert floor.points < full.total and floor.size < full.size
    budget = (full.size + floor.size) // 2  # halfway between: points must go
    small = layer_view_within(snap, "conv1", budget, ThumbnailCache())
    assert full.points == full.total == small.total and small.points < small.total
    assert small.size <= budget
    # The size counts the spec and the thumbnails of its points, which are those it shows.
    assert set(small.thumbnails) == {str(u) for u in shown_uids(small.spec)}
    assert len(small.thumbnails) == small.points
    assert small.size == len(spec_json(small.spec).encode()) + len(spec_json(small.thumbnails))
    assert f"published: {small.points:,} of {small.total:,} points" in spec_json(small.spec)


def test_publish_rejects_unknown_layers(recorded_runs, tmp_path):
    with pytest.raises(ValueError, match=r"no analysed layer.*'conv9'.*conv1"):
        publish(recorded_runs / "tiny-a", tmp_path, layers=["conv9"])


def test_site_shows_published_views_when_the_run_is_absent(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    out = tmp_path / "published"
    publish(runs_copy / "tiny-a", out, layers=["conv1"], steps=[12])
    shutil.rmtree(runs_copy / "tiny-a")  # the wiki has no runs
    config = write_site(
        tmp_path / "wiki", runs_copy, pages={"page.md": BLOCKS}, options=f"published: [{out}]\n"
    )
    site = build_site(config, strict=True)
    html = (site / "page" / "index.html").read_text()
    assert "DeepEyes chart unavailable" not in html and html.count("deepeyes-figure") == 2
    assert not mkdocs_warnings
    frozen = site / "deepeyes" / "published" / "tiny-a" / "step-00000012" / "L0.vl.json"
    assert frozen.is_file() and "published/tiny-a/step-00000012/L0.vl.json" in html
    assert (site / "deepeyes" / "published" / "tiny-a" / "histograms.vl.json").is_file()
    # The thumbnails its view names are beside it, as in the published directory.
    points = read_view(frozen)["datasets"]["points"]
    assert all(p["image"].startswith("data:image/png") for p in points)


def test_publish_command_from_a_run_and_from_a_page(runs_copy, tmp_path, capsys):
    from deepeyes_keras.cli import main

    out = tmp_path / "published"
    assert main(["publish", str(runs_copy / "tiny-b"), "--layer", "fc1", "--out", str(out)]) == 0
    entry = json.loads((out / "tiny-b" / "published.json").read_text())
    assert {v.get("layer") for v in entry["views"].values()} == {None, "fc1"}
    page = tmp_path / "page.md"
    page.write_text(BLOCKS.replace("step: 12\n", "step: 6\npublish: yes\n"))
    assert main(["publish", "--page", str(page), "--runs", str(runs_copy), "--out", str(out)]) == 0
    entry = json.loads((out / "tiny-a" / "published.json").read_text())
    assert [(v["layer"], v["step"]) for v in entry["views"].values() if "layer" in v] == [
        ("conv1", 6)
    ]
    assert "published to" in capsys.readouterr().out
