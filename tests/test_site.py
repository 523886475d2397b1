"""The deepeyes mkdocs plugin: fixture sites built from tiny real runs, without TensorFlow."""

import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mkdocs.exceptions import Abort

from deepeyes_keras.run.view_files import file_bytes, read_view
from deepeyes_keras.site import blocks

RUNS = ("tiny-a", "tiny-b")
LAYER_KEYS = ("L0", "L1", "L2")
LAYERS = ("conv1", "fc1", "out")  # their names: the layer pages' URLs
STEPS = (6, 12)


class Tags(HTMLParser):
    """Every start tag of a page as (tag, attrs), attribute values unescaped."""

    def __init__(self, text):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag=None, **attrs):
        return [
            a
            for t, a in self.tags
            if (tag is None or t == tag)
            and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]


def tags(path: Path) -> Tags:
    return Tags(path.read_text(encoding="utf-8"))


def target(page: Path, url: str) -> Path:
    """The file a URL relative to a built page points to."""
    return (page.parent / url.split("?")[0].split("#")[0]).resolve()


def spec_urls(page: Path) -> list[str]:
    parsed = tags(page)
    urls = [a["data-spec"] for a in parsed.find(class_="deepeyes-chart")]
    for select in parsed.find("select"):
        if "deepeyes-snapshot" in select.get("class", ""):
            urls += [a["value"] for a in parsed.find("option") if "data-step" in a]
    for compare in parsed.find(class_="deepeyes-compare"):
        for run in json.loads(compare["data-runs"]):
            urls += [run["overview"]] + [layer["spec"] for layer in run["layers"].values()]
    return urls


def html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.fixture
def site(recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings):
    config = write_site(tmp_path, recorded_runs)
    out = build_site(config)
    assert mkdocs_warnings == []
    return out


def test_generated_pages_exist(site):
    pages = {str(p.relative_to(site)) for p in (site / "deepeyes").rglob("*.html")}
    expected = {"deepeyes/index.html", "deepeyes/compare/index.html"}
    for run in RUNS:
        expected.add(f"deepeyes/{run}/index.html")
        expected |= {f"deepeyes/{run}/{name}/index.html" for name in LAYERS}
        expected |= {f"deepeyes/{run}/{key}/index.html" for key in LAYER_KEYS}  # redirects
    assert pages == expected
    for asset in ("vega.js", "viewer.js", "viewer.css"):
        assert (site / "deepeyes" / "assets" / asset).stat().st_size > 0
    bundle = (site / "deepeyes" / "assets" / "vega.js").read_text()
    assert "window.vegaEmbed=" in bundle and "https://cdn" not in bundle[-2000:]


def test_home_lists_runs_with_model_steps_and_status(site, recorded_runs):
    home = (site / "deepeyes" / "index.html").read_text()
    parsed = tags(site / "deepeyes" / "index.html")
    links = {a["href"] for a in parsed.find("a")}
    assert {"tiny-a/", "tiny-b/", "compare/", "tiny-a/conv1/", "tiny-b/out/"} <= links
    manifest = json.loads((recorded_runs / "tiny-a" / "manifest.json").read_text())
    assert f"{manifest['model']['parameters']:,}" in home
    assert manifest["model"]["name"] in home
    assert home.count("step 12") == 2 and home.count(">finished<") == 2


def test_run_page_has_status_curves_histograms_and_layer_links(site):
    page = site / "deepeyes" / "tiny-a" / "index.html"
    text = page.read_text()
    assert "finished — 2 snapshots, last at step 12" in text
    charts = [a["data-spec"] for a in tags(page).find(class_="deepeyes-chart")]
    assert charts == ["views/overview.vl.json", "views/histograms.vl.json"]
    links = {a["href"] for a in tags(page).find("a")}
    assert {"conv1/", "fc1/", "out/", "../"} <= links  # its layers, and back to the runs


