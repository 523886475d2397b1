"""The gauntlet (issue 18, item 5): hostile names, broken files and odd training inputs.

Every case ends with a clear message (an error or a warning naming the problem and the fix) or
with the expected result, and nothing already written is lost:

1. Names with markup, quotes, separators, 300 characters, non-ASCII text and terminal escape
   sequences render as text in the built site, the chart specs, ``deepeyes export``,
   ``deepeyes report`` and ``notebook.show``. TensorFlow trains only models whose model and
   layer names match ``[A-Za-z0-9_.\\->]`` (its name scopes; Keras itself forbids ``/``), so the
   trained run carries the hostile text in its run name and a metric name (neither is a scope)
   and 300-character model and layer names; a copy of it, renamed on disk, gets the exact hostile
   model and layer names in its manifest (what a nested model's ``outer/inner`` names, a Keras
   backend without scopes or a hand-edited run gives) and its findings and views derived again.
2. Damaged files on a copy of the fixture runs: every tool names the file, the other files of
   the run are left as they were.
3. Training-time inputs: NaN/inf inputs, exploding activations, labels out of range or float,
   no labels, a batch of one, more images per step than the batch, uint8 and float64 inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import unicodedata
import warnings
from html.parser import HTMLParser
from pathlib import Path

import keras
import markdown
import numpy as np
import pytest
import tensorflow as tf

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.cli import main
from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.pipeline import update_run
from deepeyes_keras.derive.views import write_views
from deepeyes_keras.run.layout import DamagedFileError, printable
from deepeyes_keras.run.view_files import read_view

pytestmark = pytest.mark.slow

SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>x</b>"
QUOTES = 'it\'s "quoted"'
INTL = "é 中文 😀"
ESCAPE = "red\x1b[31mALERT\x1b[0m"
HOSTILE = f"{SCRIPT} {BOLD} {QUOTES} {INTL} {ESCAPE} &amp;"
# What DeepEyesCallback(run_name=...) accepts (no separators) and TensorFlow's scopes allow.
TRAINED_RUN = HOSTILE.replace("/", "")
METRIC = f"acc {HOSTILE} a/b\\c"
LONG_MODEL = "model." + "m" * 294
LONG_LAYER = "conv-" + "c" * 295
# The copy renamed on disk (a directory name holds no "/"), with these names in its manifest.
RENAMED_DIR = f"renamed {BOLD.replace('/', '')} {QUOTES} {INTL} \x1b[31m"
RENAMED = {
    "run": f"{HOSTILE} a/b\\c",
    "model": f"{BOLD} model/{QUOTES}\\{INTL}",
    "layers": {
        LONG_LAYER: SCRIPT,
        "fc": f"{QUOTES} {INTL} {ESCAPE}",
        "out": (f"{BOLD} {INTL} " + "x" * 300)[:300],  # 300 characters
    },
}


def controls(text: str) -> set[str]:
    """The control characters of ``text`` (newlines aside)."""
    return {c for c in text if unicodedata.category(c) == "Cc" and c != "\n"}


# ----------------------------------------------------------------------------- 1. names


def train_named_run(log_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.random((48, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 48)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name=LONG_LAYER),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(6, activation="relu", name="fc"),
            keras.layers.Dense(3, name="out"),
        ],
        name=LONG_MODEL,
    )
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name=METRIC)],
    )
    cb = DeepEyesCallback(
        log_dir=log_dir,
        run_name=TRAINED_RUN,
        snapshot_every=6,
        reservoir_size=128,
        maps=False,
        verbose=0,
    )
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    update_run(cb.run_dir, max_points=64)
    return Path(cb.run_dir)


def rename_run(source: Path, target: Path) -> Path:
    """A copy of ``source`` at ``target`` with the RENAMED names, findings and views derived."""
    shutil.copytree(source, target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["run_name"] = RENAMED["run"]
    manifest["model"]["name"] = RENAMED["model"]
    for layer in manifest["analysed_layers"] + manifest["model"]["layers"]:
        layer["name"] = RENAMED["layers"].get(layer["name"], layer["name"])
    manifest_path.write_text(json.dumps(manifest))
    for record_path in (target / "snapshots").glob("*.json"):
        record = json.loads(record_path.read_text())
        record["layers"] = {RENAMED["layers"].get(k, k): v for k, v in record["layers"].items()}
        record_path.write_text(json.dumps(record))
    shutil.rmtree(target / "views")
    shutil.rmtree(target / "findings")
    (target / "findings.json").unlink()
    write_findings(target)
    write_views(target)
    return target


@pytest.fixture(scope="module")
def named_runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs in one directory: the trained one and its renamed copy."""
    root = tmp_path_factory.mktemp("named") / "runs"
    trained = train_named_run(root)
    renamed = rename_run(trained, root / RENAMED_DIR)
    return {"root": root, "trained": trained, "renamed": renamed}


