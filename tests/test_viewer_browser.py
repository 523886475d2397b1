"""The viewer as a new user reads it, in headless Chromium (issue 16, items 1, 2, 3, 6 and 7).

One small real run, recorded once for the module: a CNN (conv1 and fc1 analysed) trained for 3
epochs of 5 steps with validation data, snapshots at steps 7 and 14 and a one-step tail at 15
(the run stops just after a snapshot), with findings for steps 7 and 14 only (as while the
findings stage has not reached the tail yet). Checked in the browser: the default snapshot, the
training curves, the layer page's legends, labels, controls and carried choices, findings that
follow the chosen snapshot, the layout at 1400, 1024 and 768 px and after window resizes
(screenshots under each test's tmp dir), and that no page makes Vega warn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _browser import Server, Watched

RUN = "tail-run"
STEPS_PER_EPOCH, EPOCHS = 5, 3
WIDTHS = (1400, 1024, 768)
CHART = "deepeyes-layer-chart"

RECORD = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.charts import overview_spec, spec_json
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.maps import compute_missing_maps
    from deepeyes_keras.derive.views import write_views
    from deepeyes_keras.run.reader import load_run

    log_dir = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.random((80, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 80)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(8, activation="relu", name="fc1"),
        keras.layers.Dense(3, name="out"),
    ], name="tail_cnn")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # Only the layers the tests open (each layer adds maps, findings and views per snapshot).
    cb = DeepEyesCallback(log_dir=log_dir, run_name="tail-run", snapshot_every=7,
                          layers=["conv1", "fc1"], reservoir_size=256, maps=False, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb],
              validation_data=(x[:32], y[:32]))
    compute_missing_maps(cb.run_dir, max_points=256)
    write_findings(cb.run_dir)
    write_views(cb.run_dir)
    # The tail's findings not computed yet (as while training): its layer pages say so.
    (cb.run_dir / "findings" / "step-00000015.json").unlink()
    # The overview with the epoch-end logs (validation values), as the views stage should pass
    # them: written here so the test does not depend on that wiring.
    run = load_run(cb.run_dir)
    logs = [log for snap in run.snapshots for log in snap.record.get("epoch_logs", [])]
    spec = overview_spec(run.metrics(), epoch_logs=logs)
    (cb.run_dir / "views" / "overview.vl.json").write_text(spec_json(spec))
    """
)


@pytest.fixture(scope="module")
def tail_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tail_runs")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, "-c", RECORD, str(root)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"recording the tail run failed:\n{done.stderr[-4000:]}")
    steps = sorted(json.loads(p.read_text())["step"] for p in (root / RUN).glob("snapshots/*.json"))
    assert steps == [7, 14, 15], steps
    found = sorted(p.name for p in (root / RUN / "findings").glob("step-*.json"))
    assert found == ["step-00000007.json", "step-00000014.json"], found
    return root


@pytest.fixture(scope="module")
def site_dir(tail_runs, tmp_path_factory) -> Path:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    root = tmp_path_factory.mktemp("viewer_site")
    (root / "docs").mkdir()
    (root / "docs" / "index.md").write_text("# Fixture site\n")
    (root / "mkdocs.yml").write_text(
        "site_name: fixture\ndocs_dir: docs\nsite_dir: site\n"
        "theme:\n  name: mkdocs\n  highlightjs: false\n"
        f"plugins:\n  - search\n  - deepeyes:\n      runs: {tail_runs}\n"
    )
    config = load_config(config_file=str(root / "mkdocs.yml"))
    build(config)
    return Path(config.site_dir)


@pytest.fixture(scope="module")
def site(site_dir):
    server = Server(site_dir)
    yield server.url
    server.close()


