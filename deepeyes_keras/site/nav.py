"""The navigation section of the generated pages: runs home, compare, then each run's pages.

:func:`with_runs_section` appends it to the site's navigation (the plugin skips this when the
author's ``nav`` already places the generated pages, or when the ``nav`` option is off).
"""

from __future__ import annotations

from html import escape

from mkdocs.structure.files import Files
from mkdocs.structure.nav import Navigation, Section

from deepeyes_keras.site.runs import SiteRun


def with_runs_section(
    nav: Navigation, *, files: Files, runs: list[SiteRun], section: str, title: str
) -> Navigation:
    """``nav`` with a section titled ``title`` listing the generated pages at the end."""

    def page(uri):
        file = files.get_file_from_path(uri)
        return file.page if file is not None else None

    children = [page(f"{section}/index.md"), page(f"{section}/compare.md")]
    for run in runs:
        run_pages = [page(run.uri("index.md"))] + [page(run.uri(la.page)) for la in run.layers]
        children.append(Section(escape(run.name), [p for p in run_pages if p]))
    return relinked([*nav.items, Section(escape(title), [p for p in children if p])])


def relinked(items: list) -> Navigation:
    """A Navigation over `items` with parent, previous and next links set again."""
    flat = []

    def walk(children, parent):
        for item in children:
            item.parent = parent
            if item.is_section:
                walk(item.children, item)
            elif item.is_page:
                flat.append(item)

    walk(items, None)
    for before, item, after in zip([None, *flat[:-1]], flat, [*flat[1:], None], strict=True):
        item.previous_page, item.next_page = before, after
    return Navigation(items, flat)
