"""`deepeyes redesign`: the proposal, the hook file, the retrained comparison and its page.

A tiny CNN is recorded once (12 steps, DeepEyes watching, ``maps=False``) and its findings
computed; each test works on a copy. Proposals are written by hand where the numbers matter, so
the tests do not depend on what today's findings rules propose. Parameter counts are checked
against hand-computed ones, the mean and sd against the standard library, from the per-seed
values the file holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import textwrap
from pathlib import Path

import pytest

from deepeyes_keras import cli
from deepeyes_keras.redesign.hook import load_hook
from deepeyes_keras.redesign.proposal import Proposal
from deepeyes_keras.run.layout import RunLayout, read_json

# conv1 (3x3, 1 channel) -> pool 2 -> flatten (3x3xF) -> fc1 -> out (3 labels), inputs 8x8x1
ORIGINAL_PARAMETERS = (9 + 1) * 4 + (36 * 8 + 8) + (8 * 3 + 3)  # 363
SMALLER_PARAMETERS = (9 + 1) * 2 + (18 * 3 + 3)  # conv1 2 filters, fc1 removed: 77

HOOK = """
import numpy as np

def build_data():
    rng = np.random.default_rng(1)
    x = rng.random((96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 96)
    return (x[:64], y[:64]), (x[64:], y[64:])

def fit_kwargs():
    return {"epochs": 2, "batch_size": 16}
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A directory with two copies of one tiny run: ``raw`` (no findings) and ``tiny``."""
    import keras
    import numpy as np

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.derive.findings import write_findings

    root = tmp_path_factory.mktemp("redesign")
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="out"),
        ],
        name="tiny",
    )
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    cb = DeepEyesCallback(
        log_dir=root / "raw", run_name="tiny", snapshot_every=6, maps=False, verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb])
    shutil.copytree(root / "raw", root / "runs")
    assert write_findings(root / "runs" / "tiny") > 0
    return root


@pytest.fixture
def run_dir(recorded, tmp_path) -> Path:
    """A private copy of the tiny run with findings, alone in ``tmp_path/runs``."""
    shutil.copytree(recorded / "runs", tmp_path / "runs")
    return tmp_path / "runs" / "tiny"


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def verified(recorded, tmp_path_factory):
    """`deepeyes redesign RUN --verify` on a copy, with a hand-written proposal: conv1 4 -> 2,
    fc1 removed, two seeds. Returns (run directory, stdout)."""
    root = tmp_path_factory.mktemp("verified")
    shutil.copytree(recorded / "runs", root / "runs")
    run = root / "runs" / "tiny"
    hook = write(root / "hook.py", HOOK)
    proposal = root / "smaller.json"
    proposal.write_text(json.dumps({"widths": {"conv1": 2}, "remove": ["fc1"]}))
    code, out, err = run_cli(
        "redesign", run, "--verify", "--hook", hook, "--seeds", 0, 1, "--proposal", proposal
    )
    assert code == 0, err
    return run, out


def test_verification_compares_both_networks_over_the_seeds(verified):
    run, _ = verified
    result = read_json(RunLayout(run).verification)
    assert result["status"] == "finished"
    assert result["seeds"] == result["seeds_done"] == [0, 1]
    assert set(result["networks"]) == {"original", "proposal"}
    original, smaller = result["networks"]["original"], result["networks"]["proposal"]
    assert (
        original["parameters"]
        == ORIGINAL_PARAMETERS
        == read_json(RunLayout(run).manifest)["model"]["parameters"]
    )
    assert smaller["parameters"] == SMALLER_PARAMETERS
    assert original["widths"] == {"conv1": 4, "fc1": 8, "out": 3}
    assert smaller["widths"] == {"conv1": 2, "out": 3} and smaller["removed"] == ["fc1"]
    assert result["metric"]["name"] == "accuracy"
    for net in (original, smaller):
        values = net["test"]["values"]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        assert net["test"]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert net["test"]["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert len(net["train_seconds"]["values"]) == 2
        assert all(s > 0 for s in net["train_seconds"]["values"])
    per_seed = [
        100 * (p - o)
        for o, p in zip(original["test"]["values"], smaller["test"]["values"], strict=True)
    ]
    assert result["difference"]["unit"] == "percentage points"
    assert result["difference"]["per_seed"] == pytest.approx(per_seed)
    assert result["difference"]["mean"] == pytest.approx(statistics.fmean(per_seed))
    assert result["fit_kwargs"] == {"epochs": 2, "batch_size": 16}
    assert result["proposal"]["widths"] == {"conv1": 2}
    assert result["hook"].endswith("hook.py")


def test_proposal_file_holds_the_changes_and_parameter_counts(verified):
    run, _ = verified
    proposal = read_json(RunLayout(run).proposal)
    assert proposal["widths"] == {"conv1": 2} and proposal["remove"] == ["fc1"]
    assert proposal["parameters_before"] == ORIGINAL_PARAMETERS
    assert proposal["parameters_after"] == SMALLER_PARAMETERS
    assert proposal["original_widths"] == {"conv1": 4, "fc1": 8, "out": 3}
    assert proposal["source"].startswith("file ") and "parameters_error" not in proposal


def test_progress_and_the_comparison_are_printed(verified):
    _, out = verified
    assert f"Parameters: {ORIGINAL_PARAMETERS} -> {SMALLER_PARAMETERS} (0.21 x)" in out
    for seed, n in ((0, 1), (1, 2)):
        for role in ("original", "proposal"):
            assert f"seed {seed} ({n}/2) {role}: test accuracy" in out
            assert f"seed {seed} ({n}/2) {role} epoch 2/2:" in out
    assert "test accuracy, % (mean ± sd)" in out
    assert "conv1 2, out 3 (fc1 removed)" in out
    assert "Difference (proposal - original):" in out


def test_run_page_shows_the_redesign(verified, tmp_path, write_site, build_site):
    run, _ = verified
    result = read_json(RunLayout(run).verification)
    site = build_site(write_site(tmp_path, run.parent))
    page = (site / "deepeyes" / "tiny" / "index.html").read_text()
    section = page[page.index("<h2>Redesign</h2>") : page.index("<h2>Layers</h2>")]
    assert "<strong>conv1</strong>: 4 → 2" in section
    assert "<strong>fc1</strong>: remove" in section
    assert f"Parameters {ORIGINAL_PARAMETERS} → {SMALLER_PARAMETERS} (0.21 ×)" in section
    accuracy = result["networks"]["proposal"]["test"]
    assert f"{100 * accuracy['mean']:.2f} ± {100 * accuracy['sd']:.2f}" in section
    assert "conv1 2, out 3 (fc1 removed)" in section
    assert f"{result['difference']['mean']:+.2f} percentage points" in section
    assert "for each seed (0, 1) both networks were trained from fresh weights" in section
    assert "Not verified yet" not in section


# ----------------------------------------------------------------------------- the findings


def test_redesign_without_verify_writes_the_findings_proposal(run_dir):
    code, out, err = run_cli("redesign", run_dir)
    assert code == 0, err
    proposal = read_json(RunLayout(run_dir).proposal)
    last_step = read_json(RunLayout(run_dir).manifest)["last_step"]
    assert proposal["source"] == "findings" and proposal["step"] == last_step
    assert proposal["parameters_before"] == ORIGINAL_PARAMETERS
    assert isinstance(proposal["parameters_after"], int)
    assert f"from the findings at step {last_step}" in out
    assert not RunLayout(run_dir).verification.exists()
    # Progressive: the proposal when each stable layer became stable, against now.
    from deepeyes_keras import load_run
    from deepeyes_keras.redesign.proposal import proposal_history

    rows = proposal_history(load_run(run_dir))
    if rows:
        assert "Proposal when each layer became stable" in out
        assert all(f"{r['layer']}: stable since step {r['stable_since_step']}" in out for r in rows)
    else:
        assert "No layer is stable yet" in out


def test_unchanged_proposal_is_not_retrained(run_dir, tmp_path):
    from deepeyes_keras.redesign.verify import verify_proposal

    lines: list[str] = []
    same = Proposal(run="tiny", step=12, original_widths={"conv1": 4, "fc1": 8, "out": 3})
    result = verify_proposal(
        run_dir, hook_path=write(tmp_path / "hook.py", HOOK), proposal=same, progress=lines.append
    )
    assert result["status"] == "unchanged" and result["networks"] == {}
    assert lines == ["The proposal of run 'tiny' changes nothing: no network was retrained."]
    assert read_json(RunLayout(run_dir).verification)["status"] == "unchanged"


DATASET_HOOK = """
import keras
import numpy as np
import tensorflow as tf

SEEDS = (5, 6)

def build_data():
    rng = np.random.default_rng(2)
    x = rng.random((96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 96)
    train = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).shuffle(64).repeat().batch(16)
    return train, (x[64:], y[64:])

def build_model(seed):
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(6, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="out"),
    ]
    return keras.Sequential(layers, name="hooked")

