"""Building a redesign: the original network from the run or the hook, and the proposal from it.

The TensorFlow half of :mod:`deepeyes_keras.redesign` that trains nothing: the original network
(the hook's ``build_model(seed)``, else rebuilt from the run's ``model.json``), the proposal built
from it with :func:`deepeyes_keras.resize.resize_model`, the parameter counts, and
``redesign/proposal.json``. A findings proposal keeps only the changes the graph can take (a
convolution feeding a residual ``Add`` must keep the width of the other branch).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from deepeyes_keras.redesign.hook import Hook
from deepeyes_keras.redesign.proposal import Proposal, propose
from deepeyes_keras.run.layout import write_json
from deepeyes_keras.run.reader import Run, load_run

WIDTH_KEYS = ("filters", "units")
HOOK_HINT = "Add build_model(seed) to the hook file (--hook) to build the original network."


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def as_run(run) -> Run:
    """``run`` itself when it is a loaded :class:`Run`, else the run at that path."""
    return run if isinstance(run, Run) else load_run(run)


# ----------------------------------------------------------------------------- building


def model_from_run(run) -> object:
    """The recorded network, rebuilt from the run's ``model.json`` with fresh weights."""
    import keras

    import deepeyes_keras.models  # noqa: F401  (registers the paper's LR schedule with Keras)

    run = as_run(run)
    config = run.model_config
    if config is None:
        raise ValueError(
            f"Run {run.name!r} has no {run.layout.model_config.name} (it was recorded by an "
            f"older deepeyes-keras, or is still starting). {HOOK_HINT}"
        )
    if config.get("architecture") is None:
        raise ValueError(
            f"Run {run.name!r}: its model could not be serialised when it was recorded "
            f"({config.get('error', 'no architecture')}). {HOOK_HINT}"
        )
    try:
        return keras.models.model_from_json(json.dumps(config["architecture"]))
    except Exception as err:  # noqa: BLE001 - Keras raises many types for unknown objects
        raise ValueError(
            f"Run {run.name!r}: Keras could not rebuild the model from "
            f"{run.layout.model_config} ({type(err).__name__}: {err}). Import the module that "
            f"registers its custom layers in the hook file, or: {HOOK_HINT}"
        ) from err


def compile_with_hook(model, hook: Hook):
    """``hook.compile_model(model)``: compiles in place, or returns the compiled model."""
    result = hook.compile_model(model)
    model = model if result is None else result
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Hook file {str(hook.path)!r}: compile_model(model) left the model uncompiled. "
            "Call model.compile(optimizer=..., loss=..., metrics=['accuracy']) in it."
        )
    return model


def build_original(run, hook: Hook | None = None, seed: int = 0, *, compiled: bool = True):
    """The original network with fresh weights: ``hook.build_model(seed)``, else ``model.json``.

    Compiled (unless ``compiled=False``) with ``hook.compile_model`` when the hook has one;
    otherwise a network the hook compiled stays so, and an uncompiled one gets the recorded
    compile settings.

    Raises:
        ValueError: no way to build or compile it, with the fix.
    """
    import keras

    run = as_run(run)
    if hook is not None and hook.build_model is not None:
        model = hook.build_model(seed)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Hook file {str(hook.path)!r}: build_model(seed) must return a keras.Model. "
                f"Received: {type(model).__name__}."
            )
    else:
        model = model_from_run(run)
    if not compiled:
        return model
    if hook is not None and hook.compile_model is not None:
        return compile_with_hook(model, hook)
    if getattr(model, "compiled", False):
        return model
    config = (run.model_config or {}).get("compile")
    if config is None:
        raise ValueError(
            f"Run {run.name!r}: the original network is not compiled and the run recorded no "
            "compile settings. Add compile_model(model) to the hook file, or compile the "
            "model in its build_model(seed)."
        )
    try:
        model.compile_from_config(config)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Run {run.name!r}: Keras could not compile the model from the recorded compile "
            f"settings ({err}). Add compile_model(model) to the hook file."
        ) from err
    return model


