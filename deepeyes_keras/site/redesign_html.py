"""The redesign of a run as HTML: the proposal and, once retrained, the comparison.

``deepeyes redesign RUN`` writes ``redesign/proposal.json`` (new widths, layers to remove, the
parameters before and after); with ``--verify`` it writes ``redesign/verification.json`` (the
original network and the proposal trained on the same data and seeds:
:mod:`deepeyes_keras.redesign.verify`). The run page shows both in its "Redesign" section.

Everything read from the files is escaped (the builders of :mod:`deepeyes_keras.site.markup`);
values of an unexpected type are shown as text, never trusted as numbers.

Example:
    >>> redesign_html({"run": "r", "step": 3, "widths": {}, "remove": []}, None)[:64]
    '<p>The findings at step 3 propose no change to this network.</p>'
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from deepeyes_keras.site.markup import notice, number, table

HEADS = ("network", "widths", "parameters", "training time, s (mean ± sd)")
COMMAND = "deepeyes redesign RUN --verify --hook FILE"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def mean_sd(stats: Any, *, scale: float = 1.0, digits: int = 2) -> str:
    """``"98.12 ± 0.10"`` from ``{"mean", "sd"}``; escaped text for anything else."""
    if not isinstance(stats, dict) or not is_number(stats.get("mean")):
        return escape(json.dumps(stats)) if stats is not None else "-"
    text = f"{stats['mean'] * scale:.{digits}f}"
    if is_number(stats.get("sd")):
        text += f" ± {stats['sd'] * scale:.{digits}f}"
    return text


def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def listing(value: Any) -> list:
    return value if isinstance(value, list) else []


def changes_html(proposal: dict) -> str:
    """Each change of the proposal with its reason, as a list."""
    original, reasons = mapping(proposal.get("original_widths")), mapping(proposal.get("reasons"))
    items = []
    for name, width in mapping(proposal.get("widths")).items():
        before = original.get(name, "?")
        items.append((name, f"{before} → {width}", reasons.get(name)))
    for name in listing(proposal.get("remove")):
        items.append((name, "remove", reasons.get(name)))
    lines = "".join(
        f"<li><strong>{escape(str(name))}</strong>: {escape(str(change))}"
        + (f' <span class="deepeyes-muted">— {escape(str(reason))}</span>' if reason else "")
        + "</li>"
        for name, change, reason in items
    )
    return f'<ul class="deepeyes-redesign-changes">{lines}</ul>'


def proposal_html(proposal: dict) -> str:
    """What is proposed, why, and the parameters before and after."""
    step = proposal.get("step")
    source = proposal.get("source") or "findings"
    origin = (
        f"The findings at step {escape(str(step))}"
        if source == "findings"
        else f"The proposal (given: {escape(str(source))})"
    )
    if not mapping(proposal.get("widths")) and not listing(proposal.get("remove")):
        return f"<p>{origin} propose no change to this network.</p>"
    before, after = proposal.get("parameters_before"), proposal.get("parameters_after")
    if is_number(before) and is_number(after) and before > 0:
        size = f"Parameters {number(before)} → {number(after)} ({after / before:.2f} ×)."
    else:
        reason = proposal.get("parameters_error") or "not counted"
        size = f"Parameters: unknown ({escape(str(reason))})."
    verb = "propose" if source == "findings" else "proposes"
    return f"<p>{origin} {verb}:</p>{changes_html(proposal)}<p>{size}</p>"


def network_row(role: str, net: dict, *, scale: float, digits: int) -> list[str]:
    widths = ", ".join(f"{k} {v}" for k, v in mapping(net.get("widths")).items())
    removed = listing(net.get("removed"))
    if removed:
        widths += f" ({', '.join(map(str, removed))} removed)"
    return [
        escape(role),
        escape(widths),
        number(net.get("parameters")),
        mean_sd(net.get("test"), scale=scale, digits=digits),
        mean_sd(net.get("train_seconds"), digits=1),
    ]


def comparison_html(verification: dict) -> str:
    """The table (one row per network), the difference, and how it was produced."""
    metric = mapping(verification.get("metric"))
    accuracy = metric.get("name", "accuracy") == "accuracy"
    heads = list(HEADS)
    heads.insert(3, "test accuracy, % (mean ± sd)" if accuracy else f"test {metric.get('key')}")
    rows = [
        network_row(str(role), net, scale=100.0 if accuracy else 1.0, digits=2 if accuracy else 4)
        for role, net in mapping(verification.get("networks")).items()
        if isinstance(net, dict)
    ]
    out = [table(heads, rows, css="deepeyes-redesign")]
    diff = mapping(verification.get("difference"))
    if is_number(diff.get("mean")):
        per_seed = ", ".join(f"{v:+.2f}" for v in listing(diff.get("per_seed")) if is_number(v))
        out.append(
            f"<p>Difference (proposal − original): <strong>{diff['mean']:+.2f} "
            f"{escape(str(diff.get('unit', '')))}</strong> (per seed: {per_seed}).</p>"
        )
    out.append(produced_html(verification))
    return "".join(out)


def produced_html(verification: dict) -> str:
    """One line: the command, hook, seeds, fit settings and data that produced the comparison."""
    seeds = ", ".join(map(str, listing(verification.get("seeds_done"))))
    fit = ", ".join(f"{k}={v}" for k, v in mapping(verification.get("fit_kwargs")).items())
    data = mapping(verification.get("data"))
    note = mapping(verification.get("metric")).get("note")
    text = (
        f"Produced by deepeyes redesign --verify with the hook {verification.get('hook')} "
        f"(updated {verification.get('updated')}): for each seed ({seeds}) both networks were "
        f"trained from fresh weights on the same data ({data.get('train', '?')}; "
        f"{data.get('test_rows', '?')} test rows) with the same fit settings ({fit or 'none'})"
        f"{f'; {note}' if note else ''}; sd over the seeds (n − 1)."
    )
    return f'<p class="deepeyes-muted">{escape(text)}</p>'


def status_html(verification: dict) -> str:
    """A note when the verification is unfinished, interrupted or had nothing to train."""
    status = verification.get("status")
    done, seeds = listing(verification.get("seeds_done")), listing(verification.get("seeds"))
    if status == "running":
        return notice(f"Retraining: {len(done)} of {len(seeds)} seeds done (reload to follow).")
    if status == "interrupted":
        error = verification.get("error") or "unknown error"
        return notice(
            f"The retraining stopped after {len(done)} of {len(seeds)} seeds ({error}); the "
            f"table holds the seeds done. Run {COMMAND} again to finish it.",
            kind="error",
        )
    if status == "unchanged":
        return notice("The proposal changes nothing: no network was retrained.")
    return ""


def same_proposal(proposal: Any, verified: Any) -> bool:
    """True when the verified proposal has the widths and removals of the current one."""
    if not isinstance(proposal, dict) or not isinstance(verified, dict):
        return True  # nothing to compare with: say nothing
    keys = ("widths", "remove")
    return all(proposal.get(k) == verified.get(k) for k in keys)


def redesign_html(proposal: Any, verification: Any) -> str:
    """The run page's redesign section (without its heading); JSON when of an unknown shape."""
    out = []
    if isinstance(proposal, dict):
        out.append(proposal_html(proposal))
    if not isinstance(verification, dict):
        out.append(
            notice(
                f"Not verified yet. {COMMAND} trains the original network and this proposal on "
                "the same data and seeds, and shows the comparison here."
            )
        )
        return "".join(out)
    if not same_proposal(proposal, verification.get("proposal")):
        out.append(
            notice(
                "The comparison below retrained an earlier proposal "
                f"({json.dumps(mapping(verification.get('proposal')).get('widths'))}, remove "
                f"{json.dumps(mapping(verification.get('proposal')).get('remove'))}). Run "
                f"{COMMAND} again to verify the current one."
            )
        )
    out.append(status_html(verification))
    if mapping(verification.get("networks")):
        out.append(comparison_html(verification))
    return "".join(out)
