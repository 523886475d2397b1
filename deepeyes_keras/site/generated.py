"""The pages the plugin generates: their site paths and titles, and rendering one.

``<section>/index.md`` (the runs), ``<section>/compare.md``, and per run ``<run>/index.md`` and
one ``<run>/L<i>.md`` per analysed layer. The plugin (:mod:`deepeyes_keras.site.plugin`) adds
them to the site as generated files and fills each with :func:`render`.

Example:
    >>> sorted(generated_pages([], "deepeyes"))
    ['deepeyes/compare.md', 'deepeyes/index.md']
"""

from __future__ import annotations

from dataclasses import dataclass

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
    page: GeneratedPage, runs: list[SiteRun], *, link: Link, section: str, source: str
) -> str:
    """The HTML of a generated page; ``source`` names where runs are looked for (home page)."""
    if page.kind == "home":
        return home_page(runs, link=link, section=section, source=source)
    if page.kind == "compare":
        return compare_page(runs, link=link, section=section)
    if page.kind == "run":
        return run_page(page.run, link=link)
    return layer_page(page.run, page.layer, link=link)
