"""The DeepEyes pages under mkdocs-material (offline plugin, navigation.instant) in Chromium.

Every request to another host is recorded and refused; a test fails on any. The same site built
with the deepeyes option ``offline: false`` shows that the check can fail: material then asks
Google Fonts and unpkg.com.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _browser import Server, Watched

pytest.importorskip("material", reason="mkdocs-material is in the dev extra: pip install -e .[dev]")

LAYER_CHART = "deepeyes-layer-chart"
Guarded = Watched  # tests/test_site_urls.py imports the page (and Server) from here


def material_config(root: Path, runs: Path, site_url: str, *, offline: bool) -> Path:
    """mkdocs.yml of a material site with the offline plugin and instant navigation."""
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "docs" / "index.md").write_text("# Fixture site\n")
    config = root / "mkdocs.yml"
    option = "" if offline else "      offline: false\n"
    config.write_text(
        f"site_name: fixture\nsite_url: {site_url}\ndocs_dir: docs\nsite_dir: site\n"
        "theme:\n  name: material\n  features: [navigation.instant]\n"
        f"plugins:\n  - search\n  - offline\n  - deepeyes:\n      runs: {runs}\n{option}"
    )
    return config


@contextlib.contextmanager
def material_site(runs: Path, root: Path, *, offline: bool = True):
    """Builds and serves a material site of ``runs``; yields its URL and directory."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    server = Server(root / "site")
    try:
        build(
            load_config(config_file=str(material_config(root, runs, server.url, offline=offline)))
        )
        yield server.url, root / "site"
    finally:
        server.close()


@pytest.fixture(scope="module")
def built(recorded_runs, tmp_path_factory):
    """(URL, directory) of the material site of the recorded runs."""
    with material_site(recorded_runs, tmp_path_factory.mktemp("material_site")) as served:
        yield served


@pytest.fixture(scope="module")
def site_url(built):
    return built[0]


@pytest.fixture
def guarded(browser, site_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield Watched(context.new_page(), site_url)
    context.close()


def all_drawn(charts: list[dict], n: int) -> bool:
    return len(charts) == n and all(c["state"] == "ready" and c["drawn"] for c in charts)


@pytest.mark.parametrize(
    ("path", "n_charts"),
    [("deepeyes/tiny-a/index.html", 2), ("deepeyes/tiny-a/conv1.html", 1), ("index.html", 0)],
)
def test_material_pages_render_and_request_nothing_from_another_host(guarded, path, n_charts):
    guarded.open(path)
    assert guarded.page.evaluate("() => typeof window.document$") == "object"  # material's
    assert all_drawn(guarded.charts(), n_charts), guarded.charts()
    assert guarded.foreign == []
    assert guarded.errors == []


def test_instant_navigation_starts_the_charts_of_each_page(guarded):
    guarded.open("deepeyes/tiny-a/index.html")
    # A reload would drop this: it shows the next pages come by instant navigation.
    guarded.page.evaluate("() => { window.deepeyesMarker = 'kept'; }")
    # "Layer pages: conv1 · fc1 · out" (material makes the links absolute for instant loading)
    guarded.page.click("article p a[href$='/deepeyes/tiny-a/conv1.html']")
    guarded.page.wait_for_url("**/deepeyes/tiny-a/conv1.html")
    # Material changes the URL before it swaps the page in: wait for the layer's own chart.
    guarded.page.wait_for_function(
        f"() => (document.getElementById('{LAYER_CHART}') || {{dataset: {{}}}}).dataset.state"
        " === 'ready'",
        timeout=60_000,
    )
    guarded.settle()
    assert guarded.page.evaluate("() => window.deepeyesMarker") == "kept"
    assert all_drawn(guarded.charts(), 1), guarded.charts()
    # The overview's two views were finalized with their page; the layer's started once.
    views = guarded.page.evaluate("() => Object.keys(window.deepeyes.views)")
    assert views == [LAYER_CHART]
    # (a view file may be gzipped: .vl.json.gz)
    specs = [s.removesuffix(".gz") for s in guarded.specs()]
    assert specs.count("/deepeyes/tiny-a/views/step-00000012/L0.vl.json") == 1

    # The snapshot selector of an instant-loaded page works, and ?step=N of a link is read.
    guarded.page.select_option("select.deepeyes-snapshot", label="step 6")
    guarded.page.wait_for_function(
        f"() => document.getElementById('{LAYER_CHART}').dataset.loaded.includes('step-00000006')"
    )
    guarded.settle()
    guarded.page.evaluate(
        "() => { const a = document.createElement('a'); a.id = 'to-fc1'; a.textContent = 'fc1';"
        " a.href = 'fc1.html?step=6'; document.querySelector('article').appendChild(a); }"
    )
    guarded.page.click("#to-fc1")
    guarded.page.wait_for_url("**/deepeyes/tiny-a/fc1.html?step=6")
    guarded.page.wait_for_function(
        f"() => (document.getElementById('{LAYER_CHART}').dataset.loaded || '')"
        ".includes('step-00000006/L1.vl.json')",
        timeout=60_000,
    )
    guarded.settle()
    assert guarded.page.evaluate("() => window.deepeyesMarker") == "kept"
    assert all_drawn(guarded.charts(), 1), guarded.charts()
    assert "step-00000006/L1.vl.json" in guarded.page.eval_on_selector(
        "select.deepeyes-snapshot", "s => s.value"
    )
    assert not any("step-00000012/L1" in s for s in guarded.specs())
    assert guarded.foreign == [] and guarded.errors == []


def test_the_plugin_keeps_material_offline(built):
    site = built[1]
    page = (site / "deepeyes" / "tiny-a" / "conv1.html").read_text()
    assert "fonts.googleapis.com" not in page and "unpkg.com" not in page
    assert 'src="../../assets/javascripts/bundle.' in page  # material's script, from the site


def test_without_the_offline_option_material_asks_other_hosts(
    browser, recorded_runs, tmp_path_factory
):
    # The control: what the default offline option prevents (and that the guard catches it).
    with material_site(
        recorded_runs, tmp_path_factory.mktemp("material_online"), offline=False
    ) as (url, _):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            guarded = Watched(context.new_page(), url)
            guarded.open("deepeyes/tiny-a/conv1.html")
            hosts = {urlsplit(u).hostname for u in guarded.foreign}
            assert {"fonts.googleapis.com", "unpkg.com"} <= hosts, guarded.foreign
        finally:
            context.close()
