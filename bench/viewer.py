"""The viewer: site build time and size, bytes per page, first chart and heatmap-click latency.

A run of 50 snapshots x 4 layers is recorded first (MNIST LeNet, ``snapshot_every=4`` for 200
steps, the callback's other defaults: 2,000-instance reservoirs, input maps of up to 2,000
points); its maps, views and findings are computed in the foreground (``maps=False``, then
``compute_missing_maps``, ``write_views``, ``write_findings``, with openTSNE on one thread to
finish sooner on a shared machine: these are the benchmark's fixture, not what it measures).
Then:

- ``mkdocs build`` (the command, in a fresh process) of a site holding that run: wall time and the
  size of the built site;
- every generated page opened in headless Chromium (Debian's ``chromium`` via playwright, as in
  tests/test_site_browser.py), each in a fresh browser context (cold cache), from a local HTTP
  server:
  the bytes it loaded (HTML, scripts, styles, chart specs), and of those its data (the chart
  specs, ``.vl.json`` or gzipped ``.vl.json.gz``, and the thumbnails files they name);
- the time from navigation start to the first chart drawn (its ``data-state`` turning ``ready``),
  on the run's overview page and on a layer page; median of 5 cold loads;
- on a layer page, the time from pressing the pointer on a heatmap cell (``pointerdown``) to the
  first animation frame in which the input map shows that filter's activations; median of 10
  clicks, one on each of the 10 most active filters (dead filters all look alike).

    python bench/viewer.py            # the 50 x 4 run (about 15 min here, mostly its maps)
    python bench/viewer.py --quick    # 3 snapshots, small reservoir: for CI
    python bench/viewer.py --run case_studies/mnist_lenet/runs/lenet-seed0   # an existing run
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.quiet_tensorflow()

TARGET_BUILD_S, TARGET_PAGE_MB, TARGET_FIRST_CHART_S = 30.0, 5.0, 2.0
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
LAYER_CHART = "deepeyes-layer-chart"
HEATMAP_MARK = "heatmap_marks"
OVERLAY_MARK = "concat_1_concat_0_layer_1_marks"

# Records when the first chart of the page turns ready (performance.now(): ms since navigation).
FIRST_CHART_PROBE = """
(() => {
  const seen = () => {
    if (window.__firstChart !== undefined) return;
    const el = document.querySelector('.deepeyes-chart[data-state="ready"]');
    if (el && el.querySelector('canvas, svg')) window.__firstChart = performance.now();
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true,
                                                attributes: true, attributeFilter: ['data-state']});
})();
"""
OVERLAY_ITEMS = f"""() => {{
  const view = window.deepeyes.views["{LAYER_CHART}"];
  let items = null;
  (function walk(mark) {{
    if (mark.name === "{OVERLAY_MARK}") items = mark.items.map(i => i.datum.ov);
    for (const item of mark.items || []) for (const child of item.items || []) walk(child);
  }})(view.scenegraph().root);
  return JSON.stringify(items || []);
}}"""
# Arms a per-frame watch that stamps the first frame whose overlay differs from the current one.
ARM_CLICK = f"""() => {{
  const overlay = {OVERLAY_ITEMS};
  const before = overlay();
  window.__clickDone = undefined;
  const canvas = window.deepeyes.views["{LAYER_CHART}"].container().querySelector("canvas");
  canvas.addEventListener("pointerdown", () => {{
    const t0 = performance.now();
    const frame = () => {{
      if (overlay() !== before) window.__clickDone = performance.now() - t0;
      else requestAnimationFrame(frame);
    }};
    requestAnimationFrame(frame);
  }}, {{once: true, capture: true}});
}}"""
MARK_POSITION = f"""([name, filter]) => {{
  const view = window.deepeyes.views["{LAYER_CHART}"];
  let hit = null;
  (function walk(mark, ox, oy) {{
    if (mark.name === name) {{
      const item = mark.items.find(i => i.datum.filter === filter);
      hit = [ox + item.x + (item.width || 0) / 2, oy + item.y + (item.height || 0) / 2];
      return;
    }}
    if (mark.marktype !== "group") return;
    for (const group of mark.items)
      for (const child of group.items || []) walk(child, ox + (group.x || 0), oy + (group.y || 0));
  }})(view.scenegraph().root, 0, 0);
  // The canvas holds the view's padding, then its origin, then the nested groups' offsets.
  const origin = view.origin(), pad = view.padding();
  const box = view.container().querySelector("canvas").getBoundingClientRect();
  return [box.left + pad.left + origin[0] + hit[0], box.top + pad.top + origin[1] + hit[1]];
}}"""
# The filters that fire most often (their overlays differ from one another; dead ones look alike).
BUSIEST_FILTERS = f"""([name, k]) => {{
  const view = window.deepeyes.views["{LAYER_CHART}"];
  let items = [];
  (function walk(mark) {{
    if (mark.name === name) items = mark.items.map(i => i.datum);
    for (const item of mark.items || []) for (const child of item.items || []) walk(child);
  }})(view.scenegraph().root);
  return items.sort((a, b) => (b.frequency * b.max) - (a.frequency * a.max))
              .slice(0, k).map(d => d.filter);
}}"""


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=_common.DEFAULT_MNIST)
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="3 snapshots, small reservoir: CI")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--run", help="measure the site of this existing run directory instead "
                                      "of recording one (e.g. a case study's run)")
    return parser.parse_args(argv)


def record_run(args, log_dir: Path) -> Path:
    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive import tsne
    from deepeyes_keras.derive.findings import write_findings
    from deepeyes_keras.derive.maps import compute_missing_maps
    from deepeyes_keras.derive.views import write_views

    every = 4
    steps = args.snapshots * every
    x, y, _ = _common.load_data("lenet", mnist=args.mnist, n=steps * 64)
    net = _common.build_model("lenet", seed=0)
    extra = {"reservoir_size": 256} if args.quick else {}
    cb = DeepEyesCallback(log_dir=log_dir, run_name="lenet", snapshot_every=every, maps=False,
                          verbose=0, **extra)
    net.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb])
    tsne.THREADS = 1  # fixture only: one thread finishes sooner on a shared machine
    compute_missing_maps(cb.run_dir)
    write_views(cb.run_dir)
    write_findings(cb.run_dir)
    return Path(cb.run_dir)


def build_site(root: Path, runs: Path) -> tuple[float, Path]:
    docs = root / "docs"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text("# Benchmark site\n")
    (root / "mkdocs.yml").write_text(textwrap.dedent(f"""\
        site_name: benchmark
        docs_dir: docs
        site_dir: site
        theme:
          name: mkdocs
          highlightjs: false
        plugins:
          - search
          - deepeyes:
              runs: {runs}
        """))
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs)] if mkdocs.is_file() else [sys.executable, "-m", "mkdocs"]
    began = time.perf_counter()
    done = subprocess.run([*command, "build", "--quiet"], cwd=root, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{done.stderr[-3000:]}")
    return seconds, root / "site"


def serve(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def settle(page) -> None:
    page.wait_for_function(
        "() => window.deepeyes && window.deepeyes.started && [...document.querySelectorAll("
        "'.deepeyes-chart')].every(e => ['ready', 'error'].includes(e.dataset.state))",
        timeout=120_000)


def open_page(browser, url: str, *, site: Path, origin: str):
    """Opens url in a fresh context; returns (context, page, {path: bytes loaded})."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.add_init_script(FIRST_CHART_PROBE)
    loaded: dict[str, int] = {}

    def on_response(response):
        if response.url.startswith(origin) and response.ok:
            rel = response.url[len(origin):].split("?")[0].split("#")[0]
            file = site / rel
            if file.is_dir() or rel.endswith("/") or rel == "":
                file = file / "index.html"
            if file.is_file():
                loaded[rel or "index.html"] = file.stat().st_size

    page.on("response", on_response)
    page.goto(url)
    settle(page)
    errors = page.eval_on_selector_all(".deepeyes-chart",
                                       "els => els.filter(e => e.dataset.state === 'error')"
                                       ".map(e => e.id)")
    if errors:
        raise RuntimeError(f"{url}: charts failed to render: {errors}")
    return context, page, loaded


