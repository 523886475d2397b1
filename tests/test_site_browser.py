"""The built site in headless Chromium: charts render, link, switch snapshots, stay on the origin;
layer views are decompressed and drawn with the thumbnails their layer's views share.

Needs Debian's ``chromium`` (driven by playwright with the flags below). If it is missing the
tests try ``apt-get install chromium`` (as root) and are skipped only when that fails too.
"""

import contextlib
import functools
import http.server
import json
import shutil
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from _browser import CHROMIUM_FLAGS, chromium_or_reason
from playwright.sync_api import sync_playwright

LAYER_CHART = "deepeyes-layer-chart"
WIKI = textwrap.dedent(
    """
    # Analysis

    ```deepeyes
    run: tiny-a
    layer: fc1
    step: 9
    ```

    ```deepeyes
    run: tiny-b
    view: histograms
    step: 6
    ```

    ```deepeyes
    run: tiny-b
    view: overview
    ```
    """
)
# A spec that asks for data and an image from elsewhere: the viewer must refuse both.
FOREIGN_SPEC = """{"$schema": "https://vega.github.io/schema/vega-lite/v6.4.1.json", "layer": [
 {"data": {"url": "http://198.51.100.7/data.json"}, "mark": "point"},
 {"data": {"values": [{"u": "http://198.51.100.7/image.png"}]},
  "mark": {"type": "image", "width": 10, "height": 10}, "encoding": {"url": {"field": "u"}}}]}"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(reason)
    return path


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Decoding(Quiet):
    """Sends ``.gz`` files with ``Content-Encoding: gzip``, as some servers do: the browser
    decodes them before the page script sees them."""

    def end_headers(self):
        if self.path.split("?")[0].endswith(".gz"):
            self.send_header("Content-Encoding", "gzip")
        super().end_headers()


@contextlib.contextmanager
def serving(site: Path, handler=Quiet):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def built_site(recorded_runs, tmp_path_factory) -> Path:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    from deepeyes_keras.run.view_files import read_view

    root = tmp_path_factory.mktemp("browser_site")
    (root / "docs").mkdir()
    (root / "docs" / "index.md").write_text("# Fixture site\n")
    (root / "docs" / "analysis.md").write_text(WIKI)
    (root / "mkdocs.yml").write_text(
        "site_name: fixture\ndocs_dir: docs\nsite_dir: site\n"
        "theme:\n  name: mkdocs\n  highlightjs: false\n"
        f"plugins:\n  - search\n  - deepeyes:\n      runs: {recorded_runs}\n"
    )
    config = load_config(config_file=str(root / "mkdocs.yml"))
    build(config)
    site = Path(config.site_dir)
    (site / "foreign.vl.json").write_text(FOREIGN_SPEC)
    # A view as older runs hold them (plain JSON, thumbnails inline), and a compressed view
    # whose thumbnails file is not where it says (../thumbnails/L0.json.gz from orphan/).
    view = site / "deepeyes" / "tiny-a" / "views" / "step-00000006" / "L0.vl.json.gz"
    (site / "old-form.vl.json").write_text(json.dumps(read_view(view)))
    (site / "orphan").mkdir()
    shutil.copy(view, site / "orphan" / "L0.vl.json.gz")
    return site


@pytest.fixture(scope="module")
def site_url(built_site):
    with serving(built_site) as url:
        yield url


@pytest.fixture(scope="module")
def browser(chromium):
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


class Watched:
    """A page with what it logged and requested."""

    def __init__(self, page, origin):
        self.page, self.origin = page, origin
        self.errors: list[str] = []
        self.console: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        # Nothing may leave the origin; should anything try, it is recorded, then refused here.
        page.route(lambda url: not self.same_origin(url), lambda route: route.abort())

    def _console(self, message) -> None:
        self.console.append(message.text)
        if message.type == "error":
            self.errors.append(message.text)

    def same_origin(self, url: str) -> bool:
        return url.startswith("data:") or url.startswith(self.origin)

    def open(self, path: str) -> None:
        self.page.goto(self.origin + path)
        self.settle()

    def settle(self) -> None:
        self.page.wait_for_function(
            "() => window.deepeyes && window.deepeyes.started && [...document.querySelectorAll("
            "'.deepeyes-chart')].every(e => ['ready', 'error'].includes(e.dataset.state))",
            timeout=60_000,
        )

    def charts(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            ".deepeyes-chart",
            "els => els.map(e => ({id: e.id, state: e.dataset.state, loaded: e.dataset.loaded,"
            " drawn: !!e.querySelector('canvas, svg')}))",
        )

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not self.same_origin(u)]


@pytest.fixture
def watched(browser, site_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield Watched(page, site_url)
    context.close()


PAGES = {
    "deepeyes/": 0,
    "deepeyes/compare/": 2 + 2 * 3,  # two overviews, then three shared layers side by side
    "deepeyes/tiny-a/": 2,
    "deepeyes/tiny-b/": 2,
    **{f"deepeyes/tiny-{r}/{name}/": 1 for r in "ab" for name in ("conv1", "fc1", "out")},
    "analysis/": 3,
}


@pytest.mark.parametrize("path", sorted(PAGES))
def test_every_page_renders_its_charts(path, watched):
    watched.open(path)
    charts = watched.charts()
    assert len(charts) == PAGES[path]
    assert all(c["state"] == "ready" and c["drawn"] for c in charts), charts
    assert watched.errors == []
    assert watched.foreign_requests() == []


def test_layer_page_loads_only_the_snapshot_it_shows(watched):
    watched.open("deepeyes/tiny-a/conv1/")
    specs = [u for u in watched.requests if u.endswith((".vl.json", ".vl.json.gz"))]
    assert [urlsplit(u).path for u in specs] == [
        "/deepeyes/tiny-a/views/step-00000012/L0.vl.json.gz"
    ]


def _layer_title(watched) -> str:
    return watched.page.evaluate(
        f"""() => {{
        const view = window.deepeyes.views["{LAYER_CHART}"];
        const texts = [];
        (function walk(mark) {{
            for (const item of mark.items || []) {{
                if (mark.marktype === "text" && mark.role === "title-text") texts.push(item.text);
                for (const child of item.items || []) walk(child);
            }}
        }})(view.scenegraph().root);
        return texts.flat().join(" | ");
    }}"""
    )


def test_snapshot_selector_rerenders_with_that_steps_spec(watched):
    watched.open("deepeyes/tiny-b/conv1/")
    assert watched.charts()[0]["loaded"].endswith("step-00000012/L0.vl.json.gz")
    assert "conv1, step 12" in _layer_title(watched)
    signal = f"() => window.deepeyes.views['{LAYER_CHART}'].signal('overlay')"
    watched.page.check(f"#{LAYER_CHART} .vega-bind input[type=radio][value='label']")
    assert watched.page.evaluate(signal) == "label"
    watched.page.select_option("select.deepeyes-snapshot", label="step 6")
    watched.page.wait_for_function(
        f"() => document.getElementById('{LAYER_CHART}').dataset.loaded.includes('step-00000006')"
    )
    watched.settle()
    (chart,) = watched.charts()
    assert chart["state"] == "ready" and chart["drawn"]
    assert "conv1, step 6" in _layer_title(watched)
    assert watched.page.evaluate(signal) == "label"  # the reader's choice survives the switch
    assert watched.page.url.endswith("/deepeyes/tiny-b/conv1/?step=6")
    assert watched.errors == [] and watched.foreign_requests() == []


def test_step_in_the_url_picks_the_snapshot(watched):
    watched.open("deepeyes/tiny-a/fc1/?step=6")
    assert watched.page.eval_on_selector("select.deepeyes-snapshot", "s => s.value").endswith(
        "step-00000006/L1.vl.json.gz"
    )
    assert "fc1, step 6" in _layer_title(watched)
    assert not any("step-00000012" in u for u in watched.requests)


def _click_mark(watched, mark: str, index: int) -> int:
    """Clicks item `index` of the named mark on the canvas; returns its datum's filter."""
    x, y, datum = _mark_at(watched, mark, index)
    watched.page.mouse.click(x, y)
    return datum["filter"]


