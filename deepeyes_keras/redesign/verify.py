"""Verifying a redesign: the original network and the proposal, retrained on the same data.

:func:`verify_proposal` is what ``deepeyes redesign RUN --verify --hook FILE`` runs. For each
seed it calls ``keras.utils.set_random_seed(seed)``, asks the hook file for the data
(:mod:`deepeyes_keras.redesign.hook`), builds the original network (the hook's
``build_model(seed)``, else the run's ``model.json``), trains it with the hook's ``fit_kwargs()``
and evaluates it on the test arrays; then the same for the proposal, built from the original by
:func:`deepeyes_keras.resize.resize_model` (fresh weights, same compile settings). It writes
``redesign/verification.json`` into the run after every seed, so a crash keeps the seeds done.

Like :mod:`deepeyes_keras.resize`, this is a user action, not a stage of the recording: it
imports TensorFlow (inside its functions) and writes only the redesign files of the run.

The fields of ``verification.json`` are described in ``viewer_site/guide/redesign.md``.

Example:
    >>> result = verify_proposal("deepeyes_runs/lenet",                        # doctest: +SKIP
    ...                          hook_path="case_studies/mnist_lenet/redesign_hook.py")
    >>> result["difference"]                                                   # doctest: +SKIP
    {'mean': -0.12, 'per_seed': [...], 'unit': 'percentage points'}
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from deepeyes_keras.redesign.build import (
    as_run,
    build_original,
    build_proposal,
    utc_now,
    widths_of,
    write_proposal,
)
from deepeyes_keras.redesign.hook import Hook, check_seed_list, fit_record, load_hook
from deepeyes_keras.redesign.proposal import Proposal
from deepeyes_keras.run.layout import RunLayout, write_json

__all__ = ["build_original", "build_proposal", "verify_proposal", "write_proposal"]

FORMAT = "deepeyes-verification"
VERSION = 1
ROLES = ("original", "proposal")
EVALUATE_BATCH = 256
LOSS_NOTE = "no accuracy metric is compiled: the test loss is compared (lower is better)"


# ----------------------------------------------------------------------------- training


def epoch_progress(progress: Callable[[str], object], label: str, epochs: int):
    """A Keras callback calling ``progress`` with one line per finished epoch."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            values = []
            for key, value in sorted((logs or {}).items()):
                try:
                    values.append(f"{key} {float(value):.4g}")
                except (TypeError, ValueError):
                    continue
            progress(f"    {label} epoch {epoch + 1}/{epochs}: {', '.join(values)}")

    return EpochProgress()


def metric_of(scores: dict) -> str:
    """The ``evaluate`` key compared: the compiled accuracy metric, else the loss."""
    accuracies = sorted(k for k in scores if k.endswith("accuracy") or k == "acc")
    return "accuracy" if "accuracy" in scores else (accuracies or ["loss"])[0]


def train_network(run, hook: Hook, proposal: Proposal, *, role: str, seed: int, progress, label):
    """Seeds, builds, trains and evaluates one network; returns what verification.json keeps."""
    import keras

    keras.backend.clear_session()  # the same global state (names, RNG) for both networks
    keras.utils.set_random_seed(seed)
    data = hook.data()
    model = build_original(run, hook, seed)
    if role == "proposal":
        model = build_proposal(model, proposal, hook)
    kwargs = hook.fit_arguments(dataset=data.is_dataset)
    fit = {"verbose": 0, **({"shuffle": False} if data.is_dataset else {}), **kwargs}
    epochs = int(kwargs.get("epochs", 1))
    fit["callbacks"] = [*(kwargs.get("callbacks") or []), epoch_progress(progress, label, epochs)]
    x, y = (data.train, None) if data.is_dataset else data.train
    progress(f"{label}: {model.count_params():,} parameters, training")
    began = time.perf_counter()
    model.fit(x, y, **fit)
    seconds = time.perf_counter() - began
    scores = model.evaluate(
        data.x_test,
        data.y_test,
        batch_size=int(kwargs.get("batch_size") or EVALUATE_BATCH),
        verbose=0,
        return_dict=True,
    )
    key = metric_of(scores)
    progress(f"{label}: test {key} {float(scores[key]):.4f}, trained in {seconds:.1f} s")
    return {
        "name": model.name,
        "widths": widths_of(model),
        "removed": list(proposal.remove) if role == "proposal" else [],
        "parameters": int(model.count_params()),
        "key": key,
        "value": float(scores[key]),
        "seconds": seconds,
        "fit_kwargs": fit_record(kwargs),
        "data": data.describe(),
    }


# ----------------------------------------------------------------------------- the comparison