def page_bytes(browser, site: Path, origin: str, pages: list[str]) -> list[dict]:
    out = []
    for rel in pages:
        context, _page, loaded = open_page(browser, origin + rel, site=site, origin=origin)
        context.close()
        data = sum(v for k, v in loaded.items() if k.endswith((".json", ".json.gz")))
        out.append({"page": rel, "total": sum(loaded.values()), "data": data,
                    "files": len(loaded)})
    return out


def first_chart_seconds(browser, site, origin, rel, repeats) -> list[float]:
    times = []
    for _ in range(repeats):
        context, page, _ = open_page(browser, origin + rel, site=site, origin=origin)
        times.append(page.evaluate("() => window.__firstChart") / 1000)
        context.close()
    return times


def click_seconds(browser, site, origin, rel, clicks) -> list[float]:
    context, page, _ = open_page(browser, origin + rel, site=site, origin=origin)
    # Bring the heatmap into view at once: the theme scrolls smoothly, and a click aimed while the
    # page still moves lands on another cell (or between cells) than the one it was aimed at.
    page.eval_on_selector(f"#{LAYER_CHART}",
                          "e => e.scrollIntoView({block: 'center', behavior: 'instant'})")
    times = []
    for filter_id in page.evaluate(BUSIEST_FILTERS, [HEATMAP_MARK, clicks]):
        page.mouse.move(1, 1)  # off the chart: no tooltip left over from the previous click
        page.evaluate(ARM_CLICK)
        x, y = page.evaluate(MARK_POSITION, [HEATMAP_MARK, filter_id])
        under = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.tagName", [x, y])
        if under != "CANVAS":
            raise RuntimeError(f"{rel}: filter {filter_id}'s cell at ({x:.0f}, {y:.0f}) is "
                               f"covered by {under}, not the chart's canvas")
        page.mouse.click(x, y)
        try:
            page.wait_for_function("() => window.__clickDone !== undefined", timeout=15_000)
        except Exception as err:  # playwright's TimeoutError
            raise RuntimeError(f"{rel}: clicking filter {filter_id} at ({x:.0f}, {y:.0f}) did "
                               f"not change the input map ({selected(page)})") from err
        # The overlay changed; it must be because this filter, and no other, was selected.
        if f'"filter":[{filter_id}]' not in selected(page):
            raise RuntimeError(f"{rel}: clicking filter {filter_id} at ({x:.0f}, {y:.0f}) "
                               f"selected another ({selected(page)})")
        times.append(page.evaluate("() => window.__clickDone") / 1000)
    context.close()
    return times