def _mark_at(watched, mark: str, index: int) -> tuple[float, float, dict]:
    """Where item `index` of the named mark is on the page (its middle), and its datum."""
    # Instant: the mkdocs theme scrolls smoothly, and a click aimed mid-scroll lands elsewhere.
    watched.page.eval_on_selector(f"#{LAYER_CHART}", "e => e.scrollIntoView({behavior: 'instant'})")
    return watched.page.evaluate(
        f"""() => {{
        const view = window.deepeyes.views["{LAYER_CHART}"];
        let hit = null;
        (function walk(mark, ox, oy) {{
            if (mark.name === "{mark}") {{
                const item = mark.items[{index}];
                // The middle of the mark: a rect's x/y is its corner, which a click can miss.
                hit = [ox + item.x + (item.width || 0) / 2, oy + item.y + (item.height || 0) / 2,
                       item.datum];
                return;
            }}
            if (mark.marktype !== "group") return;
            for (const group of mark.items) {{
                for (const child of group.items || []) {{
                    walk(child, ox + (group.x || 0), oy + (group.y || 0));
                }}
            }}
        }})(view.scenegraph().root, 0, 0);
        // Canvas corner, then the view's padding, its origin and the groups' offsets.
        const origin = view.origin(), pad = view.padding();
        const box = view.container().querySelector("canvas").getBoundingClientRect();
        return [box.left + pad.left + origin[0] + hit[0], box.top + pad.top + origin[1] + hit[1],
                hit[2]];
    }}"""
    )


