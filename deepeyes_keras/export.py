"""Wiki export without JavaScript: a Markdown page with PNG (or SVG) images of a run's views.

Export only reads the run directory: it renders the views the views stage wrote (in any form,
their thumbnails joined in: :func:`deepeyes_keras.run.view_files.read_view`). A run whose
views are missing (recorded with ``maps=False``, or interrupted) needs ``deepeyes maps RUN``
first, and the error says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from deepeyes_keras.charts import render
from deepeyes_keras.derive.report import format_report
from deepeyes_keras.run.layout import printable, snapshot_stem
from deepeyes_keras.run.reader import load_run
from deepeyes_keras.run.view_files import read_view

_FORMATS = ("png", "svg")
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def markdown_text(text) -> str:
    r"""A name as Markdown text that renders as itself: control characters escaped
    (:func:`~deepeyes_keras.run.layout.printable`), ``& < >`` as HTML entities (a wiki passes
    raw HTML through), and Markdown's punctuation behind backslashes.

    Example:
        >>> markdown_text("<b>x</b> *y*")
        '&lt;b&gt;x&lt;/b&gt; \\*y\\*'
    """
    text = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def code_block(text: str, info: str = "text") -> list[str]:
    """Lines of a fenced code block holding ``text``, its fence longer than any run of
    backticks inside (so no name closes it early)."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text, fence]


def export_markdown(
    run_dir, out_dir, *, image_format: str = "png", step: int | None = None, progress=print
) -> Path:
    """Writes ``out_dir/index.md`` and the images it shows; returns the Markdown file.

    Args:
        run_dir: the run directory.
        out_dir: where to write (created).
        image_format: "png" or "svg".
        step: snapshot whose layer views to show (default: the last one with views).
        progress: ``callable(str)`` for progress lines, or None.
    """
    if image_format not in _FORMATS:
        raise ValueError(f"Invalid image format {image_format!r}; expected one of {_FORMATS}.")
    run = load_run(run_dir)
    if not run.snapshots:
        raise ValueError(f"Run {str(run_dir)!r} has no snapshots yet; nothing to export.")
    layout = run.layout
    missing = [
        p.name for p in (layout.view("overview"), layout.view("histograms")) if not p.is_file()
    ]
    if missing:
        raise ValueError(
            f"Run {str(run_dir)!r} has no views yet ({', '.join(missing)} missing). Run "
            f"`deepeyes maps {run.path}` first: it computes the maps, views and findings."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda message: None)
    steps = [
        s.step
        for s in run.snapshots
        if all(layout.view_file(layer.key, s.step).is_file() for layer in s.layers.values())
    ]
    if step is None:
        step = steps[-1] if steps else None
    elif step not in steps:
        raise ValueError(
            f"Snapshot step {step} has no views in {run.path}; steps with views: "
            f"{steps}. Run `deepeyes maps {run.path}` first."
        )

    def image(spec_path: Path, name: str) -> str:
        spec = read_view(spec_path)  # a damaged spec: DamagedFileError naming it and the fix
        file = f"{name}.{image_format}"
        (out / file).write_bytes(render(spec, image_format))
        say(f"wrote {out / file}")
        return file

    model = run.manifest.get("model", {})
    lines = [
        f"# DeepEyes run {markdown_text(run.name)}",
        "",
        f"Model {markdown_text(model.get('name'))} "
        f"({markdown_text(model.get('parameters', '?'))} parameters), "
        f"{markdown_text(run.status)}, last snapshot at step {run.snapshots[-1].step}.",
        "",
    ]
    summary = run.snapshots[-1].findings_summary
    if summary:
        lines += ["## Findings", "", *code_block(format_report(summary)), ""]
    lines += [
        "## Training",
        "",
        f"![training curves]({image(layout.view('overview'), 'overview')})",
        "",
        "## Perplexity histograms",
        "",
        f"![perplexity histograms]({image(layout.view('histograms'), 'histograms')})",
        "",
    ]
    if step is not None:
        lines += [f"## Layers at step {step}", ""]
        for name, layer in run.snapshots[
            [s.step for s in run.snapshots].index(step)
        ].layers.items():
            file = image(layout.view_file(layer.key, step), f"{layer.key}-{snapshot_stem(step)}")
            text = markdown_text(name)
            lines += [f"### {text}", "", f"![{text} at step {step}]({file})", ""]
    else:
        lines += ["No layer views yet: run `deepeyes maps RUN` to compute the maps.", ""]
    page = out / "index.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page
