/* DeepEyes viewer: embeds the Vega-Lite specs of a DeepEyes site.
 *
 * Every <div class="deepeyes-chart" data-spec="URL"> gets the spec fetched from URL (relative to
 * the page) and embedded with vega-embed (loaded from the site itself by vega.js). A
 * <select class="deepeyes-snapshot" data-chart="ID"> swaps the spec of chart ID for the option's
 * URL, so a page only loads the snapshot it shows; ?step=N in the page URL picks the snapshot.
 * The compare page (<div class="deepeyes-compare" data-runs="JSON">) builds its charts from the
 * two runs picked (?a=RUN&b=RUN). Nothing is requested from another origin: the charts' loader
 * refuses such URLs.
 *
 * Layer views come gzipped (.vl.json.gz; decompressed here with DecompressionStream when the bytes
 * start with the gzip magic, parsed as they are otherwise: a server may have decoded them), and
 * their points name their instance (uid) instead of carrying its thumbnail: the spec's
 * usermeta.deepeyes.thumbnails is the URL (relative to the spec) of the layer's thumbnails file,
 * fetched once per page and joined into each point's image before the chart is drawn. Older views
 * (inline images, no usermeta) are drawn as they are.
 *
 * Switching the snapshot of a layer view keeps the reader's choices (radio buttons, selected
 * filter, brush, the heatmap's fixed colour range). A layer view wider than its column is drawn
 * again with the views of each row stacked (data-layout="stacked" on the chart element); after a
 * window resize (200 ms after the last resize event) it is stacked or put side by side again,
 * whichever now fits, with the reader's choices kept. The findings box of a layer page
 * (.deepeyes-findings-box) follows the snapshot select: each option names the HTML of its
 * snapshot's findings (data-findings, fetched once and kept in the box, hidden while another
 * step is shown) and their step (data-findings-step: another step when that snapshot has no
 * findings, which a note over them then says).
 *
 * For tests and the console: window.deepeyes.views[id] is the vega View of chart id,
 * window.deepeyes.started is true once every chart of the page has been asked for, and
 * window.deepeyes.idle() resolves once no chart is loading. ?renderer=svg draws SVG, not canvas.
 */
