"""Findings as text: the table ``deepeyes report RUN`` prints and wiki exports embed."""

from __future__ import annotations

import unicodedata

from deepeyes_keras.run.layout import printable


def text_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK, emoji) characters take two, combining
    marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def format_report(summary: dict) -> str:
    """A readable terminal table of a findings summary.

    Names are printed through :func:`~deepeyes_keras.run.layout.printable`: a layer name holding
    a terminal escape sequence shows as ``␛[31m``, it never colours or moves the terminal.
    """
    header = (
        "layer",
        "filters",
        "stable since",
        "dead",
        "always on",
        "undetected",
        "redundant grp",
        "suggest width",
        "probe acc.",
    )
    rows = [header]
    for name, r in summary["layers"].items():
        rows.append(
            (
                printable(name),
                str(r["n_filters"]),
                "-" if r["stable_since_step"] is None else f"step {r['stable_since_step']}",
                str(r["dead"]),
                str(r["always_on"]),
                f"{100 * r['undetected_share']:.0f}%",
                str(r["redundant_groups"]),
                str(r["suggested_width"]),
                "-" if r["separability"] is None else f"{r['separability']:.3f}",
            )
        )
    widths = [max(text_width(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c + " " * (w - text_width(c)) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [f"DeepEyes findings at step {summary['step']}", ""] + lines
    if summary["suggestions"] or summary["suggested_widths"]:
        out.append("")
        for name, width in summary["suggested_widths"].items():
            out.append(f"- T4: {printable(name)} looks oversized; suggested width {width}")
        for s in summary["suggestions"]:
            out.append(f"- {printable(s['task'])}: {printable(s['text'])}")
    return "\n".join(out)
