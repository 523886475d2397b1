"""A redesign proposal: new widths and layers to remove, from a run's findings (no TensorFlow).

:func:`propose` reads the findings of one snapshot (T4 suggested widths, T5 removable layers) and
states them as a :class:`Proposal`; :mod:`deepeyes_keras.redesign.verify` builds and trains it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

RESIZABLE = ("Conv1D", "Conv2D", "SeparableConv1D", "SeparableConv2D", "Dense")
"""Layer classes whose width a proposal may change (``resize_model`` rebuilds them); a depthwise
convolution has as many channels as its input times its depth multiplier, so it keeps its width."""


@dataclass(frozen=True)
class Proposal:
    """What the tool proposes to change in a network, and why.

    Attributes:
        run: the run's name.
        step: the snapshot the proposal was read from.
        widths: new width per layer name (only layers whose width changes).
        remove: names of hidden layers to remove.
        reasons: per layer name, the evidence in one sentence.
        original_widths: every analysed layer's width in the recorded network.
        parameters_before, parameters_after: parameter counts (None until a model is built).
    """

    run: str
    step: int
    widths: dict[str, int] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    original_widths: dict[str, int] = field(default_factory=dict)
    parameters_before: int | None = None
    parameters_after: int | None = None

    @property
    def changes(self) -> bool:
        """True when the proposal changes anything."""
        return bool(self.widths or self.remove)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Proposal:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def propose(run, *, step: int | None = None) -> Proposal:
    """The proposal of a run's findings at one snapshot (default: the last with findings).

    Args:
        run: a :class:`~deepeyes_keras.run.reader.Run`.
        step: the snapshot step; the nearest earlier snapshot with findings is used.

    Raises:
        ValueError: the run has no findings yet (run ``deepeyes maps RUN`` first).
    """
    snaps = [s for s in run.snapshots if s.findings is not None]
    if step is not None:
        snaps = [s for s in snaps if s.step <= step]
    if not snaps:
        raise ValueError(
            f"Run {run.name!r} has no findings"
            + (f" at or before step {step}" if step is not None else "")
            + f". Run `deepeyes maps {run.path}` first: it computes maps, views and findings."
        )
    return proposal_from_findings(run.name, snaps[-1].findings, run.manifest)


# Layers inside a nested model (named outer/inner) belong to a backbone the user took whole.
_NESTED = (
    "the layer is inside a nested model, which the redesign keeps as it is (resize_model "
    "changes the top-level layers)"
)


def _not_resizable(cls: str) -> str:
    if cls.startswith("Depthwise"):
        return f"a {cls}'s width follows its input"
    return f"resize_model does not change a {cls}'s width yet"


def proposal_from_findings(run_name: str, findings: dict, manifest: dict) -> Proposal:
    """A :class:`Proposal` from one findings result (``snapshot.findings``).

    The policy, from the findings only (nothing in it knows a data set or a network):

    - **T5 removals**: every hidden layer a T5 suggestion proposes to remove (a hidden dense
      layer that adds no separability to its input, or comes after separability saturated) is
      removed; :func:`deepeyes_keras.redesign.build.buildable` later drops a removal the graph
      cannot take.
    - **T4 widths**: every other hidden layer the findings call oversized gets its suggested
      width, but only when it is stable (T1) at that snapshot, since the filters of a layer still
      changing may yet be used, and never a layer T5 says needs more capacity.
    """
    layers = findings.get("layers") or {}
    original = {
        info["name"]: int(info["n_filters"]) for info in manifest.get("analysed_layers") or []
    }
    remove: list[str] = []
    reasons: dict[str, str] = {}
    capacity = set()
    for s in findings.get("suggestions") or []:
        if s.get("add_capacity"):
            capacity.add(s.get("layer"))
        for name in s.get("remove") or []:
            if name not in remove:
                remove.append(name)
                reasons[name] = s.get("text", "")
    # The output layer's width is the number of labels: never changed, never removed.
    output = list(original)[-1] if original else None
    classes = {i["name"]: i.get("class") for i in manifest.get("analysed_layers") or []}
    remove = [name for name in remove if name != output]
    for name in [n for n in remove if "/" in n]:
        remove.remove(name)
        reasons[name] = f"{reasons[name]}; not applied: {_NESTED}"
    widths = {}
    for name, width in (findings.get("suggested_widths") or {}).items():
        f = layers.get(name) or {}
        why = (f.get("T4") or {}).get("text") or f"suggested width {width}"
        if name == output or name in remove or int(width) >= original.get(name, int(width) + 1):
            continue
        if "/" in name:
            reasons[name] = f"{why}; not applied: {_NESTED}"
        elif classes.get(name) and classes[name] not in RESIZABLE:
            reasons[name] = f"{why}; not applied: {_not_resizable(classes[name])}"
        elif name in capacity:
            reasons[name] = f"{why}; not applied: T5 asks for more capacity there"
        elif not (f.get("T1") or {}).get("stable", False):
            reasons[name] = f"{why}; not applied: the layer is not stable yet (T1)"
        else:
            widths[name] = int(width)
            reasons[name] = why
    return Proposal(
        run=run_name,
        step=int(findings.get("step") or 0),
        widths=widths,
        remove=remove,
        reasons=reasons,
        original_widths=original,
    )


def proposal_history(run) -> list[dict]:
    """Progressive: the proposal at the step each layer became stable, against the final one.

    For every analysed layer with a T1 ``stable_since_step`` in the latest findings, the proposal
    of the findings at that snapshot is compared with the latest proposal: the layer's width in
    both, and whether they agree. Needs the findings of every snapshot (``deepeyes maps RUN``).

    Returns:
        One row per stable layer: ``layer``, ``stable_since_step``, ``width_then``,
        ``width_final``, ``removed_then``, ``removed_final``, ``same``, ``difference`` (filters).
    """
    final = propose(run)
    last = next(s for s in reversed(run.snapshots) if s.findings is not None)
    by_step = {s.step: s for s in run.snapshots if s.findings is not None}
    rows = []
    for name, f in (last.findings.get("layers") or {}).items():
        since = (f.get("T1") or {}).get("stable_since_step")
        if since is None or since not in by_step:
            continue
        then = proposal_from_findings(run.name, by_step[since].findings, run.manifest)
        original = final.original_widths.get(name)
        width_then = then.widths.get(name, original)
        width_final = final.widths.get(name, original)
        rows.append(
            {
                "layer": name,
                "stable_since_step": int(since),
                "width_then": width_then,
                "width_final": width_final,
                "removed_then": name in then.remove,
                "removed_final": name in final.remove,
                "same": width_then == width_final
                and (name in then.remove) == (name in final.remove),
                "difference": None
                if width_then is None or width_final is None
                else int(width_final) - int(width_then),
            }
        )
    return rows