@pytest.fixture
def open_page(browser, site):
    contexts = []

    def opener(path: str, width: int = 1400) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": 1000})
        contexts.append(context)
        watched = Watched(context.new_page(), site)
        watched.open(path)
        return watched

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def layer_paths(browser, site) -> dict[str, str]:
    """The site path of each layer page, read once from the run page's links (URLs are the
    site's to choose)."""
    context = browser.new_context()
    try:
        run = Watched(context.new_page(), site)
        run.open(f"deepeyes/{RUN}/")
        links = run.page.evaluate(
            "() => [...document.querySelectorAll('.deepeyes-run a')]"
            ".map(a => [a.textContent, a.href])"
        )
    finally:
        context.close()
    return {text: href.split(site, 1)[1] for text, href in links if href.startswith(site)}


def vega_warnings(watched: Watched) -> list[str]:
    return watched.warnings()


# Walks the scenegraph of chart `id`; returns [{name, role, marktype, text, opacity, datum}].
ITEMS = """([id, wanted]) => {
    const view = window.deepeyes.views[id];
    const out = [];
    (function walk(mark) {
        for (const item of mark.items || []) {
            if (wanted.includes(mark.marktype)) {
                out.push({name: mark.name || "", role: mark.role || "", marktype: mark.marktype,
                          text: item.text === undefined ? null : String(item.text),
                          opacity: item.opacity === undefined ? 1 : item.opacity,
                          fillOpacity: item.fillOpacity === undefined ? 1 : item.fillOpacity,
                          datum: item.datum && typeof item.datum === "object" ?
                                 JSON.parse(JSON.stringify(item.datum)) : null});
            }
            for (const child of item.items || []) walk(child);
        }
    })(view.scenegraph().root);
    return out;
}"""


def items(watched: Watched, chart: str, *marktypes: str) -> list[dict]:
    return watched.page.evaluate(ITEMS, [chart, list(marktypes)])


def texts(watched: Watched, chart: str, role: str) -> dict[str, float]:
    """Visible opacity of every text item of `role` (e.g. legend-title) in chart `chart`."""
    found = {}
    for item in items(watched, chart, "text"):
        if item["role"] == role and item["text"]:
            found[item["text"]] = min(item["opacity"], item["fillOpacity"])
    return found


def signal(watched: Watched, name: str, chart: str = CHART):
    return watched.page.evaluate(f"() => window.deepeyes.views['{chart}'].signal('{name}')")


# ----------------------------------------------------------------------------- item 1


def test_pages_open_at_the_last_full_snapshot_not_the_tail(open_page, layer_paths):
    page = open_page(layer_paths["conv1"])
    options = page.page.eval_on_selector_all(
        "select.deepeyes-snapshot option",
        "os => os.map(o => ({step: o.dataset.step, label: o.textContent, selected: o.selected}))",
    )
    assert [o["step"] for o in options] == ["7", "14", "15"]
    assert [o["selected"] for o in options] == [False, True, False]
    assert "tail: 1 step" in options[-1]["label"]
    assert "/step-00000014/" in page.charts()[0]["loaded"]
    # The tail stays selectable.
    page.page.select_option("select.deepeyes-snapshot", options[-1]["label"].strip())
    page.page.wait_for_function(
        f"() => document.getElementById('{CHART}').dataset.loaded.includes('step-00000015')"
    )
    page.settle()
    run = open_page(f"deepeyes/{RUN}/")
    assert signal(run, "snapshot", "deepeyes-histograms") == 14


FINDINGS_BOX = ".deepeyes-findings-box"
NOTE = f"{FINDINGS_BOX} .deepeyes-findings-step"


def separability(tail_runs: Path, step: int, layer: str = "conv1") -> str:
    """The T5 cell's linear probe accuracy of `layer` at `step`, from the findings file."""
    path = tail_runs / RUN / "findings" / f"step-{step:08d}.json"
    t5 = json.loads(path.read_text())["findings"]["layers"][layer]["T5"]
    return f"linear {t5['linear']:.3f}"


def shown_findings(page: Watched) -> list[dict]:
    """The findings blocks of the page's findings box that show: their step and text."""
    return page.page.eval_on_selector_all(
        f"{FINDINGS_BOX} .deepeyes-findings",
        "bs => bs.filter(b => b.offsetParent !== null)"
        ".map(b => ({step: b.dataset.step, text: b.textContent}))",
    )