def layer_names(run_dir: Path) -> list[str]:
    return [info["name"] for info in load_run(run_dir).manifest["analysed_layers"]]


@pytest.mark.parametrize("name", ["a/b", "a\\b", "../up", "", "  "])
def test_run_names_with_separators_are_refused_with_the_fix(name, tmp_path):
    with pytest.raises(ValueError, match="Expected a non-empty name without path separators"):
        DeepEyesCallback(log_dir=tmp_path, run_name=name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "x" * 300, "中" * 100, "a\x00b"])
def test_run_names_that_are_no_directory_name_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match="run_name"):
        DeepEyesCallback(log_dir=tmp_path / "logs", run_name=name)


def test_a_300_character_model_name_still_gets_a_dated_run_directory(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="out")], name=LONG_MODEL
    )
    model.compile("sgd", "mse")
    cb = DeepEyesCallback(log_dir=tmp_path, maps=False, verbose=0)
    model.fit(np.zeros((4, 4)), np.zeros((4, 3)), verbose=0, callbacks=[cb])
    assert load_run(cb.run_dir).manifest["model"]["name"] == LONG_MODEL


class PageText(HTMLParser):
    """A page's visible text and the text of its script elements (entities decoded)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.chunks: list[str] = []
        self.tags: list[str] = []
        self._inside: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("script", "style"):
            self._inside = tag
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data):
        if self._inside == "script":
            self.scripts[-1] += data
        elif self._inside is None:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def test_names_render_as_text_in_the_built_site(
    named_runs, tmp_path, write_site, build_site, mkdocs_warnings
):
    site = build_site(write_site(tmp_path, named_runs["root"]))
    assert mkdocs_warnings == []
    pages = sorted((site / "deepeyes").rglob("*.html"))
    fragments = ("alert(1)", "<b>", "it's", "中文", "\x1b[31m")
    for page in pages:
        source = page.read_text(encoding="utf-8")
        for raw in (SCRIPT, BOLD, "<script>alert", "<b>x"):
            assert raw not in source, f"{raw} unescaped in {page}"
        for script in PageText(source).scripts:
            assert not any(f in script for f in fragments), f"a name in a script of {page}"
    home = PageText((site / "deepeyes" / "index.html").read_text(encoding="utf-8")).text
    assert TRAINED_RUN in home and RENAMED["run"] in home and RENAMED["model"] in home
    assert LONG_MODEL in home
    run_dirs = [p.parent for p in (site / "deepeyes").glob("*/index.html")]
    run_dirs = [d for d in run_dirs if d.name != "compare"]
    assert len(run_dirs) == 2
    by_name = {}
    for run_dir in run_dirs:
        text = PageText((run_dir / "index.html").read_text(encoding="utf-8")).text
        by_name[run_dir.name] = text
    # (every page lists every run in its navigation: the pages are told apart by their slug)
    renamed_page = next(t for slug, t in by_name.items() if slug.startswith("renamed"))
    assert f"{RENAMED['run']} - fixture" in renamed_page  # the page's <title>
    for name in [RENAMED["model"], *RENAMED["layers"].values()]:
        assert name in renamed_page, name
    trained_page = next(t for slug, t in by_name.items() if slug.startswith("script"))
    assert f"{TRAINED_RUN} - fixture" in trained_page
    assert LONG_LAYER in trained_page and LONG_MODEL in trained_page
    # every layer page: its name in the heading and the title, as text
    # (layer pages are named by layer now; the old L<i> URLs are redirect pages)
    layer_pages = [p for p in pages if p.parent.parent in run_dirs and "Page moved" not in
                   p.read_text(encoding="utf-8")]
    headings = [PageText(p.read_text(encoding="utf-8")).text for p in layer_pages]
    for name in [*RENAMED["layers"].values(), LONG_LAYER]:
        assert any(f"{name} - fixture" in h for h in headings), name
    # the slugs of these runs are plain URL paths
    assert all(all(c.isascii() and (c.isalnum() or c in "._-") for c in d.name) for d in run_dirs)


def all_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)


def titles(spec) -> list[str]:
    out = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "title" and isinstance(value, str):
                out.append(value)
            elif key == "title" and isinstance(value, dict) and isinstance(value.get("text"), str):
                out.append(value["text"])
            else:
                out += titles(value)
    elif isinstance(spec, list):
        for value in spec:
            out += titles(value)
    return out


def test_chart_specs_hold_the_names_as_plain_strings(named_runs):
    from deepeyes_keras.charts import render

    for key in ("trained", "renamed"):
        run_dir = named_runs[key]
        names = layer_names(run_dir)
        histograms = json.loads((run_dir / "views" / "histograms.vl.json").read_text())
        found = titles(histograms)
        for name in names:
            assert any(t.startswith(printable(name)) for t in found), name
        for index, name in enumerate(names):
            view = run_dir / "views" / "step-00000006" / f"L{index}.vl.json.gz"
            assert f"{printable(name)}, step 6" in titles(read_view(view))
        overview = json.loads((run_dir / "views" / "overview.vl.json").read_text())
        assert printable(METRIC) in titles(overview)
        for spec in (histograms, overview):
            # no control character in any string of a spec; the SVG it draws is valid XML
            assert not any(controls(s) for s in all_strings(spec))
            svg = render(spec, "svg").decode("utf-8")
            import xml.etree.ElementTree as ET

            ET.fromstring(svg)
    # the renamed run's layer names: markup and quotes unchanged, the escape sequence shown
    assert printable(ESCAPE) == "red␛[31mALERT␛[0m"


def test_a_spec_holding_a_control_character_renders(tmp_path):
    # A view written before names went through printable (or any user's spec): vl-convert used
    # to abort the whole process (a Rust panic) on the escape character. In a subprocess, so
    # that a regression fails this test instead of killing the test session.
    code = (
        "from deepeyes_keras.charts import render\n"
        "from deepeyes_keras.charts.overview import overview_spec\n"
        "spec = overview_spec({'step': [1, 2], 'loss': [1.0, 0.5], 'acc\\x1b[31m': [0.1, 0.2]})\n"
        "assert render(spec, 'png')[:4] == b'\\x89PNG'\n"
        "assert b'\\x1b' not in render(spec, 'svg')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_export_markdown_escapes_the_names(named_runs, tmp_path):
    for key in ("trained", "renamed"):
        out = tmp_path / key
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main(["export", str(named_runs[key]), "--out", str(out)]) == 0, err.getvalue()
        page = (out / "index.md").read_text(encoding="utf-8")
        assert not controls(page)
        prose = page.split("```text")[0] + page.split("```text")[-1].split("```")[-1]
        assert "<script" not in prose and "<b>" not in prose  # (the findings are a code block)
        html = markdown.markdown(page, extensions=["fenced_code"])
        parsed = PageText(html)
        assert parsed.scripts == [] and "b" not in parsed.tags
        run = load_run(named_runs[key])
        assert f"DeepEyes run {printable(run.name)}" in parsed.text
        assert printable(run.manifest["model"]["name"]) in parsed.text
        for name in layer_names(named_runs[key]):
            assert f"\n{printable(name)}\n" in f"\n{parsed.text}\n", name  # its own heading
        images = [p.name for p in out.glob("*.png")]
        assert len(images) == 2 + len(layer_names(named_runs[key]))


def test_report_prints_no_control_characters(named_runs, tmp_path):
    for key in ("trained", "renamed"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["report", str(named_runs[key])]) == 0
        text = out.getvalue()
        assert not controls(text), sorted(controls(text))
        run = load_run(named_runs[key])
        assert printable(run.name) in text
        table = text.split("\n\n")[1].splitlines()
        assert len({len(line.rstrip()) for line in table[:2]}) == 1  # header and its rule
        for name in layer_names(named_runs[key]):
            assert any(line.startswith(printable(name)) for line in table), name
    # a path holding an escape sequence, in an error message
    missing = tmp_path / "no\x1b[2Jrun"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["report", str(missing)]) == 2
    said = err.getvalue()
    assert ("no␛[2Jrun" in said or "no\\x1b[2Jrun" in said) and not controls(said), said


def test_notebook_show_holds_the_names_as_plain_strings(named_runs):
    from deepeyes_keras.notebook import show, view_spec

    run = load_run(named_runs["renamed"])
    for name in layer_names(named_runs["renamed"]):
        spec = view_spec(run, layer=name, step=6)
        assert f"{printable(name)}, step 6" in titles(spec)
        assert f"{printable(name)}, step 6" in titles(show(run, layer=name).to_dict())
    histograms = show(run, "histograms").to_dict()
    assert all(
        any(t.startswith(printable(n)) for t in titles(histograms))
        for n in RENAMED["layers"].values()
    )
    assert printable(METRIC) in titles(show(run).to_dict())


# ----------------------------------------------------------------------------- 2. broken files


def hashes(run_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(max(path.stat().st_size // 3, 300)))


def list_missing_snapshot(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["snapshots"].append(
        {"step": 18, "epoch": 2, "file": "snapshots/step-00000018.json", "time": "later"}
    )
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "snapshots" / "step-00000006.json").unlink()


# Per damage: the file(s) to name, how it is made, and per tool what it does: "warn" (goes on,
# names the file in a warning), "error" (stops, names the file), "quiet" (never reads it).
DAMAGES = {
    "half snapshot record": (
        ["snapshots/step-00000006.json"],
        lambda run: half(run / "snapshots" / "step-00000006.json"),
        dict(load="warn", site="warn", maps="warn", export="warn", report="warn", show="warn"),
    ),
    "zero-byte snapshot arrays": (
        ["snapshots/step-00000006.npz"],
        lambda run: (run / "snapshots" / "step-00000006.npz").write_bytes(b""),
        dict(load="warn", site="warn", maps="warn", export="warn", report="warn", show="warn"),
    ),
    "random bytes in a sample chunk": (
        ["samples/L0/entries-00000006.npz"],
        lambda run: random_bytes(run / "samples" / "L0" / "entries-00000006.npz"),
        dict(
            load="quiet", site="quiet", maps="error", export="quiet", report="error", show="quiet"
        ),
    ),
    "random bytes in a layer view": (
        ["views/step-00000012/L0.vl.json.gz"],
        lambda run: random_bytes(run / "views" / "step-00000012" / "L0.vl.json.gz"),
        dict(
            load="quiet",
            site="warn",
            maps="quiet",
            export="error",
            report="quiet",
            show={"overview": "quiet", "histograms": "quiet", "layer": "warn"},
        ),
    ),
    "manifest lists missing snapshot files": (
        ["snapshots/step-00000006.json", "snapshots/step-00000018.json"],
        list_missing_snapshot,
        dict(load="warn", site="warn", maps="warn", export="warn", report="warn", show="warn"),
    ),
    "zero-byte manifest": (
        ["manifest.json"],
        lambda run: (run / "manifest.json").write_bytes(b""),
        dict(load="error", site="warn", maps="error", export="error", report="error", show="error"),
    ),
}
# What each tool may write in the run directory (export writes to --out, outside it here).
WRITES = {"maps": ("maps/", "views/", "findings/", "findings.json")}


def call(fn) -> tuple[object, str]:
    """``fn()``'s result (or the DamagedFileError/ValueError it raised) and all it said."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            result = fn()
        except ValueError as error:  # DamagedFileError is one; anything else fails the test
            result = error
    raised = [str(result)] if isinstance(result, Exception) else []
    said = "\n".join([out.getvalue(), err.getvalue(), *(str(w.message) for w in caught), *raised])
    return result, said


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_file_is_named_and_nothing_else_changes(
    damage, runs_copy, tmp_path, write_site, build_site, mkdocs_warnings
):
    from deepeyes_keras.notebook import show

    files, make, expected = DAMAGES[damage]
    run_dir = runs_copy / "tiny-a"
    make(run_dir)
    named = [str(run_dir / f) for f in files]
    before = hashes(run_dir)

    def check(tool, result, said, failed, view=None):
        mentioned = [n for n in named if n in said]
        expect = expected[tool] if isinstance(expected[tool], str) else expected[tool][view]
        if expect == "quiet":
            assert not failed and not mentioned, (tool, said)
            return
        assert mentioned == named, (tool, said)
        assert failed == (expect == "error"), (tool, result, said)
        if "is damaged" in said:  # our own messages say what to do
            assert "restore it" in said or "deepeyes maps RUN" in said, (tool, said)

    result, said = call(lambda: load_run(run_dir))
    check("load", result, said, isinstance(result, Exception))
    if expected["load"] == "error":
        assert isinstance(result, DamagedFileError)

    site = build_site(write_site(tmp_path / "site", runs_copy))
    check("site", None, "\n".join(mkdocs_warnings), failed=False)
    assert (site / "deepeyes" / "tiny-b" / "L0" / "index.html").is_file()  # the other run
    assert (site / "deepeyes" / "tiny-a" / "index.html").is_file() == (
        damage != "zero-byte manifest"
    )

    for view, layer in (("overview", None), ("histograms", None), ("layer", "conv1")):
        result, said = call(lambda v=view, la=layer: show(run_dir, v, layer=la).to_dict())
        check("show", result, said, isinstance(result, Exception), view=view)

    for tool, args in (
        ("report", ["report", str(run_dir)]),
        ("export", ["export", str(run_dir), "--out", str(tmp_path / "export")]),
        ("maps", ["maps", str(run_dir), "--max-points", "64"]),
    ):
        result, said = call(lambda args=args: main(args))
        assert result in (0, 2), (tool, result)  # an exception out of main() fails here
        check(tool, result, said, failed=result == 2)

    after = hashes(run_dir)
    allowed = WRITES["maps"]
    changed = {k for k in before if before[k] != after.get(k)}
    assert not {k for k in changed if not k.startswith(allowed)}, changed
    assert set(before) <= set(after)  # nothing removed
    if damage == "random bytes in a layer view":  # `deepeyes maps` wrote the damaged view again
        assert read_view(run_dir / files[0])["$schema"]