def test_layer_page_has_snapshot_selector_of_every_step(site):
    page = site / "deepeyes" / "tiny-b" / "conv1" / "index.html"
    parsed = tags(page)
    options = [a for a in parsed.find("option") if "data-step" in a]
    assert [int(o["data-step"]) for o in options] == list(STEPS)
    assert [o["value"] for o in options] == [f"../views/step-{s:08d}/L0.vl.json.gz" for s in STEPS]
    assert "selected" in options[-1] and all("selected" not in o for o in options[:-1])
    (chart,) = parsed.find(class_="deepeyes-chart")
    assert chart["data-spec"] == options[-1]["value"]
    assert parsed.find("select")[0]["data-chart"] == chart["id"]
    assert "How to read this page" in page.read_text()


def test_every_spec_url_resolves_to_a_vega_lite_spec(site):
    seen = 0
    for page in html_pages(site):
        for url in spec_urls(page):
            path = target(page, url)
            assert path.is_file(), f"{page}: {url} does not resolve"
            assert site in path.parents
            spec = read_view(path)  # any form; the thumbnails it names are in the site too
            assert "/vega-lite/v6" in spec["$schema"], url
            seen += 1
    # 2 runs: overview + histograms + 3 layers x 2 steps, plus the compare page's index
    assert seen >= 2 * (2 + 3 * 2)


def _local_links(page: Path) -> list[str]:
    hrefs = [a.get("href") for a in tags(page).find("a")] + [
        a.get("page") for a in tags(page).find(class_="deepeyes-compare")
    ]
    return [h for h in hrefs if h and "//" not in h and not h.startswith(("#", "mailto:"))]


def _resolves(page: Path, url: str) -> bool:
    path = target(page, url)
    return path.is_file() or (path / "index.html").is_file()


def test_every_link_of_the_generated_pages_resolves(site):
    for page in sorted((site / "deepeyes").rglob("*.html")):
        links = _local_links(page)
        assert links, page
        for url in links:
            assert _resolves(page, url), f"{page}: {url}"
    compare = site / "deepeyes" / "compare" / "index.html"
    for run in json.loads(tags(compare).find(class_="deepeyes-compare")[0]["data-runs"]):
        assert _resolves(compare, run["page"])
        assert all(_resolves(compare, layer["page"]) for layer in run["layers"].values())