def build_proposal(original, proposal: Proposal, hook: Hook | None = None, *, compiled=True):
    """The proposal: ``original`` with the proposal's widths and removals, fresh weights.

    Compiled like the original (``resize_model(..., compile_like=True)``), or with
    ``hook.compile_model`` when the hook has one.
    """
    from deepeyes_keras.resize import resize_model

    with_hook = compiled and hook is not None and hook.compile_model is not None
    model = resize_model(
        original,
        proposal.widths,
        remove=proposal.remove,
        compile_like=compiled and not with_hook,
        name=f"{original.name}_proposal",
    )
    return compile_with_hook(model, hook) if with_hook else model


def parameter_counts(original, proposal: Proposal) -> tuple[int, int]:
    """Parameters of ``original`` and of the proposal built from it (nothing is trained)."""
    return int(original.count_params()), int(
        build_proposal(original, proposal, compiled=False).count_params()
    )


def buildable(original, proposal: Proposal) -> Proposal:
    """The proposal without the changes the network's graph cannot take.

    A width must sometimes match another tensor's (a convolution feeding a residual ``Add``, or a
    layer whose removal leaves two shapes that differ): ``resize_model`` then fails. Each change
    is tried alone; those that fail are dropped from the proposal, with the reason, and the rest
    are kept (checked together once more).
    """
    from deepeyes_keras.resize import resize_model

    def fails(widths, remove) -> str | None:
        try:
            resize_model(original, widths, remove=remove, compile_like=False)
        except (ValueError, TypeError) as err:
            return str(err).splitlines()[0][:200]
        return None

    if fails(proposal.widths, proposal.remove) is None:
        return proposal
    widths, remove, reasons = {}, [], dict(proposal.reasons)
    for name, width in proposal.widths.items():
        if (error := fails({name: width}, [])) is None:
            widths[name] = width
        else:
            reasons[name] = (
                f"{reasons.get(name, '')}; not applied: the graph cannot take it ({error})"
            )
    for name in proposal.remove:
        if (error := fails({}, [name])) is None:
            remove.append(name)
        else:
            reasons[name] = (
                f"{reasons.get(name, '')}; not applied: the graph cannot take it ({error})"
            )
    if fails(widths, remove) is not None:  # each builds alone, not together: keep the widths only
        remove = []
    return replace(proposal, widths=widths, remove=remove, reasons=reasons)


def widths_of(model) -> dict[str, int]:
    """The width (filters or units) of every layer that has one, in layer order."""
    widths = {}
    for layer in model.layers:
        for key in WIDTH_KEYS:
            if isinstance(getattr(layer, key, None), int):
                widths[layer.name] = int(getattr(layer, key))
    return widths


def write_proposal(
    run_dir,
    proposal: Proposal | None = None,
    *,
    hook: Hook | None = None,
    step: int | None = None,
    source: str | None = None,
) -> Proposal:
    """Writes ``redesign/proposal.json``, with the parameter counts when a model can be built.

    Args:
        run_dir: the run directory.
        proposal: the proposal to write; default ``propose(run, step=step)`` (the findings').
        hook: a loaded hook, whose ``build_model`` builds the original (else ``model.json``).
        step: the snapshot to read the findings at (when ``proposal`` is not given).
        source: where the proposal comes from, in words (default "findings" or "given").

    Returns:
        The proposal with ``parameters_before`` and ``parameters_after`` filled in when the
        network could be built; when not, the file says why in ``parameters_error``.
    """
    run = as_run(run_dir)
    source = source or ("findings" if proposal is None else "given")
    proposal = proposal if proposal is not None else propose(run, step=step)
    extra: dict = {"source": source, "written": utc_now()}
    try:
        original = build_original(run, hook, compiled=False)
        if source == "findings":
            proposal = buildable(original, proposal)
        before, after = parameter_counts(original, proposal)
        proposal = replace(proposal, parameters_before=before, parameters_after=after)
    except ValueError as err:  # no model.json, or resize_model refuses the proposal
        extra["parameters_error"] = str(err)
    write_json(run.layout.proposal, {**proposal.to_dict(), **extra})
    return proposal