# ----------------------------------------------------------------------------- 3. inputs


def strict_load(path: Path):
    def reject(token):
        raise ValueError(f"non-strict JSON token {token} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def tiny_model(*, activation=None, regularized=False, loss="sparse"):
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation=activation, name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="dense"),
    ]
    if regularized:  # a loss of its own: trains without labels
        layers.append(keras.layers.ActivityRegularization(l2=0.01, name="reg"))
    model = keras.Sequential(layers, name="tiny")
    losses = {
        "sparse": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "none": None,
        "mean_square": lambda y_true, y_pred: tf.reduce_mean(tf.square(y_pred)),
    }
    model.compile("sgd", losses[loss])
    return model


def images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n)


def with_nonfinite(x):
    x = x.copy()
    x[0, 0, 0, 0], x[1, 4, 4, 0], x[2] = np.nan, np.inf, -np.inf
    return x


def exploded(scale, *, learning_rate=0.01):
    model = tiny_model()
    kernel, bias = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel * scale, bias + scale])
    model.compile(keras.optimizers.SGD(learning_rate), model.loss)
    return model


X, Y = images()
# name: (model factory, fit arguments, callback arguments, expectations)
INPUTS = {
    "nan and inf inputs": (tiny_model, dict(x=with_nonfinite(X), y=Y), {}, {"nonfinite": "conv"}),
    "exploding activations": (lambda: exploded(1e38), dict(x=X, y=Y), {}, {"nonfinite": "dense"}),
    # near the float32 limit but finite (frozen weights): the sums used to overflow
    "huge finite activations": (
        lambda: exploded(1e36, learning_rate=0.0),
        dict(x=X, y=Y),
        {},
        {"max_activation": 1e36},
    ),
    "labels out of range": (
        lambda: tiny_model(loss="mean_square"),
        dict(x=X, y=np.where(np.arange(32) % 4 == 0, 17, Y)),
        {},
        {"labels": {-1, 0, 1, 2}},
    ),
    "float labels": (
        tiny_model,
        dict(x=X, y=np.array([0.0, 1.0, 2.0, 0.5] * 8, "float32")),
        {},
        {"labels": {0, 1, 2}},
    ),
    "no labels": (
        lambda: tiny_model(regularized=True, loss="none"),
        dict(x=tf.data.Dataset.from_tensor_slices(X).batch(8)),
        {},
        {"labels": {-1}},
    ),
    "batch of one": (tiny_model, dict(x=X[:6], y=Y[:6], batch_size=1), {}, {"snapshots": 3}),
    "images_per_step above the batch": (
        tiny_model,
        dict(x=X[:16], y=Y[:16], batch_size=4),
        {"images_per_step": 16},
        {},
    ),
    "uint8 inputs": (tiny_model, dict(x=(X * 255).astype("uint8"), y=Y), {}, {"patch_max": 200}),
    "float64 inputs": (tiny_model, dict(x=X.astype("float64"), y=Y), {}, {}),
}
ARRAYS = (
    "max_activation",
    "frequency",
    "jaccard",
    "label_activation",
    "perplexity_histogram",
    "perplexity_change",
    "histogram_cumulative",
)


