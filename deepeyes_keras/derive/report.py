"""Findings as text: the table ``deepeyes report RUN`` prints and wiki exports embed."""

from __future__ import annotations


def format_report(summary: dict) -> str:
    """A readable terminal table of a findings summary."""
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
                name,
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [f"DeepEyes findings at step {summary['step']}", ""] + lines
    if summary["suggestions"] or summary["suggested_widths"]:
        out.append("")
        for name, width in summary["suggested_widths"].items():
            out.append(f"- T4: {name} looks oversized; suggested width {width}")
        for s in summary["suggestions"]:
            out.append(f"- {s['task']}: {s['text']}")
    return "\n".join(out)