def choose(page: Watched, label: str, step: int) -> None:
    """Picks the snapshot option `label` and waits for its views and findings."""
    page.page.select_option("select.deepeyes-snapshot", label)
    page.page.wait_for_function(
        f"() => document.getElementById('{CHART}').dataset.loaded.includes('step-{step:08d}')"
    )
    page.settle()


def test_findings_follow_the_chosen_snapshot(open_page, layer_paths, tail_runs):
    value = {step: separability(tail_runs, step) for step in (7, 14)}
    assert value[7] != value[14]  # else this test could not tell the snapshots apart
    page = open_page(layer_paths["conv1"])
    (shown,) = shown_findings(page)
    assert shown["step"] == "14" and "Findings at step 14" in shown["text"]
    assert value[14] in shown["text"] and value[7] not in shown["text"]
    assert page.page.query_selector(NOTE) is None
    choose(page, "step 7", 7)
    (shown,) = shown_findings(page)
    assert shown["step"] == "7" and "Findings at step 7" in shown["text"]
    assert value[7] in shown["text"] and value[14] not in shown["text"]
    assert page.page.query_selector(NOTE) is None
    # The tail has no findings yet: the nearest earlier step's stand in, and a note says so.
    tail = page.page.eval_on_selector_all(
        "select.deepeyes-snapshot option", "os => os[os.length - 1].textContent"
    )
    choose(page, tail, 15)
    (shown,) = shown_findings(page)
    assert shown["step"] == "14" and value[14] in shown["text"]
    assert page.page.text_content(NOTE) == (
        "No findings were computed for step 15; these describe step 14."
    )
    choose(page, "step 14", 14)
    assert [b["step"] for b in shown_findings(page)] == ["14"]
    assert page.page.query_selector(NOTE) is None
    # Each step's findings fetched once, only when chosen (the page holds the default step's).
    fetched = [u.rsplit("/", 2)[-2:] for u in page.requests if u.endswith(".findings.html")]
    assert fetched == [["step-00000007", "L0.findings.html"]]
    assert vega_warnings(page) == []


def test_step_in_the_url_opens_with_that_steps_findings(open_page, layer_paths, tail_runs):
    page = open_page(layer_paths["fc1"] + "?step=7")
    assert "/step-00000007/" in page.charts()[0]["loaded"]
    (shown,) = shown_findings(page)
    assert shown["step"] == "7" and "Findings at step 7" in shown["text"]
    assert separability(tail_runs, 7, "fc1") in shown["text"]
    assert separability(tail_runs, 14, "fc1") not in shown["text"]
    page = open_page(layer_paths["fc1"] + "?step=15")
    assert [b["step"] for b in shown_findings(page)] == ["14"]
    assert "describe step 14" in page.page.text_content(NOTE)


def test_pages_hold_one_snapshots_findings_and_say_which(site_dir, tail_runs):
    layer = (site_dir / "deepeyes" / RUN / "conv1" / "index.html").read_text()
    assert layer.count('class="deepeyes-findings"') == 1  # the others are fetched when chosen
    assert 'class="deepeyes-findings" data-step="14"' in layer
    for step in (7, 14):  # every option's findings file exists
        assert f'data-findings-step="{step}" data-findings="../views/step-{step:08d}/' in layer
        fragment = site_dir / "deepeyes" / RUN / "views" / f"step-{step:08d}" / "L0.findings.html"
        assert separability(tail_runs, step) in fragment.read_text()
    run = (site_dir / "deepeyes" / RUN / "index.html").read_text()
    assert "These findings describe step 14, the last snapshot with findings" in run
    assert "Findings at step 14" in run


# ----------------------------------------------------------------------------- item 2