OVERLAY = """() => {
    const view = window.deepeyes.views["deepeyes-layer-chart"];
    let items = null;
    (function walk(mark) {
        if (mark.name === "concat_1_concat_0_layer_1_marks") {
            items = mark.items.map(i => [i.datum.ov, i.fill]);
        }
        for (const item of mark.items || []) for (const child of item.items || []) walk(child);
    })(view.scenegraph().root);
    return {filter: view.signal("filter"), overlay: view.signal("overlay"), items: items};
}"""


def test_clicking_a_heatmap_filter_recolours_the_input_map(watched):
    watched.open("deepeyes/tiny-a/conv1/")
    before = watched.page.evaluate(OVERLAY)
    assert before["overlay"] == "filter"
    assert not before["filter"]  # nothing selected: the input map shows label colours
    assert before["items"] == []
    picked = _click_mark(watched, "heatmap_marks", 2)
    # Generous: a loaded CI machine re-renders slowly (this is not a speed test).
    watched.page.wait_for_function(f"() => ({OVERLAY})().items.length > 0", timeout=120_000)
    after = watched.page.evaluate(OVERLAY)
    assert after["filter"]["filter"] == [picked]
    assert len(after["items"]) > 0
    assert all(0 <= ov <= 1 for ov, _ in after["items"])
    other = _click_mark(watched, "heatmap_marks", 0)
    assert other != picked
    watched.page.wait_for_function(
        f"() => JSON.stringify(({OVERLAY})().filter.filter) === '[{other}]'"
    )
    again = watched.page.evaluate(OVERLAY)
    assert [ov for ov, _ in again["items"]] != [ov for ov, _ in after["items"]]
    assert watched.errors == [] and watched.foreign_requests() == []


def test_wiki_histograms_open_at_the_requested_snapshot(watched):
    watched.open("analysis/")
    value = watched.page.evaluate(
        "() => window.deepeyes.views['deepeyes-embed-2'].signal('snapshot')"
    )
    assert value == 6


def test_compare_page_switches_runs(watched):
    watched.open("deepeyes/compare/?a=tiny-b&b=tiny-b")
    loaded = [c["loaded"] for c in watched.charts()]
    assert all("tiny-b" in u for u in loaded) and len(loaded) == 8
    watched.page.select_option("select.deepeyes-compare-a", "tiny-a")
    watched.settle()
    loaded = [c["loaded"] for c in watched.charts()]
    assert sum("tiny-a" in u for u in loaded) == 4 and sum("tiny-b" in u for u in loaded) == 4
    assert "a=tiny-a" in watched.page.url
    assert watched.errors == []


def test_viewer_refuses_other_origins(watched):
    watched.open("deepeyes/")
    watched.page.evaluate(
        "() => { const d = document.createElement('div'); d.className = 'deepeyes-chart';"
        " d.id = 'foreign'; document.body.appendChild(d);"
        " return window.deepeyes.embed(d, '../foreign.vl.json'); }"
    )
    # vega warns that the data failed to load, skips the image, and draws the rest
    assert watched.page.eval_on_selector("#foreign", "e => e.dataset.state") == "ready"
    assert any(
        "Loading failed http://198.51.100.7/data.json" in m
        and "load nothing from another origin" in m
        for m in watched.console
    )
    assert watched.foreign_requests() == []


# ------------------------------------------------------------------ compressed views, thumbnails

SCENE_ITEMS = """(args) => {
    const [chart, mark] = args;
    const out = [];
    (function walk(node) {
        if (node.name === mark) {
            for (const i of node.items) {
                out.push({url: i.url || null, loaded: !!(i.image && i.image.complete &&
                          i.image.naturalWidth > 0), datum: i.datum});
            }
        }
        for (const item of node.items || []) for (const child of item.items || []) walk(child);
    })(window.deepeyes.views[chart].scenegraph().root);
    return out;
}"""


def _points(watched, chart=LAYER_CHART) -> list[dict]:
    return watched.page.evaluate(f"() => window.deepeyes.views['{chart}'].data('points')")


