"""``deepeyes`` fenced blocks: live charts that authors embed in their own pages.

An author writes (see ``viewer_site/guide/embedding.md``)::

    ```deepeyes
    run: lenet
    view: layer          # overview, histograms or layer
    layer: conv1
    step: 300            # optional: default the last snapshot, else the nearest one
    ```

:func:`replace_blocks` finds such blocks in a page's Markdown (outside other code blocks),
:func:`parse_block` reads their ``key: value`` lines, and :func:`embed` turns one into HTML: the
chart's :func:`embed_block` figure, a note, or an error box. Markdown must not touch that HTML,
so :class:`Placeholders` carries it through rendering as a plain word that is swapped back in
the rendered page.

Example:
    >>> parse_block("run: lenet   # the run\\nstep: 300")
    {'run': 'lenet', 'step': '300'}
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from html import escape

from mkdocs.plugins import get_plugin_logger

from deepeyes_keras.names import did_you_mean
from deepeyes_keras.site.markup import Link, chart, notice
from deepeyes_keras.site.runs import SiteLayer, SiteRun

log = get_plugin_logger("deepeyes")

VIEWS = ("overview", "histograms", "layer")
BLOCK_KEYS = ("run", "view", "layer", "step", "caption", "if-missing", "publish")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")


class MissingRun(ValueError):
    """A block's run is absent and the block says what to show instead (``if-missing``)."""


# ----------------------------------------------------------------------------- reading blocks


def parse_block(body: str) -> dict[str, str]:
    """``key: value`` lines; blank lines and ``# comments`` (also after a value) are ignored."""
    opts: dict[str, str] = {}
    for raw in body.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip().strip("\"'")
        if not sep or not value:
            raise ValueError(f"cannot read line {raw.strip()!r}: expected 'key: value'.")
        if key not in BLOCK_KEYS:
            raise ValueError(f"unknown key {key!r}. Expected: {', '.join(BLOCK_KEYS)}.")
        opts[key] = value
    return opts


def replace_blocks(markdown: str, replace: Callable[[str], str]) -> str:
    """Calls ``replace(body)`` for each ```` ```deepeyes ```` fenced block outside other code blocks
    and puts what it returns, as its own paragraph, in place of the block."""
    lines = markdown.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        info = match["info"].split()
        if info and info[0].lower() == "deepeyes":
            body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
            out.extend(["", indent + replace(body), ""])
        else:  # another code block: left alone, deepeyes blocks inside it included
            out.extend(lines[i : end + 1])
        i = end + 1
    return "\n".join(out)


class Placeholders:
    """Stand-ins for the embed HTML of one page, from its Markdown to its rendered HTML."""

    def __init__(self):
        self.blocks: dict[str, str] = {}

    def add(self, block: str) -> str:
        """A word (random, so no author writes it) that :meth:`fill` replaces by ``block``."""
        token = f"DEEPEYESEMBED{len(self.blocks)}X{secrets.token_hex(6)}"
        self.blocks[token] = block
        return token

    def fill(self, html: str) -> str:
        """``html`` with each placeholder (and the paragraph Markdown made of it) replaced."""
        for token, block in self.blocks.items():
            html = re.sub(rf"<p>\s*{token}\s*</p>", lambda _m, b=block: b, html)
            html = html.replace(token, block)
        return html


# ----------------------------------------------------------------------------- embedding


def embed(body: str, *, runs: list[SiteRun], link: Link, n: int, where: str) -> str:
    """The HTML of the ``n``-th block (from 0) of a page: its chart, its ``if-missing`` note, or
    an error box; an error is also logged as a warning starting with ``where``."""
    try:
        opts = parse_block(body)
        return embed_html(opts, runs=runs, link=link, chart_id=f"deepeyes-embed-{n + 1}")
    except MissingRun as err:
        # The author expected this (e.g. a case study's runs are made by a script): a quiet
        # note instead of an error, and no warning, so `mkdocs build --strict` passes.
        log.info(f"{where}: {err}; showing its if-missing text")
        return notice(opts["if-missing"])
    except ValueError as err:
        log.warning(f"{where}: {err}")
        return notice(f"DeepEyes chart unavailable: {err}", kind="error")


