"""Small HTML builders shared by the generated pages, the findings tables and the embed blocks.

Every builder escapes the text it is given (:func:`html.escape`, in text and attributes) and takes
cells that are already HTML, so a name that comes from a user (run, model, layer) renders as text
wherever it lands. Pure string building: no mkdocs, no TensorFlow.

Example:
    >>> table(["layer", "filters"], [[anchor("L0/", "conv1"), "4"]])  # doctest: +ELLIPSIS
    '<div class="deepeyes-scroll"><table class="deepeyes-table"><thead><tr><th>layer</th>...'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

Link = Callable[[str], str]
"""Turns the site path of a generated file into a URL relative to the page being rendered."""


def attr_json(value: Any) -> str:
    """A JSON value safe inside a double-quoted HTML attribute."""
    return escape(json.dumps(value, sort_keys=True), quote=True)


def number(value: Any) -> str:
    """An integer with thousands separators, anything else as escaped text, ``None`` as "-"."""
    return (
        f"{value:,}" if isinstance(value, int) else escape(str(value if value is not None else "-"))
    )


def anchor(href: str, text: str, *, rel: str | None = None) -> str:
    """``<a href="href">text</a>``, both escaped."""
    extra = f' rel="{escape(rel)}"' if rel else ""
    return f'<a href="{escape(href)}"{extra}>{escape(text)}</a>'


def row(cells: Iterable[str]) -> str:
    """A table row of cells that are already HTML."""
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def table(heads: Iterable[str], rows: Iterable[Iterable[str]], *, css: str = "") -> str:
    """A scrolling ``deepeyes-table``: ``heads`` are text, each row's cells already HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    body = "".join(row(cells) for cells in rows)
    classes = f"deepeyes-table {css}".strip()
    return (
        f'<div class="deepeyes-scroll"><table class="{escape(classes)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def notice(text: str, *, kind: str = "notice") -> str:
    """A note box (``kind="error"`` makes it an alert)."""
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="deepeyes-{kind}"{role}>{escape(text)}</div>'


def chart(chart_id: str, spec_url: str, *, snapshot: int | None = None, label: str = "") -> str:
    """The placeholder `viewer.js` fills: it fetches `spec_url` and embeds it with vega-embed."""
    extra = "" if snapshot is None else f' data-snapshot="{int(snapshot)}"'
    aria = f' aria-label="{escape(label)}"' if label else ""
    return (
        f'<div class="deepeyes-chart" id="{escape(chart_id)}" data-spec="{escape(spec_url)}"'
        f'{extra} role="figure"{aria}><span class="deepeyes-loading">loading chart…</span></div>'
    )