def check_run(run_dir: Path, expect: dict) -> None:
    for path in run_dir.rglob("*.json"):
        strict_load(path)
    run = load_run(run_dir)
    assert run.status == "finished" and run.skipped == []
    assert len(run.snapshots) == expect.get("snapshots", len(run.snapshots)) > 0
    last = run.snapshots[-1]
    for name, layer in last.layers.items():
        for field in ARRAYS:
            assert np.isfinite(getattr(layer, field)).all(), (name, field)
        samples = layer.samples
        assert len(samples) > 0
        for column in ("activation", "descriptor", "patch"):
            assert np.isfinite(getattr(samples, column).astype(np.float32)).all(), (name, column)
        if "labels" in expect:
            assert set(samples.label.tolist()) <= expect["labels"], name
        assert layer.nonfinite >= 0
    if "nonfinite" in expect:
        assert last.layers[expect["nonfinite"]].nonfinite > 0
        assert run.manifest["nonfinite_replaced"] > 0  # the NaN losses, written as null
    else:
        assert all(layer.nonfinite == 0 for layer in last.layers.values())
    if "max_activation" in expect:
        assert last.layers["conv"].max_activation.max() > expect["max_activation"]
    if "patch_max" in expect:
        assert last.layers["conv"].samples.patch.max() > expect["patch_max"]