def test_layer_page_draws_the_shared_thumbnails(watched, built_site):
    from deepeyes_keras.run.view_files import read_thumbnails

    table = read_thumbnails(
        built_site / "deepeyes" / "tiny-a" / "views" / "thumbnails" / "L0.json.gz"
    )
    watched.open("deepeyes/tiny-a/conv1/")
    points = _points(watched)
    assert points and all(p["image"] == table[str(p["uid"])] for p in points)
    assert all(p["image"].startswith("data:image/png;base64,") for p in points)
    # The tooltip of a point shows its thumbnail.
    x, y, datum = _mark_at(watched, "input_map_0_marks", 0)
    watched.page.mouse.move(x, y)
    tooltip = watched.page.wait_for_selector("#vg-tooltip-element img", state="attached")
    assert tooltip.get_attribute("src") == table[str(datum["uid"])]
    # Brushed points show their patches, every image loaded.
    watched.page.mouse.move(x - 60, y - 60)
    watched.page.mouse.down()
    watched.page.mouse.move(x + 60, y + 60, steps=5)
    watched.page.mouse.up()
    watched.page.wait_for_function(
        f"(a) => ({SCENE_ITEMS})(a).some(i => i.loaded)", arg=[LAYER_CHART, "patches_marks"]
    )
    patches = watched.page.evaluate(SCENE_ITEMS, [LAYER_CHART, "patches_marks"])
    assert patches and all(i["url"] == table[str(i["datum"]["uid"])] for i in patches)
    # Another snapshot: its view is fetched, the thumbnails file was fetched once for the page.
    watched.page.select_option("select.deepeyes-snapshot", label="step 6")
    watched.page.wait_for_function(
        f"() => document.getElementById('{LAYER_CHART}').dataset.loaded.includes('step-00000006')"
    )
    watched.settle()
    assert all(p["image"] == table[str(p["uid"])] for p in _points(watched))
    fetched = [urlsplit(u).path for u in watched.requests if "thumbnails" in u]
    assert fetched == ["/deepeyes/tiny-a/views/thumbnails/L0.json.gz"]
    assert watched.errors == [] and watched.foreign_requests() == []


def test_views_are_decompressed_by_the_page_or_by_the_browser(watched, site_url, built_site):
    path = "deepeyes/tiny-b/fc1/"
    spec_url = site_url + "deepeyes/tiny-b/views/step-00000012/L1.vl.json.gz"
    with urlopen(spec_url) as response:  # sent as it is: the page script decompresses it
        assert response.headers.get("Content-Encoding") is None
        assert response.read(2) == b"\x1f\x8b"
    watched.open(path)
    (chart,) = watched.charts()
    assert chart["state"] == "ready" and chart["drawn"] and chart["loaded"].endswith(".gz")
    direct = _points(watched)
    assert direct and all(p["image"].startswith("data:image/png") for p in direct)
    # A server that sends .gz files with Content-Encoding: gzip: the browser decodes them and
    # the page script parses them as they come.
    with serving(built_site, Decoding) as decoding_url:
        with urlopen(decoding_url + spec_url[len(site_url) :]) as response:
            assert response.headers.get("Content-Encoding") == "gzip"
        again = Watched(watched.page.context.new_page(), decoding_url)
        again.open(path)
        (chart,) = again.charts()
        assert chart["state"] == "ready" and chart["drawn"]
        assert _points(again) == direct
        assert again.errors == [] and again.foreign_requests() == []


def test_views_of_older_runs_and_views_without_their_thumbnails_still_draw(watched):
    watched.open("deepeyes/")
    embed = (
        "(url) => { const d = document.createElement('div'); d.className = 'deepeyes-chart';"
        " d.id = 'extra-' + url.length; document.body.appendChild(d);"
        " return window.deepeyes.embed(d, url).then(() => [d.id, d.dataset.state]); }"
    )
    chart, state = watched.page.evaluate(embed, "../old-form.vl.json")  # images inline
    assert state == "ready"
    old = _points(watched, chart)
    assert old and all(p["image"].startswith("data:image/png") and "uid" not in p for p in old)
    chart, state = watched.page.evaluate(embed, "../orphan/L0.vl.json.gz")
    assert state == "ready"  # drawn without thumbnails, and a warning says why
    orphan = _points(watched, chart)
    assert len(orphan) == len(old) and all(p["image"] is None for p in orphan)
    assert any("no thumbnails for ../orphan/L0.vl.json.gz" in m for m in watched.console)
    assert watched.foreign_requests() == []