def selected(page) -> str:
    return "filter signal " + page.evaluate(
        f"() => JSON.stringify(window.deepeyes.views['{LAYER_CHART}'].signal('filter'))")


def main(argv=None):
    args = parse(argv)
    if args.quick:
        args.snapshots = 3
    if not Path(args.chromium).is_file():
        raise SystemExit(f"no chromium at {args.chromium}: apt-get install chromium "
                         "(see tests/test_site_browser.py)")
    from playwright.sync_api import sync_playwright

    print(_common.machine_line(tensorflow=False))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        began = time.perf_counter()
        if args.run:
            run_dir = tmp / "runs" / Path(args.run).name
            shutil.copytree(args.run, run_dir)
        else:
            run_dir = record_run(args, tmp / "runs")
            _common.log(f"run recorded with its maps and views in "
                        f"{time.perf_counter() - began:.0f} s")
        from deepeyes_keras import load_run

        run = load_run(run_dir)
        run_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
        build_s, site = build_site(tmp / "site_root", tmp / "runs")
        site_files = [p for p in site.rglob("*") if p.is_file()]
        site_bytes = sum(p.stat().st_size for p in site_files)
        section = site / "deepeyes"
        pages = sorted(str(p.parent.relative_to(site)) + "/" for p in section.rglob("index.html"))
        # Layer pages are named by layer (deepeyes/<run>/<slug>/); old L<i>/ URLs only redirect.
        from deepeyes_keras.site.runs import layer_slug

        taken: set[str] = set()
        slugs = {layer_slug(name, taken) for name in run.layer_names}
        layer_pages = [p for p in pages if p.rstrip("/").split("/")[-1] in slugs]
        overview_page = f"deepeyes/{run.name}/"
        server, origin = serve(site)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
                sizes = page_bytes(browser, site, origin, pages)
                largest = max(sizes, key=lambda s: s["data"])
                heaviest_layer = max((s for s in sizes if s["page"] in layer_pages),
                                     key=lambda s: s["data"])["page"]
                repeats = 2 if args.quick else 5
                first_overview = first_chart_seconds(browser, site, origin, overview_page,
                                                     repeats)
                first_layer = first_chart_seconds(browser, site, origin, heaviest_layer, repeats)
                try:
                    clicks = click_seconds(browser, site, origin, heaviest_layer,
                                           3 if args.quick else 10)
                    click_error = None
                except RuntimeError as err:  # keep the other measurements; say why it is missing
                    if args.quick:
                        raise
                    clicks, click_error = [], str(err)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()

    n_layers = len(run.layer_names)
    given = f"`{args.run}`, " if args.run else ""
    print(f"\nRun: {given}MNIST LeNet, {len(run.snapshots)} snapshots x {n_layers} layers "
          f"({run_bytes / 1e6:.1f} MB on disk). Site: `mkdocs build` of a site holding only this "
          f"run; {len(pages)} generated pages; headless Chromium, cold cache per load.\n")
    med = statistics.median
    rows = [
        ["`mkdocs build` (fresh process)", f"{build_s:.1f} s",
         f"at most {TARGET_BUILD_S:.0f} s", "met" if build_s <= TARGET_BUILD_S else "missed"],
        ["built site", f"{site_bytes / 1e6:.1f} MB in {len(site_files):,} files", "-", "-"],
        [f"largest page's data (`{largest['page']}`: chart specs with their data)",
         f"{largest['data'] / 1e6:.2f} MB", f"at most {TARGET_PAGE_MB:.0f} MB",
         "met" if largest["data"] / 1e6 <= TARGET_PAGE_MB else "missed"],
        ["the same page, everything loaded (HTML, scripts, styles, data)",
         f"{largest['total'] / 1e6:.2f} MB in {largest['files']} files", "-", "-"],
        [f"first chart drawn, run overview (`{overview_page}`), median (min-max) of "
         f"{len(first_overview)}", _common.spread(first_overview, "{:.2f}") + " s",
         f"within {TARGET_FIRST_CHART_S:.0f} s",
         "met" if med(first_overview) <= TARGET_FIRST_CHART_S else "missed"],
        [f"first chart drawn, layer page (`{heaviest_layer}`), median (min-max) of "
         f"{len(first_layer)}", _common.spread(first_layer, "{:.2f}") + " s",
         f"within {TARGET_FIRST_CHART_S:.0f} s",
         "met" if med(first_layer) <= TARGET_FIRST_CHART_S else "missed"],
        [f"heatmap click to input map recoloured, median (min-max) of {len(clicks)}",
         (_common.spread(clicks, "{:.3f}") + " s") if clicks else
         f"not measured: {click_error}", "-", "-"],
    ]
    print(_common.table(["measure", "value", "target", "met?"], rows))
    print("\nBytes loaded per generated page:\n")
    print(_common.table(["page", "data: chart specs (MB)", "everything (MB)", "files"],
                        [[f"`{s['page']}`", f"{s['data'] / 1e6:.2f}", f"{s['total'] / 1e6:.2f}",
                          str(s["files"])] for s in sizes]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"build_seconds": build_s, "site_bytes": site_bytes, "pages": sizes,
                       "first_chart_overview": first_overview, "first_chart_layer": first_layer,
                       "click_seconds": clicks}, handle, indent=1)
    print(f"\nCommand: python bench/viewer.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())


if __name__ == "__main__":
    main()
