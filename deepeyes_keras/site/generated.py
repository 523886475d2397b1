"""The pages the plugin generates: their site paths and titles, and rendering one.

``<section>/index.md`` (the runs), ``<section>/compare.md``, and per run ``<run>/index.md`` and
one ``<run>/<layer>.md`` per analysed layer (named after the layer,
:func:`deepeyes_keras.site.runs.layer_slug`). The plugin (:mod:`deepeyes_keras.site.plugin`)
adds them to the site as generated files and fills each with :func:`render`.

Layer pages used to be ``<run>/L<i>.md``; :func:`redirects` lists those old paths, and the
plugin writes a small HTML page (:func:`redirect_html`) at each that sends the reader on to the
layer's page, keeping ``?step=N``.

Example:
    >>> sorted(generated_pages([], "deepeyes"))
    ['deepeyes/compare.md', 'deepeyes/index.md']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

from deepeyes_keras.site.compare import compare_page
from deepeyes_keras.site.markup import Link
from deepeyes_keras.site.pages import home_page, layer_page, run_page
from deepeyes_keras.site.runs import SiteLayer, SiteRun

PAGE_KINDS = ("home", "compare", "run", "layer")


@dataclass(frozen=True)
class GeneratedPage:
    """A page the plugin makes: its kind (one of ``PAGE_KINDS``), title, and what it shows."""

    kind: str
    title: str
    run: SiteRun | None = None
    layer: SiteLayer | None = None


def generated_pages(runs: list[SiteRun], section: str) -> dict[str, GeneratedPage]:
    """Every generated page by its site path (``deepeyes/index.md``, ...)."""
    out = {
        f"{section}/index.md": GeneratedPage("home", "DeepEyes runs"),
        f"{section}/compare.md": GeneratedPage("compare", "Compare runs"),
    }
    for run in runs:
        out[run.uri("index.md")] = GeneratedPage("run", run.name, run)
        for layer in run.layers:
            out[run.uri(layer.page)] = GeneratedPage("layer", layer.name, run, layer)
    return out


def render(
    page: GeneratedPage,
    runs: list[SiteRun],
    *,
    link: Link,
    section: str,
    source: str,
    site_links: list[tuple[str, str]] = (),
) -> str:
    """The HTML of a generated page; ``source`` names where runs are looked for (home and
    compare pages), ``site_links`` the site's other top-level pages (title, site path) that
    the home page leads to."""
    if page.kind == "home":
        return home_page(runs, link=link, section=section, source=source, site_links=site_links)
    if page.kind == "compare":
        return compare_page(runs, link=link, section=section, source=source)
    if page.kind == "run":
        return run_page(page.run, link=link)
    return layer_page(page.run, page.layer, link=link)


# ----------------------------------------------------------------------------- old layer URLs


def redirects(runs: list[SiteRun]) -> dict[str, str]:
    """The old site path of each layer page (``<run>/L<i>.md``) -> its page now.

    Example:
        >>> redirects([])
        {}
    """
    return {
        run.uri(layer.old_page): run.uri(layer.page)
        for run in runs
        for layer in run.layers
        if layer.old_page != layer.page
    }


def redirect_file(old_page: str, *, use_directory_urls: bool) -> str:
    """Where the redirect of an old page lies in the built site, as mkdocs would place the page.

    Example:
        >>> redirect_file("deepeyes/lenet/L0.md", use_directory_urls=True)
        'deepeyes/lenet/L0/index.html'
        >>> redirect_file("deepeyes/lenet/L0.md", use_directory_urls=False)
        'deepeyes/lenet/L0.html'
    """
    stem = old_page.removesuffix(".md")
    return f"{stem}/index.html" if use_directory_urls else f"{stem}.html"


def redirect_html(target: str) -> str:
    """A page that sends the reader to ``target`` (a relative URL), keeping the query string
    (``?step=N``) and fragment; without JavaScript a meta refresh and a link do it."""
    href = escape(target)
    # In a script element only "</" could end it early: JSON with "<" escaped cannot.
    script_target = json.dumps(target).replace("<", "\\u003c")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Page moved</title>"
        f'<link rel="canonical" href="{href}"><meta name="robots" content="noindex">'
        f"<script>location.replace({script_target} + location.search + location.hash);</script>"
        f'<meta http-equiv="refresh" content="0; url={href}"></head>'
        f'<body><p>This page moved to <a href="{href}">{href}</a>.</p></body></html>\n'
    )