def test_training_curves_are_per_step_smoothed_with_validation(open_page, tail_runs):
    page = open_page(f"deepeyes/{RUN}/")
    rows = page.page.evaluate(
        "() => window.deepeyes.views['deepeyes-overview'].data('metrics')"
        ".map(r => ({metric: r.metric, series: r.series, step: r.step, value: r.value}))"
    )
    # Ground truth: Keras logs running means that restart every STEPS_PER_EPOCH steps.
    files = sorted((tail_runs / RUN).glob("snapshots/*.json"))
    records = [json.loads(p.read_text()) for p in files]
    steps = [s for r in records for s in r["metrics"]["step"]]
    assert steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    for name in ("loss", "accuracy"):
        m = np.array([v for r in records for v in r["metrics"][name]])
        n = (np.arange(len(m)) % STEPS_PER_EPOCH) + 1
        previous = np.where(n > 1, np.roll(m, 1), 0.0)
        expected = n * m - (n - 1) * previous
        shown = {r["step"]: r["value"] for r in rows if r["metric"] == name
                 and r["series"] == "per step"}  # fmt: skip
        assert sorted(shown) == steps
        np.testing.assert_allclose([shown[s] for s in steps], expected, rtol=2e-3, atol=1e-4)
        validation = sorted(r["step"] for r in rows if r["metric"] == name
                            and r["series"] == "validation")  # fmt: skip
        assert validation == [5, 10, 15]  # one point per epoch end
        smoothed = [r for r in rows if r["metric"] == name and r["series"] == "smoothed"]
        assert len(smoothed) == len(steps)
    # Thin lines, no thick point marks on the per-step curves; validation drawn.
    symbols = [i for i in items(page, "deepeyes-overview", "symbol")
               if i["datum"] and i["datum"].get("series") == "per step"]  # fmt: skip
    assert all(i["opacity"] < 0.1 for i in symbols)
    assert any(i["datum"] and i["datum"].get("series") == "validation"
               for i in items(page, "deepeyes-overview", "line"))  # fmt: skip
    # x ends at the last step; accuracy is not drawn on 0..1.
    x_ticks = [float(t["text"]) for t in items(page, "deepeyes-overview", "text")
               if t["role"] == "axis-label" and t["text"].replace(".", "").isdigit()]  # fmt: skip
    assert max(x_ticks) <= 15
    assert vega_warnings(page) == []


# ----------------------------------------------------------------------------- item 3


def mark_position(page: Watched, mark: str, index: int) -> tuple[float, float]:
    """Page coordinates of item `index` of the named mark (after scrolling the chart in)."""
    return tuple(item_position(page, mark, index)[:2])


def click_heatmap_cell(page: Watched, index: int) -> int:
    x, y, filt = item_position(page, "heatmap_marks", index)
    page.page.mouse.click(x, y)
    return filt


def item_position(page: Watched, mark: str, index: int) -> list:
    """Window coordinates of the item (scrolled to the middle of the window) and its filter."""
    page.page.eval_on_selector(f"#{CHART}", "e => e.scrollIntoView({behavior: 'instant'})")
    y = viewport_position(page, mark, index)[1]
    page.page.evaluate(f"() => window.scrollBy(0, {y} - window.innerHeight / 2)")
    return viewport_position(page, mark, index)


def viewport_position(page: Watched, mark: str, index: int) -> list:
    return page.page.evaluate(
        f"""() => {{
        const view = window.deepeyes.views["{CHART}"];
        let hit = null;
        (function walk(mark, ox, oy) {{
            if (mark.name === "{mark}") {{
                const item = mark.items[{index}];
                hit = [ox + item.x, oy + item.y, item.datum.filter];
                return;
            }}
            if (mark.marktype !== "group") return;
            for (const g of mark.items) for (const c of g.items || [])
                walk(c, ox + (g.x || 0), oy + (g.y || 0));
        }})(view.scenegraph().root, 0, 0);
        const origin = view.origin(), pad = view.padding();
        const box = view.container().querySelector("canvas").getBoundingClientRect();
        return [box.left + pad.left + origin[0] + hit[0], box.top + pad.top + origin[1] + hit[1],
                hit[2]];
    }}"""
    )


