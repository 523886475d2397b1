"""The benchmark scripts' quick modes run end to end, so that the scripts cannot rot.

Each script runs in a subprocess from the repository root, as a user would run it; its output must
hold a Markdown table. The numbers themselves are not checked (CI machines are noisy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST = os.environ.get("DEEPEYES_MNIST") or str(REPO.parent / "shared" / "data" / "mnist.npz")
needs_mnist = pytest.mark.skipif(not Path(MNIST).is_file(), reason=f"no MNIST at {MNIST}")


def run_script(name: str, *args: str, timeout: int = 900) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", DEEPEYES_MNIST=MNIST)
    done = subprocess.run([sys.executable, str(REPO / "bench" / name), "--quick", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    out = done.stdout
    assert "|---|" in out, f"{name} printed no Markdown table:\n{out}"
    assert out.startswith("Machine:") or name == "run_size.py", out[:300]
    return out


@pytest.mark.slow
@needs_mnist
def test_overhead_quick():
    out = run_script("overhead.py", "--model", "all")
    for model in ("lenet", "vgg", "dense"):
        assert f"**{model}**" in out
    assert "| plain fit | " in out and "DeepEyesCallback(reservoir_size=256)" in out


@pytest.mark.slow
def test_overhead_quick_on_a_dataset_without_autotuning():
    out = run_script("overhead.py", "--model", "dense", "--pipeline", "dataset")
    assert "input: tf.data pipeline, autotuning off." in out
    assert "| tf.data teardown (s) | ratio without teardown |" in out


@pytest.mark.slow
@needs_mnist
def test_blocking_quick():
    out = run_script("blocking.py")
    assert "training loop blocked" in out and "Target: training blocked" in out


@pytest.mark.slow
def test_embedding_quick():
    out = run_script("embedding.py")
    assert "input map, 1,000 points" in out and "filter map, 50 filters" in out


@pytest.mark.slow
def test_embedding_schedules_quick():
    out = run_script("embedding.py", "--schedules")
    assert "| `maps.SCHEDULE_BEFORE` |" in out and "| `maps.SCHEDULE` |" in out
    assert "input map 10-NN kept" in out and "x faster in wall time" in out


@pytest.mark.slow
def test_embedding_trace_quick():
    out = run_script("embedding.py", "--trace", "300")
    assert "| affinities" in out and "| normal, iterations 11-20 | 10 |" in out
    assert "10-NN kept" in out and "Total " in out


@pytest.mark.slow
@needs_mnist
def test_memory_quick():
    out = run_script("memory.py")
    assert "| before fit |" in out and "Target: memory growth" in out


@pytest.mark.slow
@needs_mnist
def test_run_size_quick():
    out = run_script("run_size.py")
    assert "**total**" in out


@pytest.mark.slow
@needs_mnist
@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="needs Debian's chromium")
def test_viewer_quick():
    out = run_script("viewer.py")
    assert "`mkdocs build`" in out and "heatmap click" in out


@pytest.mark.slow
@needs_mnist
def test_profile_fit_quick():
    out = run_script("profile_fit.py")
    assert "measurement: first call (traces the tf.function)" in out
    assert "n/a" not in out  # every timer found the internal it wraps


@pytest.mark.slow
def test_architectures_quick():
    out = run_script("architectures.py")
    assert "**MobileNetV2**" in out and "layers watched" in out


@pytest.mark.slow
@needs_mnist
def test_busy_quick():
    out = run_script("busy.py")
    assert "| quiet |" in out and "| busy |" in out and "Target: CPU per map" in out
