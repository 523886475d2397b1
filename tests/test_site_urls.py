"""Layer pages are named after their layers; the old ``L<i>`` URLs redirect to them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_site import _local_links, _resolves, tags, target
from test_site_material import Guarded, Server

from deepeyes_keras.site.runs import layer_slug

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
# tiny-a's analysed layers L0, L1, L2 renamed: a nested model's name, a name that is an old
# URL of another layer, and one that differs from the first only in case and punctuation.
RENAMED = {"conv1": "encoder/conv 1", "fc1": "L0", "out": "Encoder-Conv-1"}
SLUGS = {"L0": "encoder-conv-1", "L1": "L0-layer", "L2": "Encoder-Conv-1-2"}


def test_layer_slugs_are_safe_unique_and_free_of_reserved_names():
    names = [
        "conv1",
        "block1/conv",
        "block1-conv",
        "Block1/Conv",
        "a b/c:d?e#f",
        "<b>x</b>",
        "..",
        "",
        "卷积",
        "L3",
        "l12",
        "views",
        "INDEX",
        "x" * 3,
    ]
    taken: set[str] = set()
    slugs = [layer_slug(name, taken) for name in names]
    assert slugs[:2] == ["conv1", "block1-conv"]
    assert all(SAFE.match(s) and not s.startswith(".") for s in slugs), slugs
    lowered = [s.lower() for s in slugs]
    assert len(set(lowered)) == len(slugs), slugs  # unique even on a case-insensitive host
    assert not any(re.fullmatch(r"l\d+", s) or s in ("views", "index") for s in lowered)
    assert taken == set(lowered)
    # A run's slugs come from its layers' order alone, so URLs stay put between builds.
    again: set[str] = set()
    assert [layer_slug(name, again) for name in names] == slugs


def _rename_layers(run_dir: Path, names: dict[str, str]) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for layer in manifest["analysed_layers"] + manifest["model"]["layers"]:
        layer["name"] = names.get(layer["name"], layer["name"])
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def renamed_site(runs_copy, tmp_path, write_site, build_site, mkdocs_warnings):
    from deepeyes_keras.derive.findings import write_findings

    _rename_layers(runs_copy / "tiny-a", RENAMED)
    assert write_findings(runs_copy / "tiny-a") == 2  # findings name the renamed layers
    block = "```deepeyes\nrun: tiny-a\nlayer: encoder/conv 1\nstep: 6\n```\n"
    config = write_site(tmp_path, runs_copy, pages={"analysis.md": "# A\n\n" + block})
    site = build_site(config)
    assert mkdocs_warnings == []
    return site


def test_layer_pages_are_named_after_their_layers(renamed_site):
    run = renamed_site / "deepeyes" / "tiny-a"
    for key, slug in SLUGS.items():
        text = (run / slug / "index.html").read_text()
        name = RENAMED[{"L0": "conv1", "L1": "fc1", "L2": "out"}[key]]
        assert f"<h1>{name} " in text
        assert f"views/step-00000012/{key}.vl.json" in text  # its own layer's views
    # Every link to a layer page, everywhere, goes to the new names.
    pages = {
        "home": renamed_site / "deepeyes" / "index.html",
        "overview": run / "index.html",
        "nav": renamed_site / "index.html",
        "layer": run / "encoder-conv-1" / "index.html",
    }
    for where, page in pages.items():
        hrefs = {h.split("?")[0] for h in _local_links(page)}
        expected = {
            "home": {f"tiny-a/{s}/" for s in SLUGS.values()},
            "overview": {f"{s}/" for s in SLUGS.values()},
            "nav": {f"deepeyes/tiny-a/{s}/" for s in SLUGS.values()},
            "layer": {"../L0-layer/"},  # next layer
        }[where]
        assert expected <= hrefs, (where, hrefs)
        assert not any(re.search(r"(^|/)L\d+/$", h) for h in hrefs), (where, hrefs)
        assert all(_resolves(page, h) for h in hrefs), where
    # the findings table links each layer's name to its page (with the text and layer links)
    assert [a["href"] for a in tags(run / "index.html").find("a")].count("encoder-conv-1/") >= 3
    compare = renamed_site / "deepeyes" / "compare" / "index.html"
    (box,) = tags(compare).find(class_="deepeyes-compare")
    runs = {r["name"]: r for r in json.loads(box["data-runs"])}
    assert runs["tiny-a"]["layers"]["L0"]["page"] == "../tiny-a/L0-layer/"
    assert runs["tiny-a"]["layers"]["encoder/conv 1"]["page"] == "../tiny-a/encoder-conv-1/"
    analysis = renamed_site / "analysis" / "index.html"
    assert "../deepeyes/tiny-a/encoder-conv-1/?step=6" in _local_links(analysis)


def _redirect_target(page: Path) -> str:
    (found,) = re.findall(r'location\.replace\("([^"]+)" \+ location\.search', page.read_text())
    assert f'content="0; url={found}"' in page.read_text()  # the same without JavaScript
    return found


def test_old_layer_urls_redirect_to_the_named_pages(renamed_site):
    run = renamed_site / "deepeyes" / "tiny-a"
    for key, slug in SLUGS.items():
        old = run / key / "index.html"
        url = _redirect_target(old)
        assert url == f"../{slug}/"
        assert target(old, url) == (run / slug).resolve()
        assert (run / slug / "index.html").is_file()
    # Layers whose names are plain keep the old URLs as redirects too.
    assert _redirect_target(renamed_site / "deepeyes" / "tiny-b" / "L2" / "index.html") == "../out/"


def test_redirects_without_directory_urls(recorded_runs, tmp_path, write_site, build_site):
    config = write_site(tmp_path, recorded_runs)
    config.write_text(config.read_text() + "use_directory_urls: false\n")
    site = build_site(config)
    old = site / "deepeyes" / "tiny-a" / "L1.html"
    assert _redirect_target(old) == "fc1.html"
    assert (site / "deepeyes" / "tiny-a" / "fc1.html").is_file()
    assert not (site / "deepeyes" / "tiny-a" / "L1").exists()


def test_a_docs_file_at_an_old_url_is_left_alone(recorded_runs, tmp_path, write_site, build_site):
    page = "# My notes on L0\n"
    config = write_site(tmp_path, recorded_runs, pages={"deepeyes/tiny-a/L0.md": page})
    site = build_site(config)
    assert "My notes on L0" in (site / "deepeyes" / "tiny-a" / "L0" / "index.html").read_text()
    assert "location.replace" in (site / "deepeyes" / "tiny-a" / "L1" / "index.html").read_text()


def test_old_url_opens_the_layer_page_at_the_same_step_in_chromium(
    recorded_runs, tmp_path, write_site, build_site
):
    site = build_site(write_site(tmp_path, recorded_runs))
    server = Server(site)
    try:
        with chromium_page(server.url) as guarded:
            guarded.page.goto(server.url + "deepeyes/tiny-a/L0/?step=6#views")
            guarded.page.wait_for_url("**/deepeyes/tiny-a/conv1/?step=6#views")
            guarded.settle()
            (chart,) = guarded.charts()
            assert chart["state"] == "ready" and chart["drawn"]
            assert chart["loaded"].endswith("step-00000006/L0.vl.json.gz")
            assert guarded.foreign == [] and guarded.errors == []
    finally:
        server.close()


def chromium_page(origin: str):
    """A guarded page in a fresh headless Chromium (as the other browser tests launch it)."""
    import contextlib

    from _browser import CHROMIUM_FLAGS, chromium_or_reason
    from playwright.sync_api import sync_playwright

    @contextlib.contextmanager
    def opened():
        path, reason = chromium_or_reason()
        if path is None:
            pytest.skip(reason)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
            try:
                yield Guarded(browser.new_page(), origin)
            finally:
                browser.close()

    return opened()