def spread(values: list[float]) -> dict:
    """``{"values", "mean", "sd"}``: the sample standard deviation (n - 1), None for one value."""
    return {
        "values": list(values),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
    }


def summarize(done: dict[str, list[dict]], seeds: list[int]) -> dict:
    """The ``metric``, ``networks`` and ``difference`` fields from each finished network."""
    first = done["original"][0]
    accuracy = first["key"] != "loss"
    networks = {
        role: {
            **{k: entries[0][k] for k in ("name", "widths", "removed", "parameters")},
            "test": spread([e["value"] for e in entries]),
            "train_seconds": spread([e["seconds"] for e in entries]),
        }
        for role, entries in done.items()
    }
    scale = 100.0 if accuracy else 1.0
    pairs = zip(done["original"], done["proposal"], strict=True)
    per_seed = [scale * (p["value"] - o["value"]) for o, p in pairs]
    note = f"test {first['key']} of the compiled metric" if accuracy else LOSS_NOTE
    return {
        "metric": {"name": "accuracy" if accuracy else "loss", "key": first["key"], "note": note},
        "networks": networks,
        "difference": {
            "unit": "percentage points" if accuracy else "loss",
            "mean": statistics.fmean(per_seed),
            "per_seed": per_seed,
        },
        "seeds_done": list(seeds[: len(per_seed)]),
        "fit_kwargs": first["fit_kwargs"],
        "data": first["data"],
    }


def versions() -> dict:
    import keras
    import tensorflow as tf

    from deepeyes_keras import __version__

    return {"deepeyes_keras": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def verify_proposal(
    run_dir,
    *,
    hook_path,
    seeds=None,
    step: int | None = None,
    proposal: Proposal | None = None,
    progress: Callable[[str], object] = print,
) -> dict:
    """Trains the original network and the proposal on the same data and seeds; compares them.

    Args:
        run_dir: the run directory (with findings, unless ``proposal`` is given).
        hook_path: the hook file (see :mod:`deepeyes_keras.redesign.hook`), or a loaded
            :class:`~deepeyes_keras.redesign.hook.Hook`.
        seeds: the seeds to train with (default: the hook's ``SEEDS``, else 0, 1, 2).
        step: the snapshot whose findings make the proposal (default: the last with findings).
        proposal: a proposal to verify instead of the findings' one (not written to
            ``proposal.json``: :func:`write_proposal` does that). Without it, the findings'
            proposal is written there first.
        progress: called with one line of text per network and seed, and per epoch.

    Returns:
        The verification, as written to ``redesign/verification.json`` (see the module
        docstring). A proposal that changes nothing is not trained (status ``"unchanged"``).

    Raises:
        FileNotFoundError: no such run or hook file.
        ValueError: the run has no findings, the hook file breaks its contract, or the
            network cannot be built; each message says how to fix it.
    """
    run = as_run(run_dir)
    hook = hook_path if isinstance(hook_path, Hook) else load_hook(hook_path)
    seeds = list(hook.seeds if seeds is None else check_seed_list(seeds, "seeds"))
    if proposal is None:
        proposal = write_proposal(run, hook=hook, step=step)
    layout = RunLayout(run.path)
    result: dict = {
        "format": FORMAT,
        "version": VERSION,
        "status": "running",
        "run": run.name,
        "created": utc_now(),
        "hook": str(hook.path),
        "seeds": seeds,
        "seeds_done": [],
        "proposal": proposal.to_dict(),
        "networks": {},
        "versions": versions(),
    }
    if not proposal.changes:
        result.update(status="unchanged", updated=utc_now(), note="nothing to retrain")
        progress(f"The proposal of run {run.name!r} changes nothing: no network was retrained.")
        write_json(layout.verification, result)
        return result
    done: dict[str, list[dict]] = {role: [] for role in ROLES}
    try:
        for i, seed in enumerate(seeds, 1):
            for role in ROLES:
                label = f"seed {seed} ({i}/{len(seeds)}) {role}"
                entry = train_network(
                    run, hook, proposal, role=role, seed=seed, progress=progress, label=label
                )
                done[role].append(entry)
            result.update(summarize(done, seeds), updated=utc_now())
            write_json(layout.verification, result)  # a crash keeps every finished seed
    except BaseException as err:  # Ctrl-C too: keep the finished seeds, say why it stopped
        if result["seeds_done"]:
            error = f"{type(err).__name__}: {err}"
            result.update(status="interrupted", updated=utc_now(), error=error)
            write_json(layout.verification, result)
        raise
    result.update(status="finished", updated=utc_now())
    write_json(layout.verification, result)
    return result