def embed_html(opts: dict[str, str], *, runs: list[SiteRun], link: Link, chart_id: str) -> str:
    """The chart a block's options ask for; ValueError saying what is wrong otherwise."""
    if "run" not in opts:
        raise ValueError("no run given (add a line 'run: <run name>').")
    try:
        run = find_run(runs, opts["run"])
    except ValueError as err:
        if "if-missing" in opts:
            raise MissingRun(str(err)) from None
        raise
    view = opts.get("view", "layer" if "layer" in opts else "overview")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}. Expected one of {', '.join(VIEWS)}.")
    step = None
    if "step" in opts:
        try:
            step = int(opts["step"])
        except ValueError:
            raise ValueError(f"invalid step {opts['step']!r}: expected an integer.") from None
    if view == "layer":
        return layer_embed(opts, run, step, link=link, chart_id=chart_id)
    return run_embed(opts, run, view, step, link=link, chart_id=chart_id)


def layer_embed(opts: dict, run: SiteRun, step: int | None, *, link: Link, chart_id: str) -> str:
    """The linked view of a layer at the snapshot nearest ``step`` (default: the last)."""
    if "layer" not in opts:
        raise ValueError(f"view: layer needs a layer (one of {layer_names(run.layers)}).")
    layer = find_layer(run, opts["layer"])
    if not layer.views:
        raise ValueError(
            f"layer {layer.name!r} of run {run.name!r} has no linked views "
            "yet (its maps are being computed, or run `deepeyes maps RUN`)."
        )
    shown = nearest(sorted(layer.views), step)
    caption = f"{run.name} › {layer.name}, step {shown}" + asked(step, shown)
    return embed_block(
        chart_id=chart_id,
        spec_url=link(layer.views[shown]),
        caption=opts.get("caption", caption),
        page_url=None if run.published else f"{link(run.uri(layer.page))}?step={shown}",
    )


def run_embed(
    opts: dict, run: SiteRun, view: str, step: int | None, *, link: Link, chart_id: str
) -> str:
    """The training curves, or the perplexity histograms at the snapshot nearest ``step``."""
    spec = run.overview if view == "overview" else run.histograms
    if spec is None:
        raise ValueError(f"run {run.name!r} has no {view} view yet.")
    shown = None
    if view == "histograms":
        shown = nearest(run.steps, step)
        caption = f"{run.name}: perplexity histograms, step {shown}" + asked(step, shown)
    else:
        caption = f"{run.name}: training curves"
    return embed_block(
        chart_id=chart_id,
        spec_url=link(spec),
        snapshot=shown,
        caption=opts.get("caption", caption),
        page_url=None if run.published else link(run.uri("index.md")),
    )


def embed_block(
    *, chart_id: str, spec_url: str, caption: str, page_url: str | None, snapshot: int | None = None
) -> str:
    """A chart embedded in an author's page by a ``deepeyes`` fenced block."""
    text = escape(caption)
    if page_url:
        text = f'<a href="{escape(page_url)}">{text}</a>'
    body = chart(chart_id, spec_url, snapshot=snapshot, label=caption)
    return f'<figure class="deepeyes-figure">{body}<figcaption>{text}</figcaption></figure>'


# ----------------------------------------------------------------------------- looking up


def find_run(runs: list[SiteRun], name: str) -> SiteRun:
    """The run called ``name`` (its name, slug or directory name); ValueError with close names."""
    for run in runs:
        if name in (run.name, run.slug, run.path.name):
            return run
    known = [r.name for r in runs]
    hint = did_you_mean(name, known)
    hint = f" ({hint})" if hint else ""
    raise ValueError(f"unknown run {name!r}{hint}. Known runs: {known or 'none'}.")


def find_layer(run: SiteRun, name: str) -> SiteLayer:
    """The analysed layer called ``name`` (or with that key); ValueError with close names."""
    for layer in run.layers:
        if name in (layer.name, layer.key):
            return layer
    hint = did_you_mean(name, [la.name for la in run.layers])
    hint = f" ({hint})" if hint else ""
    raise ValueError(
        f"unknown layer {name!r} in run {run.name!r}{hint}. "
        f"Analysed layers: {layer_names(run.layers)}."
    )


def layer_names(layers: list[SiteLayer]) -> str:
    return ", ".join(repr(la.name) for la in layers) or "none"


def nearest(steps: list[int], step: int | None) -> int:
    """The step of ``steps`` nearest ``step`` (the earlier one on a tie; the last for None)."""
    if not steps:
        raise ValueError("the run has no readable snapshot yet.")
    if step is None:
        return steps[-1]
    return min(steps, key=lambda s: (abs(s - step), s))


def asked(step: int | None, shown: int) -> str:
    """What a caption adds when the snapshot shown is not the step the block asked for."""
    return "" if step is None or step == shown else f" (nearest snapshot to step {step})"