@pytest.mark.parametrize("case", list(INPUTS))
def test_odd_training_inputs_record_finite_statistics(case, tmp_path):
    make_model, fit, options, expect = INPUTS[case]
    cb = DeepEyesCallback(
        log_dir=tmp_path, run_name="run", snapshot_every=2, maps=False, verbose=0, **options
    )
    if not isinstance(fit["x"], tf.data.Dataset):
        fit = {"batch_size": 8, **fit}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's and Keras' own (a lambda loss, shuffle)
        make_model().fit(**fit, verbose=0, callbacks=[cb])
    check_run(tmp_path / "run", expect)


def test_labels_out_of_range_for_the_loss_fail_in_keras_and_the_run_stays_readable(tmp_path):
    cb = DeepEyesCallback(log_dir=tmp_path, run_name="run", snapshot_every=2, maps=False, verbose=0)
    y = np.where(np.arange(32) % 4 == 0, 17, Y)
    with pytest.raises(tf.errors.InvalidArgumentError, match="17"):
        tiny_model().fit(X, y, batch_size=8, verbose=0, callbacks=[cb])
    for path in (tmp_path / "run").rglob("*.json"):
        strict_load(path)
    assert load_run(tmp_path / "run").status == "training"  # as after any crash


def test_huge_activations_keep_every_statistic_finite():
    # float32 activations near the limit: the pairwise and label sums used to overflow to inf,
    # and the Jaccard matrix became NaN (which the maps stage then refused).
    from deepeyes_keras.record import statistics as st

    stats = st.LayerStatistics(4, 3, lambda name, value: tf.Variable(value, trainable=False))
    rng = np.random.default_rng(0)
    seen = []
    for step in range(1, 4):
        acts = (rng.random((160, 4)) * 3e38).astype(np.float32)
        seen.append(acts.astype(np.float64))
        stats.update(tf.constant(acts), tf.constant(rng.integers(0, 3, 160), tf.int32), step)
    raw = {name: v.numpy() for name, v in stats.variables().items()}
    final = st.finalize(raw, step=3)
    for name, value in final.items():
        assert np.isfinite(value).all(), name
    a = np.concatenate(seen)
    weighted = np.minimum(a[:, 0], a[:, 1]).sum() / np.maximum(a[:, 0], a[:, 1]).sum()
    np.testing.assert_allclose(final["jaccard"][0, 1], weighted, rtol=1e-4)
    scaled = st.LayerStatistics(4, 3, lambda name, value: tf.Variable(value, trainable=False))
    acts = rng.random((20, 4)).astype(np.float32)
    scaled.update(tf.constant(acts * 1e38), tf.constant(np.zeros(20), tf.int32), 1)
    small = st.LayerStatistics(4, 3, lambda name, value: tf.Variable(value, trainable=False))
    small.update(tf.constant(acts), tf.constant(np.zeros(20), tf.int32), 1)
    big, little = (
        st.finalize({n: v.numpy() for n, v in s.variables().items()}, step=1)
        for s in (scaled, small)
    )
    np.testing.assert_allclose(big["jaccard"], little["jaccard"], rtol=1e-5)
    np.testing.assert_array_equal(scaled.histogram.numpy(), small.histogram.numpy())


def test_an_exploded_run_gets_maps_findings_and_a_report(tmp_path):
    cb = DeepEyesCallback(log_dir=tmp_path, run_name="run", snapshot_every=2, maps=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exploded(1e38).fit(X, Y, batch_size=8, verbose=0, callbacks=[cb])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["maps", str(cb.run_dir), "--max-points", "64"]) == 0
        assert main(["report", str(cb.run_dir)]) == 0
    assert "DeepEyes findings at step 4" in out.getvalue()
    for path in Path(cb.run_dir).rglob("*.json"):
        strict_load(path)


def test_a_manifest_that_is_json_but_no_object_is_named(runs_copy):
    (runs_copy / "tiny-a" / "manifest.json").write_text("[]")
    with pytest.raises(ValueError, match=r"manifest.json is damaged.*Restore it from a copy"):
        load_run(runs_copy / "tiny-a")