def compile_model(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

def fit_kwargs():
    return {"epochs": 3, "steps_per_epoch": 2}
"""


def test_hook_model_dataset_and_loss_and_same_seed_same_result(run_dir, tmp_path):
    from deepeyes_keras.redesign.verify import verify_proposal

    lines: list[str] = []
    proposal = Proposal(run="tiny", step=12, widths={"hidden": 3})
    result = verify_proposal(
        run_dir,
        hook_path=write(tmp_path / "hook.py", DATASET_HOOK),
        seeds=[4, 4],
        proposal=proposal,
        progress=lines.append,
    )
    assert result["seeds_done"] == [4, 4]  # --seeds overrides the hook's SEEDS
    original, smaller = result["networks"]["original"], result["networks"]["proposal"]
    assert original["name"] == "hooked" and original["parameters"] == 64 * 6 + 6 + 6 * 3 + 3
    assert smaller["widths"] == {"hidden": 3, "out": 3}
    assert smaller["parameters"] == 64 * 3 + 3 + 3 * 3 + 3
    # compiled without an accuracy metric: the test loss is compared, and said so
    assert result["metric"]["name"] == "loss" and result["difference"]["unit"] == "loss"
    # the same seed twice: the same data order and weights, so the same result
    for net in (original, smaller):
        first, second = net["test"]["values"]
        assert first == pytest.approx(second, rel=1e-5)
    assert sum(" epoch " in line for line in lines) == 4 * 3  # 4 networks x 3 epochs
    assert result["fit_kwargs"] == {"epochs": 3, "steps_per_epoch": 2}


CRASHING_HOOK = (
    HOOK
    + """
CALLS = []

def build_model(seed):
    import keras
    CALLS.append(seed)
    if len(CALLS) > 2:
        raise RuntimeError("out of memory, say")
    return keras.models.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="out")]
    )
