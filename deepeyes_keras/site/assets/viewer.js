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
 * Switching the snapshot of a layer view keeps the reader's choices (radio buttons, selected
 * filter, brush, the heatmap's fixed colour range). A layer view wider than its column is drawn
 * again with the views of each row stacked (data-layout="stacked" on the chart element). While a
 * layer page shows another snapshot than its findings describe, a note above them says so.
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

  // Whether the drawn chart is wider than the element that holds it.
  function overflows(el) {
    const drawn = el.querySelector("canvas, svg");
    return !!drawn && drawn.getBoundingClientRect().width > el.clientWidth + 1;
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
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const spec = await response.json();
      if (token !== el._deepeyesToken) {
        return; // a newer request (another snapshot) superseded this one
      }
      const previous = views[el.id];
      if (previous) {
        carryChoices(previous, spec);
      }
      finalize(el);
      el.replaceChildren();
      let result = await draw(el, spec);
      if (token !== el._deepeyesToken) {
        result.finalize();
        return;
      }
      if (overflows(el) && stackRows(spec)) {
        // Too wide for the column: the views of each row go one under the other instead.
        result.finalize();
        el.replaceChildren();
        result = await draw(el, spec);
        if (token !== el._deepeyesToken) {
          result.finalize();
          return;
        }
        el.dataset.layout = "stacked";
      }
      views[el.id] = result.view;
      const snapshot = el.dataset.snapshot;
      if (snapshot !== undefined && snapshot !== "") {
        try {
          result.view.signal("snapshot", Number(snapshot));
        } catch (err) {
          // A view without a snapshot selector: nothing to pick.
        }
      }
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

  // The findings of a layer page are those of one snapshot (the last); while another snapshot is
  // shown, a note above them says which step they describe.
  function markFindings(select) {
    const heading = [...document.querySelectorAll(".deepeyes-layer h2")]
      .find((h) => h.textContent.trim() === "Findings");
    let first = heading && heading.nextElementSibling;
    if (first && first.classList.contains("deepeyes-findings-step")) {
      first = first.nextElementSibling; // the note of an earlier choice
    }
    const match = first && /Findings at step (\d+)/.exec(first.textContent);
    if (!match) {
      return;
    }
    let note = document.querySelector(".deepeyes-findings-step");
    const shown = select.options[select.selectedIndex].dataset.step;
    if (shown === match[1]) {
      if (note) {
        note.remove();
      }
      return;
    }
    if (!note) {
      note = node("div", "deepeyes-notice deepeyes-findings-step");
      heading.after(note);
    }
    note.textContent = "These findings describe step " + match[1] + "; the views above show " +
      "step " + shown + ".";
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
      markFindings(select);
      embed(el, select.value);
    });
    markFindings(select);
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
