"""DeepEyes findings as TensorBoard events: DeepEyesCallback(tensorboard=...) and the CLI.

A tiny network with a nested backbone (so one layer is named ``backbone/conv1``) is recorded with
``maps=False``; the pipeline (``update_run``) then writes the findings and, from them, the events.
They are read back with TensorBoard's own EventAccumulator, and record by record to count steps.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto.event_pb2 import Event

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.cli import main
from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.derive.pipeline import update_run
from deepeyes_keras.derive.tensorboard import (
    SCALARS,
    WRITTEN,
    layer_scalars,
    tag,
    tensorboard_dir,
    write_events,
)
from deepeyes_keras.run.layout import N_BINS, RunLayout, read_json, write_json

pytestmark = pytest.mark.slow
L = keras.layers


def nested_model():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu", name="conv1")],
        name="backbone",
    )
    inputs = keras.Input((8, 8, 1))
    h = L.Flatten(name="flat")(L.MaxPooling2D(2, name="pool")(backbone(inputs)))
    h = L.Dense(6, activation="relu", name="fc1")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(h), name="tb_net")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(run directory, TensorBoard log dir) of a run whose pipeline has run once."""
    root = tmp_path_factory.mktemp("tensorboard")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)
    logs = root / "tb_logs"
    cb = DeepEyesCallback(
        log_dir=root / "runs",
        run_name="tb",
        snapshot_every=4,
        reservoir_size=256,
        maps=False,
        tensorboard=logs,
        verbose=0,
    )
    nested_model().fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb])
    assert not logs.exists()  # nothing before the findings
    update_run(cb.run_dir, max_points=256)
    return cb.run_dir, logs


def event_files(directory) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if "tfevents" in p.name)


def records(directory) -> list[Event]:
    """Every event of every event file, parsed from the TFRecord framing by hand."""
    events = []
    for path in event_files(directory):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            events.append(Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def written_pairs(directory) -> list[tuple[str, int]]:
    return [
        (v.tag, e.step)
        for e in records(directory)
        if e.HasField("summary")
        for v in e.summary.value
    ]


def accumulate(directory):
    acc = event_accumulator.EventAccumulator(
        str(directory),
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0},
    )
    acc.Reload()
    return acc


def test_manifest_records_the_directory_and_events_go_beside_the_run(recorded):
    run_dir, logs = recorded
    run = load_run(run_dir)
    assert run.manifest["settings"]["tensorboard"] == str(logs.absolute())
    directory = tensorboard_dir(logs, run.name)
    assert directory == logs / "deepeyes-tb" and len(event_files(directory)) == 1
    assert not any("tfevents" in p.name for p in Path(run_dir).rglob("*"))
    ledger = read_json(directory / WRITTEN)
    assert sorted(s for steps in ledger["files"].values() for s in steps) == [4, 8, 12]


def test_every_scalar_of_every_layer_at_every_step_equals_the_findings(recorded):
    run_dir, logs = recorded
    run = load_run(run_dir)
    assert run.layer_names == ["backbone/conv1", "fc1", "out"]
    acc = accumulate(tensorboard_dir(logs, run.name))
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}
    assert "deepeyes/backbone/conv1/dead" in scalars  # the layer's slash kept
    expected_tags = set()
    for snap in run.snapshots:
        assert snap.findings is not None
        for name in run.layer_names:
            f = snap.findings["layers"][name]
            expected = {
                "dead": len(f["T2"]["dead"]),
                "always_on": len(f["T2"]["always_on"]),
                "stability": f["T1"]["excess_change"][-1],
                "stable": float(f["T1"]["stable"]),
                "undetected_share": f["T3"]["undetected_share"],
                "suggested_width": f["T4"]["suggested_width"],
                "separability": f["T5"]["accuracy"],
            }
            assert set(expected) == set(SCALARS)
            for key, value in expected.items():
                series = scalars.get(tag(name, key), {})
                if value is None:  # stability at the first snapshot; a probe with too few rows
                    assert snap.step not in series, (name, key, snap.step)
                    continue
                expected_tags.add(tag(name, key))
                assert series[snap.step] == pytest.approx(value, rel=1e-6), (name, key, snap.step)
    assert set(scalars) == expected_tags
    # Each scalar is there at every step where the findings have it: none is always missing.
    assert {t.rsplit("/", 1)[1] for t in expected_tags} == set(SCALARS)
    assert all(len(scalars[tag(n, "dead")]) == 3 for n in run.layer_names)


def test_histograms_are_the_interval_perplexity_histograms(recorded):
    run_dir, logs = recorded
    run = load_run(run_dir)
    acc = accumulate(tensorboard_dir(logs, run.name))
    assert sorted(acc.Tags()["histograms"]) == sorted(tag(n, "perplexity") for n in run.layer_names)
    for name in run.layer_names:
        events = {e.step: e.histogram_value for e in acc.Histograms(tag(name, "perplexity"))}
        assert sorted(events) == [s.step for s in run.snapshots]
        for snap in run.snapshots:
            layer = snap.layers[name]
            h, n_filters = events[snap.step], layer.info["n_filters"]
            np.testing.assert_array_equal(h.bucket, layer.perplexity_histogram)
            assert len(h.bucket) == N_BINS and h.num == layer.perplexity_histogram.sum()
            edges = np.linspace(1, n_filters, N_BINS + 1)
            assert (h.min, h.max) == (1.0, n_filters)
            np.testing.assert_allclose(h.bucket_limit, edges[1:])