(function () {
  "use strict";

  // Choices a reader makes on a layer view that survive switching its snapshot.
  const CARRIED_PARAMS = ["heatmap_mode", "heatmap_sort", "heatmap_range", "overlay"];
  const views = {};
  const pending = new Map(); // chart element -> token of its latest request
  let idleWaiters = [];
  let counter = 0;
  let query = new URLSearchParams(window.location.search); // read again on every page init
  const renderer = query.get("renderer") === "svg" ? "svg" : "canvas";

  function settle() {
    if (pending.size === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      waiters.forEach((resolve) => resolve());
    }
  }

  // vega's loader, reduced to what the specs of a DeepEyes site need (inline data, data: URL
  // images) and refusing every URL of another origin. (The bundle does not expose vega itself.)
  const loader = {
    sanitize: async function (uri) {
      const text = String(uri);
      if (text.startsWith("data:")) {
        return { href: text };
      }
      const url = new URL(text, window.location.href);
      if (url.origin !== window.location.origin) {
        throw new Error("DeepEyes charts load nothing from another origin: " + url.href);
      }
      return { href: url.href };
    },
    load: async function (uri) {
      const { href } = await loader.sanitize(uri);
      const response = await fetch(href, { credentials: "same-origin" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status + " for " + href);
      }
      return response.text();
    },
  };

  // A JSON file of the site, gzipped or not: the first two bytes decide, not the name.
  async function fetchJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) {
      throw new Error("HTTP " + response.status + " for " + url);
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) {
      return JSON.parse(new TextDecoder().decode(bytes));
    }
    if (typeof DecompressionStream !== "function") {
      throw new Error("this browser cannot decompress gzip (no DecompressionStream): " + url);
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  let thumbnailFiles = new Map(); // absolute URL -> promise of {uid: data URL}; per page

  function thumbnailsAt(href) {
    if (!thumbnailFiles.has(href)) {
      const table = fetchJson(href);
      thumbnailFiles.set(href, table);
      table.catch(() => thumbnailFiles.delete(href)); // a failed fetch is tried again later
    }
    return thumbnailFiles.get(href);
  }

  // The spec with each point's thumbnail (image) filled in from the file its usermeta names.
  // Without thumbnails (the file missing or damaged) the chart is still drawn, and a warning says so.
  async function withThumbnails(spec, specUrl) {
    const meta = spec.usermeta && spec.usermeta.deepeyes;
    const ref = meta && meta.thumbnails;
    if (typeof ref !== "string") {
      return spec; // an older view: thumbnails inline
    }
    const href = new URL(ref, new URL(specUrl, window.location.href)).href;
    let table = {};
    try {
      if (new URL(href).origin !== window.location.origin) {
        throw new Error("DeepEyes charts load nothing from another origin: " + href);
      }
      table = await thumbnailsAt(href);
    } catch (err) {
      console.warn("DeepEyes: no thumbnails for " + specUrl + ": " + err.message);
    }
    for (const rows of Object.values(spec.datasets || {})) {
      for (const row of Array.isArray(rows) ? rows : []) {
        if (row && row.uid !== undefined && row.image === undefined) {
          const url = table[String(row.uid)];
          row.image = typeof url === "string" ? url : null;
        }
      }
    }
    return spec;
  }

  function showError(el, message) {
    el.dataset.state = "error";
    el.removeAttribute("aria-busy");
    const box = document.createElement("div");
    box.className = "deepeyes-error";
    box.setAttribute("role", "alert");
    box.textContent = message;
    el.replaceChildren(box);
  }

  function finalize(el) {
    const view = views[el.id];
    if (view) {
      view.finalize();
      delete views[el.id];
    }
  }

  function draw(el, spec) {
    return window.vegaEmbed(el, spec, { actions: false, renderer: renderer, loader: loader });
  }

  function specParam(spec, name) {
    return (spec.params || []).find((p) => p.name === name);
  }

  // The reader's choices on the view being replaced, written into the next snapshot's spec as
  // its params' initial values: radio choices, the selected filter, the brush, and the top of
  // the heatmap's fixed colour range (the largest max seen on this page).
  function carryChoices(previous, spec) {
    for (const name of CARRIED_PARAMS) {
      const param = specParam(spec, name);
      try {
        if (param) {
          param.value = previous.signal(name);
        }
      } catch (err) {
        // the previous view had no such param
      }
    }
    const top = specParam(spec, "heatmap_top");
    try {
      if (top) {
        top.value = Math.max(Number(top.value) || 0, Number(previous.signal("heatmap_top")) || 0);
      }
    } catch (err) {
      // no heatmap on the previous view
    }
    const picked = specParam(spec, "filter");
    try {
      const tuples = previous.data("filter_store");
      if (picked && tuples.length) {
        picked.value = [{ filter: tuples[0].values[0] }];
      } else if (picked) {
        delete picked.value;
      }
    } catch (err) {
      // no filter selection on the previous view
    }
    const brush = specParam(spec, "brush");
    try {
      const box = previous.signal("brush");
      if (brush && box && box.x && box.y) {
        brush.value = { x: box.x.slice(), y: box.y.slice() };
      }
    } catch (err) {
      // no brush on the previous view
    }
  }

  // ---------------------------------------------------------------- layout: side by side or stacked

  const RESIZE_DELAY_MS = 200; // after the last resize event: one redraw per resize gesture
  let resizeTimer = null;

  // Width of the chart drawn in `el` (0 if nothing is drawn).
  function drawnWidth(el) {
    const drawn = el.querySelector("canvas, svg");
    return drawn ? drawn.getBoundingClientRect().width : 0;
  }

  // Whether a chart `width` px wide fits `el`'s column.
  function fits(el, width) {
    return width <= el.clientWidth + 1;
  }

  // A view with rows of views side by side (a layer page's), which stackRows can stack.
  function stackable(spec) {
    return (spec.vconcat || []).some((row) => row.hconcat);
  }

  function setLayout(el, stacked) {
    if (stacked) {
      el.dataset.layout = "stacked";
    } else {
      delete el.dataset.layout;
    }
  }

  // Draws `spec` side by side and, if that is wider than its column, again with each row
  // stacked. Keeps the side-by-side spec and its width on `el` so that a window resize can lay
  // the chart out again (relayout). Resolves to vega-embed's result, or null when a newer
  // request superseded this one.
  async function drawFitted(el, spec, token) {
    const wide = stackable(spec) ? structuredClone(spec) : null; // before vega sees it
    let result = await draw(el, spec);
    if (token !== el._deepeyesToken) {
      result.finalize();
      return null;
    }
    el._deepeyesSpec = wide;
    el._deepeyesWidth = drawnWidth(el);
    const stack = !!wide && !fits(el, el._deepeyesWidth);
    if (stack) {
      // Too wide for the column: the views of each row go one under the other instead.
      const stacked = structuredClone(wide);
      stackRows(stacked);
      result.finalize();
      el.replaceChildren();
      result = await draw(el, stacked);
      if (token !== el._deepeyesToken) {
        result.finalize();
        return null;
      }
    }
    setLayout(el, stack);
    return result;
  }

  // The charts whose layout no longer suits their column's width, laid out again. Called only
  // from the window's resize events (debounced), never by a redraw: no redraw loop. The choice
  // depends on the column's width alone (the side-by-side width is the one measured when drawn),
  // so a redraw that changes the page's height cannot flip it back.
  function relayoutAll() {
    resizeTimer = null;
    document.querySelectorAll(".deepeyes-chart").forEach(function (el) {
      if (!el._deepeyesSpec || el.dataset.state !== "ready" || !views[el.id]) {
        return;
      }
      const stack = !fits(el, el._deepeyesWidth);
      if (stack !== (el.dataset.layout === "stacked")) {
        relayout(el, stack);
      }
    });
  }

  // Draws chart `el` again from its side-by-side spec, stacked or not, keeping the reader's
  // choices as a snapshot switch does.
  async function relayout(el, stack) {
    const token = (el._deepeyesToken || 0) + 1;
    el._deepeyesToken = token;
    el.dataset.state = "loading";
    el.setAttribute("aria-busy", "true");
    pending.set(el, token);
    try {
      const spec = structuredClone(el._deepeyesSpec);
      carryChoices(views[el.id], spec);
      if (stack) {
        stackRows(spec);
      }
      finalize(el);
      el.replaceChildren();
      const result = await draw(el, spec);
      if (token !== el._deepeyesToken) {
        result.finalize();
        return;
      }
      views[el.id] = result.view;
      setLayout(el, stack);
      pickSnapshot(el, result.view);
      await result.view.runAsync();
      el.dataset.state = "ready";
      el.removeAttribute("aria-busy");
      const detail = { url: el.dataset.loaded, layout: stack ? "stacked" : "side by side" };
      el.dispatchEvent(new CustomEvent("deepeyes:render", { bubbles: true, detail: detail }));
    } catch (err) {
      if (token === el._deepeyesToken) {
        console.error("DeepEyes: could not lay out this chart again: " + err.message);
        showError(el, "Could not lay out this chart again (" + err.message + "); reload the page.");
      }
    } finally {
      if (pending.get(el) === token) {
        pending.delete(el);
      }
      settle();
    }
  }

  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(relayoutAll, RESIZE_DELAY_MS);
  }

  // A chart's snapshot selector set to the step its element asks for (data-snapshot).
  function pickSnapshot(el, view) {
    const snapshot = el.dataset.snapshot;
    if (snapshot !== undefined && snapshot !== "") {
      try {
        view.signal("snapshot", Number(snapshot));
      } catch (err) {
        // A view without a snapshot selector: nothing to pick.
      }
    }
  }

  // A vconcat of hconcat rows (a layer page) turned into one column; false if nothing to stack.
  function stackRows(spec) {
    let stacked = false;
    for (const row of spec.vconcat || []) {
      if (row.hconcat) {
        row.vconcat = row.hconcat;
        delete row.hconcat;
        stacked = true;
      }
    }
    return stacked;
  }

  async function embed(el, url) {
    if (!el.id) {
      counter += 1;
      el.id = "deepeyes-chart-auto-" + counter;
    }
    const token = (el._deepeyesToken || 0) + 1;
    el._deepeyesToken = token;
    el.dataset.state = "loading";
    el.setAttribute("aria-busy", "true");
    pending.set(el, token);
    try {
      if (typeof window.vegaEmbed !== "function") {
        throw new Error("the vega libraries (deepeyes/assets/vega.js) did not load");
      }
      const spec = await withThumbnails(await fetchJson(url), url);
      if (token !== el._deepeyesToken) {
        return; // a newer request (another snapshot) superseded this one
      }
      const previous = views[el.id];
      if (previous) {
        carryChoices(previous, spec);
      }
      finalize(el);
      el.replaceChildren();
      const result = await drawFitted(el, spec, token);
      if (!result) {
        return; // superseded while drawing
      }
      views[el.id] = result.view;
      pickSnapshot(el, result.view);
      await result.view.runAsync();
      el.dataset.state = "ready";
      el.dataset.loaded = url;
      el.removeAttribute("aria-busy");
      el.dispatchEvent(new CustomEvent("deepeyes:render", { bubbles: true, detail: { url: url } }));
    } catch (err) {
      if (token === el._deepeyesToken) {
        let message = "Could not show this chart (" + url + "): " + err.message;
        if (window.location.protocol === "file:") {
          message = "Charts are loaded by URL, which browsers refuse for pages opened from disk. " +
            "Serve the site (mkdocs serve, or python -m http.server -d site) and open it over http.";
        }
        console.error("DeepEyes: " + message);
        showError(el, message);
      }
    } finally {
      if (pending.get(el) === token) {
        pending.delete(el);
      }
      settle();
    }
  }

  // ---------------------------------------------------------------- findings of the shown snapshot

  // The findings box that follows snapshot select `select` (a layer page's), or null.
  function findingsBox(select) {
    const id = select.dataset.chart;
    return [...document.querySelectorAll(".deepeyes-findings-box")]
      .find((box) => box.dataset.chart === id) || null;
  }

  // The block of the findings `option` names: in the box already (the page's own, or fetched
  // before), else fetched from the site (data-findings) and added, hidden. One fetch per step.
  function findingsBlock(box, option) {
    const step = option.dataset.findingsStep;
    box._deepeyesBlocks = box._deepeyesBlocks || new Map();
    if (!box._deepeyesBlocks.has(step)) {
      const inline = [...box.querySelectorAll(".deepeyes-findings")]
        .find((block) => block.dataset.step === step);
      const found = inline ? Promise.resolve(inline) : fetchFindings(box, option);
      box._deepeyesBlocks.set(step, found);
      found.catch(() => box._deepeyesBlocks.delete(step)); // a failed fetch is tried again later
    }
    return box._deepeyesBlocks.get(step);
  }

  async function fetchFindings(box, option) {
    const url = option.dataset.findings;
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) {
      throw new Error("HTTP " + response.status + " for " + url);
    }
    const block = node("div", "deepeyes-findings");
    block.dataset.step = option.dataset.findingsStep;
    block.hidden = true;
    // HTML the site build wrote (every user-given name escaped there); a template runs no script.
    const template = document.createElement("template");
    template.innerHTML = await response.text();
    block.appendChild(template.content);
    box.appendChild(block);
    return block;
  }

  // The note over findings that describe another step than the one shown (a snapshot without
  // findings of its own); the same words as the page's own (site/findings_html.py).
  function setFindingsNote(box, step, source) {
    let note = box.querySelector(".deepeyes-findings-step");
    if (step === source) {
      if (note) {
        note.remove();
      }
      return;
    }
    if (!note) {
      note = node("div", "deepeyes-notice deepeyes-findings-step");
      box.prepend(note);
    }
    note.hidden = false;
    note.textContent = "No findings were computed for step " + step + "; these describe step " +
      source + ".";
  }

  // Shows, in the findings box of `select`'s chart, the findings of the snapshot selected.
  async function showFindings(select) {
    const box = findingsBox(select);
    const option = select.options[select.selectedIndex];
    if (!box || !option || !option.dataset.findings) {
      return;
    }
    const token = (box._deepeyesToken || 0) + 1;
    box._deepeyesToken = token;
    box.setAttribute("aria-busy", "true");
    pending.set(box, token);
    try {
      const block = await findingsBlock(box, option);
      if (token !== box._deepeyesToken) {
        return; // another snapshot was chosen meanwhile
      }
      box.querySelectorAll(".deepeyes-findings-error").forEach((e) => e.remove());
      box.querySelectorAll(".deepeyes-findings").forEach((b) => { b.hidden = b !== block; });
      setFindingsNote(box, option.dataset.step, option.dataset.findingsStep);
    } catch (err) {
      if (token === box._deepeyesToken) {
        const message = "Could not load the findings of step " + option.dataset.findingsStep +
          ": " + err.message;
        console.error("DeepEyes: " + message);
        box.querySelectorAll(".deepeyes-findings, .deepeyes-findings-step")
          .forEach((e) => { e.hidden = true; });
        box.querySelectorAll(".deepeyes-findings-error").forEach((e) => e.remove());
        const alert = node("div", "deepeyes-error deepeyes-findings-error", message);
        alert.setAttribute("role", "alert");
        box.appendChild(alert);
      }
    } finally {
      if (pending.get(box) === token) {
        pending.delete(box);
        box.removeAttribute("aria-busy");
      }
      settle();
    }
  }

  function setupSnapshotSelect(select) {
    const el = document.getElementById(select.dataset.chart);
    if (!el) {
      return;
    }
    const wanted = query.get("step");
    if (wanted !== null) {
      for (const option of select.options) {
        if (option.dataset.step === wanted) {
          select.value = option.value;
        }
      }
    }
    el.dataset.spec = select.value;
    select.addEventListener("change", function () {
      const option = select.options[select.selectedIndex];
      const url = new URL(window.location.href);
      url.searchParams.set("step", option.dataset.step);
      window.history.replaceState(null, "", url);
      showFindings(select);
      embed(el, select.value);
    });
    showFindings(select);
  }

  function node(tag, className, text) {
    const el = document.createElement(tag);
    if (className) {
      el.className = className;
    }
    if (text !== undefined) {
      el.textContent = text; // names come from users: never innerHTML
    }
    return el;
  }

  function link(href, text) {
    const a = node("a", "", text);
    a.href = href;
    return a;
  }

  function setupCompare(root) {
    const runs = JSON.parse(root.dataset.runs);
    const bySlug = new Map(runs.map((run) => [run.slug, run]));
    const selectA = root.querySelector(".deepeyes-compare-a");
    const selectB = root.querySelector(".deepeyes-compare-b");
    const body = root.querySelector(".deepeyes-compare-body");
    selectA.value = bySlug.has(query.get("a")) ? query.get("a") : root.dataset.defaultA;
    selectB.value = bySlug.has(query.get("b")) ? query.get("b") : root.dataset.defaultB;

    function chartCell(run, spec, caption, href) {
      const cell = node("div", "deepeyes-compare-cell");
      const title = node("p", "deepeyes-compare-caption");
      title.appendChild(href ? link(href, caption) : document.createTextNode(caption));
      cell.appendChild(title);
      if (spec) {
        counter += 1;
        const chart = node("div", "deepeyes-chart");
        chart.id = "deepeyes-compare-" + counter;
        chart.dataset.spec = spec;
        chart.setAttribute("role", "figure");
        chart.setAttribute("aria-label", caption);
        cell.appendChild(chart);
      } else {
        cell.appendChild(node("div", "deepeyes-notice", "not available yet (being computed)"));
      }
      return cell;
    }

    function render() {
      body.querySelectorAll(".deepeyes-chart").forEach(finalize);
      body.replaceChildren();
      const a = bySlug.get(selectA.value);
      const b = bySlug.get(selectB.value);
      const url = new URL(window.location.href);
      url.searchParams.set("a", a.slug);
      url.searchParams.set("b", b.slug);
      window.history.replaceState(null, "", url);

      body.appendChild(node("h2", "", "Training curves"));
      const curves = node("div", "deepeyes-compare-grid");
      for (const run of [a, b]) {
        const status = run.status === "training"
          ? "training, last snapshot at step " + run.last_step
          : run.status + ", last snapshot at step " + run.last_step;
        curves.appendChild(chartCell(run, run.overview, run.name + " (" + status + ")", run.page));
      }
      body.appendChild(curves);

      const shared = Object.keys(a.layers).filter((name) => name in b.layers);
      const onlyA = Object.keys(a.layers).filter((name) => !(name in b.layers));
      const onlyB = Object.keys(b.layers).filter((name) => !(name in a.layers));
      if (shared.length === 0) {
        body.appendChild(node("div", "deepeyes-notice",
          "These runs have no analysed layer name in common (with linked views)."));
      }
      for (const name of shared) {
        body.appendChild(node("h2", "", "Layer " + name));
        const grid = node("div", "deepeyes-compare-grid");
        for (const run of [a, b]) {
          const layer = run.layers[name];
          const caption = run.name + " › " + name + ", step " + layer.step;
          grid.appendChild(chartCell(run, layer.spec, caption, layer.page + "?step=" + layer.step));
        }
        body.appendChild(grid);
      }
      if (onlyA.length || onlyB.length) {
        const note = [];
        if (onlyA.length) {
          note.push("only in " + a.name + ": " + onlyA.join(", "));
        }
        if (onlyB.length) {
          note.push("only in " + b.name + ": " + onlyB.join(", "));
        }
        body.appendChild(node("p", "deepeyes-muted", "Layers " + note.join("; ") + "."));
      }
      body.querySelectorAll(".deepeyes-chart[data-spec]").forEach((el) => embed(el, el.dataset.spec));
    }

    selectA.addEventListener("change", render);
    selectB.addEventListener("change", render);
    render();
  }

  // Runs once per page: at load, and for mkdocs-material again after each page its
  // navigation.instant swaps in without a reload (elements set up already are skipped).
  function init() {
    query = new URLSearchParams(window.location.search);
    thumbnailFiles = new Map(); // a page loads each thumbnails file once, as it is now
    for (const id of Object.keys(views)) {
      if (!document.contains(views[id].container())) {
        views[id].finalize(); // its page was swapped out
        delete views[id];
      }
    }
    const fresh = (el) => !el.dataset.deepeyesSetup && (el.dataset.deepeyesSetup = "1");
    document.querySelectorAll("select.deepeyes-snapshot").forEach(function (select) {
      if (fresh(select)) setupSnapshotSelect(select);
    });
    document.querySelectorAll(".deepeyes-compare[data-runs]").forEach(function (root) {
      if (fresh(root)) setupCompare(root);
    });
    document.querySelectorAll(".deepeyes-chart[data-spec]").forEach(function (el) {
      if (!el.dataset.state || el.dataset.state === "pending") {
        embed(el, el.dataset.spec);
      }
    });
    window.deepeyes.started = true;
    settle();
  }

  window.deepeyes = {
    views: views,
    embed: embed,
    renderer: renderer,
    started: false,
    idle: function () {
      return new Promise(function (resolve) {
        idleWaiters.push(resolve);
        settle();
      });
    },
  };

  window.addEventListener("resize", onResize); // once: the script itself runs once per tab

  if (window.document$ && typeof window.document$.subscribe === "function") {
    // mkdocs-material's observable of the page: the first one, then each instant-loaded one.
    window.document$.subscribe(function () {
      init();
    });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