def test_layer_page_legends_labels_and_controls(open_page, layer_paths):
    page = open_page(layer_paths["conv1"])
    titles = texts(page, CHART, "legend-title")
    assert titles["max activation"] == 1 and titles["frequency (> 0.5 max)"] == 0
    assert titles["label"] == 1 and titles["activation / max"] == 0
    # Filter indices at a glance: on every heatmap cell and beside every filter-map circle.
    numbers = [i["text"] for i in items(page, CHART, "text")
               if i["role"] == "mark" and i["text"].isdigit()]  # fmt: skip
    assert numbers.count("5") == 2 and {str(k) for k in range(6)} <= set(numbers)
    # The brush bars say that nothing is brushed rather than showing every bar at 1.0.
    heads = texts(page, CHART, "title-text")
    assert any(t.startswith("nothing brushed") for t in heads)
    bars = [i["datum"]["top"] for i in items(page, CHART, "rect")
            if i["name"] == "patch_bars_marks"]  # fmt: skip
    assert len(bars) == 6 and not all(b == 1 for b in bars)
    # Controls above the charts they change.
    above = page.page.evaluate(
        f"""() => {{
        const el = document.getElementById("{CHART}");
        return el.querySelector(".vega-bindings").getBoundingClientRect().bottom <=
               el.querySelector("canvas").getBoundingClientRect().top + 1;
    }}"""
    )
    assert above
    # Frequency mode: its legend shows, the max one hides.
    page.page.check(f"#{CHART} .vega-bind input[type=radio][value='frequency']")
    page.page.wait_for_timeout(300)
    titles = texts(page, CHART, "legend-title")
    assert titles["max activation"] == 0 and titles["frequency (> 0.5 max)"] == 1
    # Coloured by a filter: the label legend hides, the activation legend shows.
    picked = click_heatmap_cell(page, 2)
    page.page.wait_for_function(
        f"() => window.deepeyes.views['{CHART}'].data('filter_store').length > 0"
    )
    titles = texts(page, CHART, "legend-title")
    assert titles["label"] == 0 and titles["activation / max"] == 1
    assert vega_warnings(page) == []
    # Another snapshot keeps the filter, the radio choice and the fixed colour range's top.
    top = signal(page, "heatmap_top")
    page.page.select_option("select.deepeyes-snapshot", "step 7")
    page.page.wait_for_function(
        f"() => document.getElementById('{CHART}').dataset.loaded.includes('step-00000007')"
    )
    page.settle()
    kept = page.page.evaluate(
        f"() => window.deepeyes.views['{CHART}'].data('filter_store').map(t => t.values[0])"
    )
    assert kept == [picked]
    assert signal(page, "heatmap_mode") == "frequency"
    assert signal(page, "heatmap_top") == pytest.approx(top)
    filters = page.page.evaluate(f"() => window.deepeyes.views['{CHART}'].data('filters')")
    assert max(f["max"] for f in filters) <= top + 1e-9  # maxima only grow: step 14 sets it
    assert vega_warnings(page) == []


def test_brush_survives_a_snapshot_switch(open_page, layer_paths):
    page = open_page(layer_paths["conv1"])
    x, y = mark_position(page, "input_map_0_marks", 0)
    page.page.mouse.move(x, y)  # from a point: inside the input map, wherever the point lies
    page.page.mouse.down()
    page.page.mouse.move(x + 60, y + 60, steps=5)
    page.page.mouse.up()
    page.page.wait_for_function(f"() => !!window.deepeyes.views['{CHART}'].signal('brush').x")
    before = signal(page, "brush")
    page.page.select_option("select.deepeyes-snapshot", "step 7")
    page.page.wait_for_function(
        f"() => document.getElementById('{CHART}').dataset.loaded.includes('step-00000007')"
    )
    page.settle()
    page.page.wait_for_timeout(300)
    after = signal(page, "brush")
    assert after.get("x") == pytest.approx(before["x"]) and after["y"] == pytest.approx(before["y"])