def test_rerunning_the_pipeline_or_the_cli_writes_no_step_twice(recorded, capsys):
    run_dir, logs = recorded
    directory = tensorboard_dir(logs, "tb")
    before = written_pairs(directory)
    assert len(before) == len(set(before)) and before
    update_run(run_dir, max_points=256)
    assert main(["tensorboard", str(run_dir)]) == 0
    assert "none new" in capsys.readouterr().out
    assert main(["tensorboard", str(run_dir), "--log-dir", str(logs)]) == 0
    assert "none new" in capsys.readouterr().out
    assert len(event_files(directory)) == 1 and written_pairs(directory) == before


def test_the_cli_writes_an_existing_run_to_another_log_dir(recorded, tmp_path, capsys):
    run_dir, logs = recorded
    assert main(["tensorboard", str(run_dir), "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "steps 4, 8, 12" in out and str(tmp_path / "deepeyes-tb") in out
    ours, theirs = written_pairs(tmp_path / "deepeyes-tb"), written_pairs(logs / "deepeyes-tb")
    assert ours == theirs


def test_steps_are_appended_as_their_findings_arrive(recorded, tmp_path):
    run_dir, _ = recorded
    copy = tmp_path / "tb"
    shutil.copytree(run_dir, copy)
    layout = RunLayout(copy)
    for step in (8, 12):
        layout.findings(step).unlink()
    first = write_events(copy, log_dir=tmp_path / "logs")
    assert first.steps == (4,) and first.waiting == 2
    write_findings(copy)
    second = write_events(copy, log_dir=tmp_path / "logs")
    assert second.steps == (8, 12) and second.waiting == 0
    directory = tmp_path / "logs" / "deepeyes-tb"
    files = event_files(directory)
    assert len(files) == 2  # one new file per batch, in name order = writing order
    steps = [e.step for e in records(directory) if e.HasField("summary")]
    assert steps == [4, 8, 12]
    # A file that is deleted no longer counts: its steps are written again, once.
    files[0].unlink()
    assert write_events(copy, log_dir=tmp_path / "logs").steps == (4,)
    pairs = written_pairs(directory)
    assert len(pairs) == len(set(pairs))


def test_bad_tensorboard_values_are_refused():
    for bad in (3, "", "  ", ["logs"], True):
        with pytest.raises(ValueError, match=r"argument tensorboard\. Received: tensorboard="):
            DeepEyesCallback(tensorboard=bad)
    assert DeepEyesCallback(tensorboard=None).tensorboard is None
    assert DeepEyesCallback(tensorboard="logs").tensorboard == Path("logs").absolute()


def test_a_failure_to_write_events_never_stops_the_pipeline(recorded, tmp_path):
    run_dir, _ = recorded
    copy = tmp_path / "tb"
    shutil.copytree(run_dir, copy)
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the log directory should be")
    manifest = read_json(RunLayout(copy).manifest)
    manifest["settings"]["tensorboard"] = str(blocker)
    write_json(RunLayout(copy).manifest, manifest)
    for step in (8, 12):
        RunLayout(copy).findings(step).unlink()
    with pytest.warns(RuntimeWarning, match="could not write TensorBoard events to .*not_a_dir"):
        done = update_run(copy, max_points=256)
    assert done.findings == 2  # the findings stage ran, and the views after it
    assert load_run(copy).snapshots[-1].findings is not None


def test_a_run_without_the_setting_writes_nothing(recorded, tmp_path, capsys):
    run_dir, _ = recorded
    copy = tmp_path / "tb"
    shutil.copytree(run_dir, copy)
    manifest = read_json(RunLayout(copy).manifest)
    manifest["settings"]["tensorboard"] = None
    write_json(RunLayout(copy).manifest, manifest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        update_run(copy, max_points=256)
    assert not [w for w in caught if "TensorBoard" in str(w.message)]
    assert write_events(copy).directory is None
    assert main(["tensorboard", str(copy)]) == 2
    assert "--log-dir" in capsys.readouterr().err


def test_writing_events_imports_no_tensorflow(recorded, tmp_path):
    run_dir, _ = recorded
    code = (
        "import sys, json\n"
        "from deepeyes_keras.derive.tensorboard import write_events\n"
        f"done = write_events({str(run_dir)!r}, log_dir={str(tmp_path)!r})\n"
        "print(json.dumps([list(done.steps), sorted(m for m in ('tensorflow', 'keras') "
        "if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[4, 8, 12], []]


def test_layer_scalars_leave_out_what_the_findings_lack():
    finding = {
        "T1": {"stable": False, "excess_change": [None]},
        "T2": {"dead": [0, 3], "always_on": []},
        "T3": {"undetected_share": 0.25},
        "T4": {"suggested_width": 8},
        "T5": {"accuracy": None},
    }
    assert layer_scalars(finding) == {
        "dead": 2.0,
        "always_on": 0.0,
        "stable": 0.0,
        "undetected_share": 0.25,
        "suggested_width": 8.0,
    }
