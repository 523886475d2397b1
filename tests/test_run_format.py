"""The run directory as a contract: its paths, its schema versions, and who writes what.

``tests/fixtures/schema1/schema1-run`` was written by deepeyes-keras before the stage layout
(schema 1: findings inside the snapshot records); it must keep loading and rendering.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepeyes_keras import load_run
from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.pipeline import update_run
from deepeyes_keras.run.layout import (
    SCHEMA_VERSION,
    RunLayout,
    is_run_dir,
    layer_key,
    read_json,
    snapshot_stem,
    strict_json,
    write_json,
)

SCHEMA1 = Path(__file__).parent / "fixtures" / "schema1" / "schema1-run"


@pytest.fixture
def schema1_run(tmp_path) -> Path:
    target = tmp_path / "runs" / "schema1-run"
    shutil.copytree(SCHEMA1, target)
    return target


def digests(root: Path, pattern: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


def test_layout_spells_every_path_of_the_run_directory(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.relative(layout.manifest) == "manifest.json"
    assert layout.relative(layout.snapshot_record(100)) == "snapshots/step-00000100.json"
    assert layout.relative(layout.snapshot_arrays(100)) == "snapshots/step-00000100.npz"
    assert layout.relative(layout.sample_chunk("L1", 7)) == "samples/L1/entries-00000007.npz"
    assert layout.relative(layout.maps("L0", 20)) == "maps/L0/step-00000020.npz"
    assert layout.relative(layout.view("overview")) == "views/overview.vl.json"
    assert layout.relative(layout.view("L2", 3)) == "views/step-00000003/L2.vl.json.gz"
    assert layout.relative(layout.plain_view("L2", 3)) == "views/step-00000003/L2.vl.json"
    assert layout.relative(layout.thumbnails("L2")) == "views/thumbnails/L2.json.gz"
    assert layout.relative(layout.findings(40)) == "findings/step-00000040.json"
    assert layout.relative(layout.latest_findings) == "findings.json"
    assert layout.relative(layout.export_dir) == "export"
    assert snapshot_stem(12) == "step-00000012" and layer_key(3) == "L3"
    assert not is_run_dir(tmp_path)
    write_json(layout.manifest, {"schema_version": SCHEMA_VERSION})
    assert is_run_dir(tmp_path)


def test_the_fixture_is_what_schema_1_wrote():
    manifest = read_json(SCHEMA1 / "manifest.json")
    assert manifest["schema_version"] == 1
    record = read_json(SCHEMA1 / "snapshots" / "step-00000012.json")
    assert "findings" in record and not (SCHEMA1 / "findings").exists()


def test_strict_json_replaces_and_counts_non_finite_values(tmp_path):
    safe, count = strict_json({"a": [1.0, float("nan")], "b": np.float32("inf"), 3: np.arange(2)})
    assert safe == {"a": [1.0, None], "b": None, "3": [0, 1]} and count == 2
    path = tmp_path / "x.json"
    assert write_json(path, {"v": float("-inf")}) == 1
    assert json.loads(path.read_text()) == {"v": None}
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place


def test_a_schema_1_run_loads_with_its_findings_maps_and_samples(schema1_run):
    run = load_run(schema1_run)
    assert [s.step for s in run.snapshots] == [6, 12] and not run.skipped
    last = run.snapshots[-1]
    assert set(last.findings["layers"]) == {"conv1", "fc1", "out"}
    assert last.findings_summary["step"] == 12
    for layer in last.layers.values():
        assert layer.maps is not None and len(layer.maps["uid"]) > 0
        samples = layer.samples
        assert len(samples) == len(layer.reservoir_uids) > 0
        assert np.isfinite(layer.max_activation).all()


def test_the_findings_stage_never_rewrites_a_schema_1_record(schema1_run):
    records = digests(schema1_run, "snapshots/*")
    assert write_findings(schema1_run) == 0  # its findings are there (in the records)
    assert write_findings(schema1_run, overwrite=True) == 2
    assert digests(schema1_run, "snapshots/*") == records
    run = load_run(schema1_run)
    assert (schema1_run / "findings" / "step-00000006.json").is_file()
    assert run.snapshots[-1].findings["step"] == 12  # now read from the findings stage's file
    assert read_json(schema1_run / "findings.json")["step"] == 12


def test_the_pipeline_fills_in_only_what_is_missing(schema1_run):
    shutil.rmtree(schema1_run / "maps" / "L1")
    shutil.rmtree(schema1_run / "views")
    before = digests(schema1_run, "snapshots/*") | digests(schema1_run, "samples/**/*")
    done = update_run(schema1_run, max_points=48)
    assert done.maps == 2 and done.findings == 0
    assert (schema1_run / "views" / "step-00000012" / "L1.vl.json.gz").is_file()
    assert (schema1_run / "views" / "thumbnails" / "L1.json.gz").is_file()
    after = digests(schema1_run, "snapshots/*") | digests(schema1_run, "samples/**/*")
    assert after == before  # the recorder's files are untouched
    assert update_run(schema1_run, max_points=48).maps == 0


def test_a_schema_1_run_builds_a_site(schema1_run, tmp_path, write_site, build_site):
    site = build_site(write_site(tmp_path / "site", schema1_run.parent))
    run_page = (site / "deepeyes" / "schema1-run" / "index.html").read_text()
    assert "<h2>Findings</h2>" in run_page and "Findings at step 12" in run_page
    for key in ("L0", "L1", "L2"):
        assert (site / "deepeyes" / "schema1-run" / key / "index.html").is_file()
        assert (
            site / "deepeyes" / "schema1-run" / "views" / "step-00000012" / f"{key}.vl.json"
        ).is_file()


def test_a_run_of_a_newer_schema_is_refused_with_the_fix(schema1_run):
    manifest = read_json(schema1_run / "manifest.json")
    manifest["schema_version"] = SCHEMA_VERSION + 1
    write_json(schema1_run / "manifest.json", manifest)
    with pytest.raises(ValueError, match="Upgrade deepeyes-keras"):
        load_run(schema1_run)


def test_a_layer_view_is_found_in_either_form(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.view_file("L0", 6) == layout.view("L0", 6)  # neither: where it will be
    layout.plain_view("L0", 6).parent.mkdir(parents=True)
    layout.plain_view("L0", 6).write_text("{}")
    assert layout.view_file("L0", 6) == layout.plain_view("L0", 6)  # a run from before
    layout.view("L0", 6).write_bytes(b"")
    assert layout.view_file("L0", 6) == layout.view("L0", 6)  # the compressed one wins
    assert layout.view_file("overview") == layout.view("overview") == layout.plain_view("overview")


def test_a_schema_1_runs_old_views_are_kept_and_read(schema1_run):
    """Its layer views (plain, thumbnails inline) count as written and read as they are."""
    from deepeyes_keras.derive.views import write_views
    from deepeyes_keras.run.view_files import read_view

    old = digests(schema1_run, "views/step-*/*")
    assert old and all(name.endswith(".vl.json") for name in old)
    write_views(schema1_run)
    assert digests(schema1_run, "views/step-*/*") == old  # not written again
    assert not (schema1_run / "views" / "thumbnails").exists()
    run = load_run(schema1_run)
    snap = run.snapshots[-1]
    spec = read_view(run.layout.view_file("L0", snap.step))
    points = spec["datasets"]["points"]
    assert points and all(p["image"].startswith("data:image/png;base64,") for p in points)
    assert "usermeta" not in spec


def test_a_site_of_a_run_that_lost_a_thumbnails_file_warns_and_keeps_its_views(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    shutil.rmtree(runs_copy / "tiny-b")
    RunLayout(runs_copy / "tiny-a").thumbnails("L1").unlink()
    site = build_site(write_site(tmp_path / "site", runs_copy))
    assert len(mkdocs_warnings) == 1 and "L1.json.gz is missing" in mkdocs_warnings[0]
    assert "deepeyes maps RUN" in mkdocs_warnings[0]
    views = site / "deepeyes" / "tiny-a" / "views"
    assert (views / "step-00000012" / "L1.vl.json.gz").is_file()
    assert sorted(p.name for p in (views / "thumbnails").iterdir()) == ["L0.json.gz", "L2.json.gz"]