# ----------------------------------------------------------------------------- item 6, 7


def fit(page: Watched) -> dict:
    """Right edges of the page's content and of the layer view, and what scrolls sideways."""
    return page.page.evaluate(
        f"""() => {{
        const el = document.getElementById("{CHART}");
        const content = el.closest(".deepeyes-page").getBoundingClientRect();
        return {{content: content.right, chart: el.querySelector("canvas")
                 .getBoundingClientRect().right, scroll: el.scrollWidth - el.clientWidth}};
    }}"""
    )


def assert_fits(page: Watched) -> None:
    boxes = fit(page)
    assert boxes["chart"] <= boxes["content"] + 1, boxes
    assert boxes["scroll"] <= 1, boxes  # nothing hidden behind a scroll bar either


@pytest.mark.parametrize("width", WIDTHS)
def test_layer_page_fits_the_content_area(open_page, layer_paths, width, tmp_path):
    path = layer_paths["conv1"]
    page = open_page(path, width=width)
    page.page.screenshot(path=str(tmp_path / f"conv1-{width}.png"), full_page=True)
    assert_fits(page)
    assert vega_warnings(page) == []


def resize(page: Watched, width: int, layout: str | None) -> None:
    """Sets the window's width and waits until the layer view is drawn with `layout`."""
    page.page.set_viewport_size({"width": width, "height": 1000})
    page.page.wait_for_function(
        f"""() => {{
        const el = document.getElementById("{CHART}");
        return el.dataset.state === "ready" && (el.dataset.layout || null) === {json.dumps(layout)};
    }}""",
        timeout=15_000,
    )
    page.settle()


def test_layer_view_follows_window_resizes(open_page, layer_paths, tmp_path):
    page = open_page(layer_paths["conv1"], width=1400)
    # Side by side at 1400 px if it fits there; either way a resize must end where a page
    # opened at that width starts, and at 1920 px (a 1476 px column) the view fits side by side.
    at_1400 = page.charts()[0]["layout"]
    assert_fits(page)
    page.page.check(f"#{CHART} .vega-bind input[type=radio][value='frequency']")
    picked = click_heatmap_cell(page, 3)
    page.page.wait_for_function(
        f"() => window.deepeyes.views['{CHART}'].data('filter_store').length > 0"
    )
    page.page.evaluate(
        f"""() => {{ window.renders = 0; document.getElementById("{CHART}")
        .addEventListener("deepeyes:render", () => {{ window.renders += 1; }}); }}"""
    )
    layouts = [at_1400]
    for width, layout in ((768, "stacked"), (1400, at_1400), (1920, None)):
        resize(page, width, layout)
        layouts.append(layout)
        page.page.screenshot(path=str(tmp_path / f"conv1-resized-{width}.png"), full_page=True)
        assert_fits(page)
        chosen = page.page.evaluate(
            f"() => window.deepeyes.views['{CHART}'].data('filter_store').map(t => t.values[0])"
        )
        assert chosen == [picked], width  # the reader's choices kept
        assert signal(page, "heatmap_mode") == "frequency", width
        page.page.wait_for_timeout(600)  # three debounce delays: a redraw must not start another
        redraws = sum(a != b for a, b in zip(layouts, layouts[1:], strict=False))
        assert page.page.evaluate("() => window.renders") == redraws, (width, layouts)
    assert vega_warnings(page) == []


def test_no_page_makes_vega_warn(open_page, layer_paths, site):
    paths = ["deepeyes/", f"deepeyes/{RUN}/"]
    paths += [layer_paths[name] for name in ("conv1", "fc1")]
    for path in paths:
        page = open_page(path)
        assert all(c["state"] == "ready" for c in page.charts()), (path, page.charts())
        assert vega_warnings(page) == [], path