"""
)


def test_a_crash_keeps_the_finished_seeds(run_dir, tmp_path):
    from deepeyes_keras.redesign.verify import verify_proposal

    hook = write(tmp_path / "hook.py", CRASHING_HOOK)
    with pytest.raises(RuntimeError, match="out of memory"):
        verify_proposal(
            run_dir,
            hook_path=hook,
            seeds=[0, 1],
            proposal=Proposal(run="tiny", step=12, widths={"out": 3}),
            progress=lambda line: None,
        )
    result = read_json(RunLayout(run_dir).verification)
    assert result["status"] == "interrupted" and "out of memory" in result["error"]
    assert result["seeds_done"] == [0]
    assert len(result["networks"]["proposal"]["test"]["values"]) == 1


# ----------------------------------------------------------------------------- clear errors


def test_run_without_findings_says_how_to_get_them(recorded, tmp_path):
    code, _, err = run_cli(
        "redesign", recorded / "raw" / "tiny", "--verify", "--hook", write(tmp_path / "h.py", HOOK)
    )
    assert code == 2
    assert "has no findings" in err and "deepeyes maps" in err


def test_missing_hook_file_and_missing_hook_option(run_dir, tmp_path):
    code, _, err = run_cli("redesign", run_dir, "--verify", "--hook", tmp_path / "nope.py")
    assert code == 2 and "nope.py" in err and "does not exist" in err and "build_data()" in err
    code, _, err = run_cli("redesign", run_dir, "--verify")
    assert code == 2 and "--verify needs --hook FILE" in err


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def build_dataset():\n    pass\n", "defines no build_data() function; did you mean"),
        ("build_data = 3\n", "defines no build_data() function (it is not a function)"),
        ("def build_data():\n    pass\ndef build_model():\n    pass\n", "must take 1 argument"),
        ("def build_data():\n    pass\nSEEDS = (0, -1)\n", "SEEDS must be a non-empty list"),
        ("import no_such_module_here\n", "failed to import: ModuleNotFoundError"),
    ],
)
def test_hook_contract_errors_name_the_file_and_the_fix(tmp_path, source, expected):
    path = tmp_path / "bad_hook.py"
    path.write_text(source)
    with pytest.raises(ValueError, match="bad_hook.py") as err:
        load_hook(path)
    assert expected in str(err.value)


def test_a_misspelled_optional_name_is_reported(tmp_path):
    path = tmp_path / "hook.py"
    path.write_text("def build_data():\n    pass\n\ndef build_modle(seed):\n    pass\n")
    with pytest.warns(UserWarning, match="'build_modle' is not part of the contract.*build_model"):
        hook = load_hook(path)
    assert hook.build_model is None


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("np.zeros(3)", "returned a ndarray of shape (3,)"),
        ("((np.zeros((4, 2)), np.zeros(3)), (np.zeros((2, 2)), np.zeros(2)))", "4 and 3 rows"),
        ("((np.zeros((4, 2)), np.zeros(4)), [1, 2, 3])", "a test part that is a list of 3"),
    ],
)
def test_build_data_results_are_checked(tmp_path, returned, expected):
    path = tmp_path / "hook.py"
    path.write_text(f"import numpy as np\n\ndef build_data():\n    return {returned}\n")
    with pytest.raises(ValueError, match="build_data") as err:
        load_hook(path).data()
    assert expected in str(err.value)


def test_run_without_model_json_needs_build_model(run_dir, tmp_path):
    RunLayout(run_dir).model_config.unlink()  # as a run of an older deepeyes-keras
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps({"widths": {"conv1": 2}}))
    code, out, err = run_cli("redesign", run_dir, "--proposal", proposal)
    assert code == 0 and "Parameters: unknown" in out and "has no model.json" in out
    written = read_json(RunLayout(run_dir).proposal)
    assert (
        written["parameters_before"] is None and "build_model(seed)" in written["parameters_error"]
    )
    hook = write(tmp_path / "hook.py", HOOK)
    code, _, err = run_cli("redesign", run_dir, "--verify", "--hook", hook, "--proposal", proposal)
    assert code == 2 and "has no model.json" in err and "Add build_model(seed)" in err


# ----------------------------------------------------------------------------- the page's HTML


def test_redesign_html_escapes_and_says_what_is_missing():
    from deepeyes_keras.site.redesign_html import redesign_html

    proposal = {"step": 3, "widths": {"<b>x</b>": 2}, "remove": [], "reasons": {"<b>x</b>": "<i>"}}
    html = redesign_html(proposal, None)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;i&gt;" in html
    assert "Not verified yet" in html and "Parameters: unknown" in html
    running = {"status": "running", "seeds": [0, 1, 2], "seeds_done": [0], "networks": {}}
    running["proposal"] = {"widths": {"<b>x</b>": 3}, "remove": []}
    html = redesign_html(proposal, running)
    assert "Retraining: 1 of 3 seeds done" in html
    assert "retrained an earlier proposal" in html  # widths 3, not the current 2
    broken = {"status": "finished", "networks": {"original": {"test": "NaN<script>"}}}
    assert "<script>" not in redesign_html(None, broken)


def test_a_width_the_residual_graph_cannot_take_is_dropped_with_the_reason():
    import keras

    from deepeyes_keras.redesign.build import buildable

    inputs = keras.Input((8, 8, 1))
    c = keras.layers.Conv2D(6, 3, padding="same", name="c")(inputs)
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(c)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    merged = keras.layers.Add(name="add")([a, b])
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(merged))
    model = keras.Model(inputs, outputs, name="residual")
    proposal = Proposal(run="r", step=1, widths={"c": 3, "b": 2}, reasons={"b": "rank 1"})
    kept = buildable(model, proposal)
    assert kept.widths == {"c": 3}
    assert kept.reasons["b"].startswith("rank 1; not applied: the graph cannot take it")
    assert buildable(model, kept) == kept  # a buildable proposal is left as it is


def test_removing_the_dense_layer_after_the_conv_stack_is_buildable_a_residual_one_is_not():
    import keras

    from deepeyes_keras.redesign.build import buildable, parameter_counts

    # The paper's §5.2 shape in small: conv, Flatten, a hidden dense fc1, the output fc2.
    inputs = keras.Input((6, 6, 1))
    flat = keras.layers.Flatten(name="flatten")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    hidden = keras.layers.Dense(16, activation="relu", name="fc1")(flat)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    proposal = Proposal(run="r", step=1, remove=["fc1"], reasons={"fc1": "adds nothing"})
    assert buildable(model, proposal) == proposal
    conv, flat_width = 3 * 3 * 2 + 2, 4 * 4 * 2
    before, after = parameter_counts(model, proposal)
    assert before == conv + (flat_width + 1) * 16 + (16 + 1) * 2
    assert after == conv + (flat_width + 1) * 2
    # A dense layer whose output is added to a wider branch cannot go: the Add would not build.
    inputs = keras.Input((5,))
    wide = keras.layers.Dense(8, name="wide")(inputs)
    narrow = keras.layers.Dense(8, name="fc1")(keras.layers.Dense(3, name="d3")(inputs))
    merged = keras.layers.Add(name="add")([wide, narrow])
    residual = keras.Model(inputs, keras.layers.Dense(2, name="out")(merged))
    kept = buildable(residual, Proposal(run="r", step=1, remove=["fc1"], reasons={"fc1": "x"}))
    assert kept.remove == []
    assert kept.reasons["fc1"].startswith("x; not applied: the graph cannot take it")
