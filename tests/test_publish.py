"""Published views: small self-contained specs that a site shows when the run is absent."""

from __future__ import annotations

import json
import shutil

import pytest

from deepeyes_keras.derive.publish import layer_view_within, publish, published_size
from deepeyes_keras.derive.thumbnails import ThumbnailCache
from deepeyes_keras.run.reader import load_run

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
    for item in layer_views.values():
        spec = json.loads((manifest.parent / item["file"]).read_text())
        assert item["bytes"] <= 1_000_000 and item["points"] == item["of"]
        points = spec["datasets"]["points"]
        assert len(points) == item["points"] and points[0]["image"].startswith("data:image/png")
    # Identical to the run's own view when nothing had to be cut.
    own = (runs_copy / "tiny-a" / "views" / "step-00000012" / "L0.vl.json").read_text()
    assert (manifest.parent / layer_views["L0@12"]["file"]).read_text() == own
    assert published_size(manifest) < 2_000_000


def test_a_view_over_budget_keeps_fewer_points_and_says_so(recorded_runs):
    snap = load_run(recorded_runs / "tiny-a").snapshots[-1]
    full, points, total = layer_view_within(snap, "conv1", 10**9, ThumbnailCache())
    # the smallest view (MIN_POINTS points): its fixed part is what no cut can remove
    floor, fewest, _ = layer_view_within(snap, "conv1", 0, ThumbnailCache())
    assert fewest < total and len(floor) < len(full)
    budget = (len(full) + len(floor)) // 2  # halfway between: points must go
    small, kept, total2 = layer_view_within(snap, "conv1", budget, ThumbnailCache())
    assert points == total == total2 and kept < total and len(small) <= budget
    assert f"published: {kept:,} of {total:,} points" in small.decode()


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