def test_site_without_directory_urls(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    config = write_site(tmp_path, recorded_runs)
    config.write_text(config.read_text() + "use_directory_urls: false\n")
    site = build_site(config)
    assert mkdocs_warnings == []
    layer_page = site / "deepeyes" / "tiny-a" / "conv1.html"
    assert [target(layer_page, u).is_file() for u in spec_urls(layer_page)] == [True] * 3
    for page in (site / "deepeyes").rglob("*.html"):
        assert all(target(page, u).is_file() for u in spec_urls(page)), page
        assert all(target(page, u).is_file() for u in _local_links(page)), page


def test_specs_are_copied_not_inlined(site, recorded_runs):
    page = site / "deepeyes" / "tiny-a" / "conv1" / "index.html"
    spec = recorded_runs / "tiny-a" / "views" / "step-00000012" / "L0.vl.json.gz"
    assert (
        site / "deepeyes" / "tiny-a" / "views" / "step-00000012" / "L0.vl.json.gz"
    ).read_bytes() == spec.read_bytes()
    assert page.stat().st_size < len(file_bytes(spec))  # the page loads its data by URL


def test_navigation_has_a_deepeyes_section(site):
    links = {a.get("href") for a in tags(site / "index.html").find("a")}
    assert {"deepeyes/", "deepeyes/compare/", "deepeyes/tiny-a/", "deepeyes/tiny-a/fc1/"} <= links


def test_scripts_come_from_the_site_itself(site):
    for page in html_pages(site):
        for script in tags(page).find("script"):
            src = script.get("src")
            assert src is None or "//" not in src, f"{page} loads {src}"
        for link in tags(page).find("link"):
            assert "//" not in link.get("href", ""), f"{page} loads {link['href']}"


def test_compare_page_offers_both_runs(site):
    page = site / "deepeyes" / "compare" / "index.html"
    parsed = tags(page)
    (compare,) = parsed.find(class_="deepeyes-compare")
    runs = json.loads(compare["data-runs"])
    assert {r["name"] for r in runs} == set(RUNS)
    for run in runs:
        assert set(run["layers"]) == {"conv1", "fc1", "out"}
        assert all(layer["step"] == 12 for layer in run["layers"].values())
    assert {compare["data-default-a"], compare["data-default-b"]} == set(RUNS)


@pytest.mark.parametrize("damage", ["truncated", "newer_schema", "missing_arrays"])
def test_unreadable_snapshot_is_skipped_with_a_warning_naming_it(
    damage, runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    record = runs_copy / "tiny-a" / "snapshots" / "step-00000006.json"
    if damage == "truncated":
        text = record.read_text()
        record.write_text(text[: len(text) // 2])
    elif damage == "newer_schema":
        data = json.loads(record.read_text())
        data["schema_version"] = 99
        record.write_text(json.dumps(data))
    else:
        record.with_suffix(".npz").unlink()
    config = write_site(tmp_path, runs_copy)
    site = build_site(config)
    assert any(str(record) in m for m in mkdocs_warnings), mkdocs_warnings
    layer_page = site / "deepeyes" / "tiny-a" / "conv1" / "index.html"
    steps = [int(a["data-step"]) for a in tags(layer_page).find("option") if "data-step" in a]
    assert steps == [12]
    assert not (site / "deepeyes" / "tiny-a" / "views" / "step-00000006").exists()
    assert "step-00000006.json" in (site / "deepeyes" / "tiny-a" / "index.html").read_text()
    with pytest.raises(Abort):
        build_site(config, strict=True)


def test_strict_cli_build_fails_on_a_corrupt_snapshot(runs_copy, tmp_path, write_site):
    record = runs_copy / "tiny-b" / "snapshots" / "step-00000006.json"
    record.write_text(record.read_text()[:40])
    config = write_site(tmp_path, runs_copy)
    # (not -q: mkdocs drops warnings below its log level before counting them for --strict)
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert str(record) in done.stderr


def _rename(run_dir: Path, run_name: str, layer_from: str, layer_to: str, model: str) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["run_name"] = run_name
    manifest["model"]["name"] = model
    for layer in manifest["analysed_layers"] + manifest["model"]["layers"]:
        if layer["name"] == layer_from:
            layer["name"] = layer_to
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


MARKUP_LAYER = "<b>x</b>"
MARKUP_RUN = '<i>run</i> & "q" </script>'
MARKUP_MODEL = "<script>alert(1)</script>"


def test_names_with_markup_render_as_text(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    _rename(runs_copy / "tiny-a", MARKUP_RUN, "conv1", MARKUP_LAYER, MARKUP_MODEL)
    block = f"```deepeyes\nrun: {MARKUP_RUN}\nlayer: {MARKUP_LAYER}\n```\n"
    config = write_site(tmp_path, runs_copy, pages={"analysis.md": "# Analysis\n\n" + block})
    site = build_site(config)
    assert mkdocs_warnings == []
    pages = html_pages(site)
    for page in pages:
        text = page.read_text()
        for raw in (MARKUP_LAYER, MARKUP_MODEL, "<i>run</i>"):
            assert raw not in text, f"{raw} unescaped in {page}"
    layer_page = site / "deepeyes" / "tiny-a" / "b-x-b" / "index.html"  # the name's slug
    text = layer_page.read_text()
    assert "<h1>&lt;b&gt;x&lt;/b&gt; " in text
    assert "<title>&lt;b&gt;x&lt;/b&gt; - fixture</title>" in text
    home = (site / "deepeyes" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home
    assert "&lt;i&gt;run&lt;/i&gt; &amp; &quot;q&quot; &lt;/script&gt;" in home
    # JSON in data attributes decodes to the exact names
    (compare,) = tags(site / "deepeyes" / "compare" / "index.html").find(class_="deepeyes-compare")
    runs = {r["name"]: r for r in json.loads(compare["data-runs"])}
    assert MARKUP_LAYER in runs[MARKUP_RUN]["layers"]
    # the slug of such a run is a safe path
    assert runs[MARKUP_RUN]["page"] == "../tiny-a/"
    analysis = tags(site / "analysis" / "index.html")
    (chart,) = analysis.find(class_="deepeyes-chart")
    assert chart["aria-label"] == f"{MARKUP_RUN} › {MARKUP_LAYER}, step 12"


WIKI_PAGE = textwrap.dedent(
    """
    # An analysis

    conv1 at step 8 (the nearest snapshot is 6):

    ```deepeyes
    run: tiny-a
    view: layer        # or overview, histograms
    layer: conv1
    step: 8
    ```

    ~~~deepeyes
    run: tiny-b
    view: histograms
    step: 7
    ~~~

    - In a list:

        ```deepeyes
        run: tiny-b
        view: overview
        ```

    The syntax, shown as code (not rendered):

    ````markdown
    ```deepeyes
    run: nowhere
    ```
    ````
    """
)


def test_wiki_block_embeds_live_charts(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    config = write_site(tmp_path, recorded_runs, pages={"notes/analysis.md": WIKI_PAGE})
    site = build_site(config)
    assert mkdocs_warnings == []
    page = site / "notes" / "analysis" / "index.html"
    charts = tags(page).find(class_="deepeyes-chart")
    assert [target(page, c["data-spec"]) for c in charts] == [
        site / "deepeyes" / "tiny-a" / "views" / "step-00000006" / "L0.vl.json.gz",
        site / "deepeyes" / "tiny-b" / "views" / "histograms.vl.json",
        site / "deepeyes" / "tiny-b" / "views" / "overview.vl.json",
    ]
    assert [c.get("data-snapshot") for c in charts] == [None, "6", None]
    text = page.read_text()
    assert "tiny-a › conv1, step 6 (nearest snapshot to step 8)" in text
    assert "run: nowhere" in text  # the block inside a code block stays code
    links = {a["href"] for a in tags(page).find("a")}
    assert "../../deepeyes/tiny-a/conv1/?step=6" in links


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "run: tiny-a\nlayer: convl",
            "unknown layer 'convl' in run 'tiny-a' (did you mean 'conv1'?).",
        ),
        ("run: tiny-c\nview: overview", "unknown run 'tiny-c' (did you mean"),
        ("run: tiny-a\nview: heatmap", "unknown view 'heatmap'"),
        ("run: tiny-a\nlayer: conv1\nstep: last", "invalid step 'last'"),
        ("run: tiny-a\nlayers: conv1", "unknown key 'layers'"),
        ("view: overview", "no run given"),
    ],
)
def test_wiki_block_errors_warn_and_show_a_box(
    block, message, recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    config = write_site(
        tmp_path, recorded_runs, pages={"bad.md": f"# Bad\n\n```deepeyes\n{block}\n```\n"}
    )
    site = build_site(config)
    assert len(mkdocs_warnings) == 1 and "bad.md" in mkdocs_warnings[0]
    assert message in mkdocs_warnings[0]
    page = site / "bad" / "index.html"
    (box,) = tags(page).find(class_="deepeyes-error")
    assert box["role"] == "alert"
    assert tags(page).find(class_="deepeyes-chart") == []


def test_wiki_block_if_missing_shows_a_quiet_note_for_an_absent_run(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    missing = "run: tiny-c\nif-missing: Make this run with make_runs.py first.\n"
    present = "run: tiny-b\nview: overview\nif-missing: never shown\n"
    typo_layer = "run: tiny-a\nlayer: convl\nif-missing: not for a bad layer\n"
    body = "".join(f"```deepeyes\n{b}```\n\n" for b in (missing, present, typo_layer))
    config = write_site(tmp_path, recorded_runs, pages={"case.md": f"# Case\n\n{body}"})
    site = build_site(config)
    # Only the bad layer warns: `if-missing` covers an absent run, nothing else.
    assert len(mkdocs_warnings) == 1 and "unknown layer 'convl'" in mkdocs_warnings[0]
    page = site / "case" / "index.html"
    assert len(tags(page).find(class_="deepeyes-notice")) == 1
    assert '<div class="deepeyes-notice">Make this run with make_runs.py first.</div>' in (
        page.read_text()
    )
    assert "never shown" not in page.read_text()
    assert len(tags(page).find(class_="deepeyes-chart")) == 1
    assert len(tags(page).find(class_="deepeyes-error")) == 1


def test_run_without_views_says_they_are_being_computed(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    shutil.rmtree(runs_copy / "tiny-b" / "views")
    site = build_site(write_site(tmp_path, runs_copy))
    assert mkdocs_warnings == []
    run_page = site / "deepeyes" / "tiny-b" / "index.html"
    layer_page = site / "deepeyes" / "tiny-b" / "fc1" / "index.html"
    assert tags(run_page).find(class_="deepeyes-chart") == []
    assert tags(layer_page).find(class_="deepeyes-chart") == []
    assert "being computed" in run_page.read_text()
    assert "are being computed" in layer_page.read_text()


def test_run_without_snapshots_yet(runs_copy, tmp_path, write_site, build_site, mkdocs_warnings):
    manifest_path = runs_copy / "tiny-a" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="training", snapshots=[], last_step=0)
    manifest_path.write_text(json.dumps(manifest))
    site = build_site(write_site(tmp_path, runs_copy))
    assert mkdocs_warnings == []
    run_page = site / "deepeyes" / "tiny-a" / "index.html"
    assert "training — no snapshot yet" in run_page.read_text()
    assert tags(run_page).find(class_="deepeyes-chart") == []
    assert "no snapshot yet" in (site / "deepeyes" / "tiny-a" / "conv1" / "index.html").read_text()


@pytest.mark.parametrize("damage", ["corrupt", "newer_schema"])
def test_unreadable_manifest_skips_the_run_with_a_warning(
    damage, runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    manifest_path = runs_copy / "tiny-a" / "manifest.json"
    if damage == "corrupt":
        manifest_path.write_text(manifest_path.read_text()[:100])
    else:
        manifest = json.loads(manifest_path.read_text())
        manifest["schema_version"] = 99
        manifest_path.write_text(json.dumps(manifest))
    site = build_site(write_site(tmp_path, runs_copy))
    assert len(mkdocs_warnings) == 1 and str(runs_copy / "tiny-a") in mkdocs_warnings[0]
    assert not (site / "deepeyes" / "tiny-a").exists()
    assert (site / "deepeyes" / "tiny-b" / "conv1" / "index.html").is_file()


def test_training_run_shows_its_last_snapshot(runs_copy, tmp_path, write_site, build_site):
    manifest_path = runs_copy / "tiny-a" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["status"] = "training"
    manifest_path.write_text(json.dumps(manifest))
    site = build_site(write_site(tmp_path, runs_copy))
    for page in ("index.html", "out/index.html"):
        text = (site / "deepeyes" / "tiny-a" / page).read_text()
        assert "training — last snapshot at step 12" in text
    assert "training (step 12)" in (site / "deepeyes" / "index.html").read_text()


FINDINGS = {
    "step": 12,
    "thresholds": {"redundancy_jaccard": 0.8},
    "layers": {
        "conv1": {
            "layer": "conv1",
            "kind": "conv2d",
            "n_filters": 4,
            "step": 12,
            "T1": {"stable": True, "stable_since_step": 6},
            "T2": {"dead": [1, 3], "always_on": []},
            "T3": {"undetected_share": 0.25},
            "T4": {"redundant_groups": [[0, 2]], "suggested_width": 1, "oversized": True},
        },
        "fc1": {
            "layer": "fc1",
            "kind": "dense",
            "n_filters": 8,
            "step": 12,
            "T1": {"stable": False},
            "T2": {"dead": [], "always_on": [5]},
            "T3": {"undetected_share": 0.0},
            "T4": {"redundant_groups": [], "suggested_width": 8, "oversized": False},
            "T5": {"accuracy": 0.5, "chance": 0.4},
        },
    },
    "suggestions": [{"task": "T5", "layer": "fc1", "text": "more <capacity> may be needed"}],
    "suggested_widths": {"conv1": 1},
}


def test_findings_of_the_latest_snapshot_are_summarised(
    runs_copy, tmp_path, write_site, build_site
):
    findings_path = runs_copy / "tiny-a" / "findings" / "step-00000012.json"
    findings_path.parent.mkdir()
    findings_path.write_text(json.dumps({"findings": FINDINGS, "summary": None}))
    site = build_site(write_site(tmp_path, runs_copy))
    run_page = (site / "deepeyes" / "tiny-a" / "index.html").read_text()
    assert "<h2>Findings</h2>" in run_page
    assert "stable since step 6" in run_page and "2 (1, 3)" in run_page and "25.0%" in run_page
    assert "4 → 1" in run_page and "k-NN 0.500 (chance 0.400)" in run_page
    assert "more &lt;capacity&gt; may be needed" in run_page
    conv1 = (site / "deepeyes" / "tiny-a" / "conv1" / "index.html").read_text()
    assert "stable since step 6" in conv1 and "not yet stable" not in conv1
    assert (
        "<h2>Findings</h2>" not in (site / "deepeyes" / "tiny-a" / "out" / "index.html").read_text()
    )
    assert "<h2>Findings</h2>" not in (site / "deepeyes" / "tiny-b" / "index.html").read_text()


def test_findings_written_by_the_findings_stage_are_shown(
    runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    from deepeyes_keras.derive.findings import write_findings

    assert write_findings(runs_copy / "tiny-b") == len(STEPS)
    site = build_site(write_site(tmp_path, runs_copy))
    assert mkdocs_warnings == []
    run_page = site / "deepeyes" / "tiny-b" / "index.html"
    text = run_page.read_text()
    assert "<h2>Findings</h2>" in text and "Findings at step 12" in text
    rows = [a["href"] for a in tags(run_page).find("a") if a["href"] in ("conv1/", "fc1/", "out/")]
    assert rows.count("conv1/") >= 3  # layer pages linked from the text, the findings and layers
    for name in LAYERS:
        assert (
            "<h2>Findings</h2>" in (site / "deepeyes" / "tiny-b" / name / "index.html").read_text()
        )


def test_no_runs_yet(tmp_path, write_site, build_site, mkdocs_warnings):
    site = build_site(write_site(tmp_path, tmp_path / "not-yet"))
    assert mkdocs_warnings == []
    assert "No runs found in" in (site / "deepeyes" / "index.html").read_text()
    assert "needs at least two runs" in (site / "deepeyes" / "compare" / "index.html").read_text()


def test_run_list_and_section_options(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    options = (
        f"run_list: ['{recorded_runs / 'tiny-b'}', '{tmp_path / 'missing'}']\n"
        "section: analysis/runs\n"
    )
    site = build_site(write_site(tmp_path, recorded_runs, options=options))
    assert len(mkdocs_warnings) == 1 and "missing" in mkdocs_warnings[0]
    assert (site / "analysis" / "runs" / "tiny-b" / "conv1" / "index.html").is_file()
    assert not (site / "analysis" / "runs" / "tiny-a").exists()
    assert (site / "analysis" / "runs" / "assets" / "vega.js").is_file()


def test_runs_option_takes_several_directories(
    recorded_runs, runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    more = tmp_path / "more"
    more.mkdir()
    (runs_copy / "tiny-b").rename(more / "tiny-c")  # a second directory of runs
    config = write_site(tmp_path, runs_copy)
    text = config.read_text().replace(f"runs: {runs_copy}", f"runs: ['{more}', '{recorded_runs}']")
    config.write_text(text)
    site = build_site(config)
    assert mkdocs_warnings == []
    built = {
        p.name for p in (site / "deepeyes").iterdir() if (p / "conv1" / "index.html").is_file()
    }
    assert built == {"tiny-a", "tiny-b", "tiny-c"}


def test_disabled_plugin_generates_nothing(recorded_runs, tmp_path, write_site, build_site):
    site = build_site(write_site(tmp_path, recorded_runs, options="enabled: false\n"))
    assert not (site / "deepeyes").exists()


def test_invalid_section_is_refused(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    with pytest.raises(Abort):
        build_site(write_site(tmp_path, recorded_runs, options="section: '../up'\n"))
    assert any(
        "Invalid value for the deepeyes option section. Received: '../up'" in m
        for m in mkdocs_warnings
    )


def test_building_imports_no_tensorflow(recorded_runs, tmp_path, write_site):
    config = write_site(tmp_path, recorded_runs)
    script = textwrap.dedent(
        f"""
        import sys
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
        build(load_config(config_file={str(config)!r}))
        heavy = sorted(m for m in ("tensorflow", "keras", "altair") if m in sys.modules)
        print("IMPORTED", heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout
    assert (tmp_path / "site" / "deepeyes" / "tiny-a" / "conv1" / "index.html").is_file()


def test_fenced_blocks_inside_other_code_blocks_are_left_alone():
    text = "````\n```deepeyes\nrun: a\n```\n````\n\n```deepeyes\nrun: b\n```\n\n```python\nx\n```"
    seen = []
    out = blocks.replace_blocks(text, lambda body: seen.append(body) or "TOKEN")
    assert seen == ["run: b"]
    assert out.startswith("````\n```deepeyes\nrun: a\n```\n````") and "TOKEN" in out
    assert out.endswith("```python\nx\n```")


def test_block_options_ignore_comments():
    assert blocks.parse_block("run: a#1  # the run\n\n# note\nstep: 3") == {
        "run": "a#1",
        "step": "3",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode("utf-8")


def test_serve_shows_runs_written_while_it_runs(recorded_runs, tmp_path, write_site):
    runs = tmp_path / "live"  # does not exist yet: serve creates it to watch it
    config = write_site(tmp_path, runs)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "serve",
            "-q",
            "-f",
            str(config),
            "-a",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        home = f"http://127.0.0.1:{port}/deepeyes/"
        deadline = time.monotonic() + 60
        while True:
            try:
                text = _get(home)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
                time.sleep(0.3)
        assert "No runs found" in text
        shutil.copytree(recorded_runs / "tiny-a", runs / "tiny-a")
        while "tiny-a/conv1/" not in text:
            assert time.monotonic() < deadline, "the new run did not appear"
            time.sleep(0.5)
            text = _get(home)
        assert "step 12" in _get(f"http://127.0.0.1:{port}/deepeyes/tiny-a/")
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_runs_home_leads_to_the_sites_other_pages(
    recorded_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    pages = {"guide/viewer.md": "# The viewer\n", "case-studies/mnist.md": "# MNIST\n"}
    site = build_site(write_site(tmp_path, recorded_runs, pages=pages))
    assert mkdocs_warnings == []
    home = site / "deepeyes" / "index.html"
    (line,) = re.findall(r'<p class="deepeyes-site-links">(.*?)</p>', home.read_text())
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', line)
    # the site's top-level entries in nav order, to each one's first page; not the runs again
    assert links == [
        ("../", "Home"),
        ("../case-studies/mnist/", "Case studies"),  # mkdocs' own nav: folders by name
        ("../guide/viewer/", "Guide"),
    ]
    assert all(_resolves(home, href) for href, _ in links)


def test_compare_page_with_one_run_says_how_to_get_a_second(
    recorded_runs, tmp_path, write_site, build_site
):
    config = write_site(
        tmp_path, recorded_runs, options=f"run_list: [{recorded_runs / 'tiny-a'}]\n"
    )
    text = (build_site(config) / "deepeyes" / "compare" / "index.html").read_text()
    assert "Comparing needs at least two runs; this site has one, <strong>tiny-a</strong>" in text
    assert "deepeyes demo --seed 1" in text and "DeepEyesCallback(log_dir=" in text
    assert (
        "tiny-a" in re.findall(r"the directory this site reads its runs from \(([^)]*)\)", text)[0]
    )
    assert 'class="deepeyes-compare"' not in text  # no pickers with a single run


def test_project_home_page_leads_to_runs_guide_and_case_studies(tmp_path):
    from test_docs import build_docs

    build_docs(tmp_path, published=True)  # the project's own site, --strict, no runs
    site = tmp_path / "site"
    home = site / "index.html"
    hrefs = set(_local_links(home))
    assert {"deepeyes/", "deepeyes/compare/", "guide/viewer/", "case-studies/mnist-lenet/"} <= hrefs
    assert all(_resolves(home, h) for h in hrefs)
    runs_home = (site / "deepeyes" / "index.html").read_text()
    (line,) = re.findall(r'<p class="deepeyes-site-links">(.*?)</p>', runs_home)
    assert re.findall(r">([^<]+)</a>", line) == ["Home", "Guide", "Case studies", "Reference"]


def test_material_offline_options_of_the_plugin():
    from deepeyes_keras.site.plugin import is_remote

    assert [is_remote(u) for u in ("https://unpkg.com/x", "//cdn.x/y", "HTTP://a", "a/b.js")] == [
        True,
        True,
        True,
        False,
    ]
