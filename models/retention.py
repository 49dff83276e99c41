"""Registry retention: which registered versions a model line still needs.

Every evaluated variant of every run date is registered (``tasks.registry``): the gate's
verdict on each is reviewable, ``quantrec promote VERSION`` may override it, and continual
training continues the newest fp32 parent whether or not it was promoted. So the registry
grows by four versions a day, and each holds a model's files. ``retained`` bounds it:

- every version of the latest ``keep_days`` run dates (the recent days a reviewer looks at
  and the model line's newest parent);
- the versions the aliases name (champion, previous, challenger), and the fp32 parent of
  each (registered by the same run: drift and staleness compare against it);
- a version under review (``quantrec.review`` = pending).

Everything else may go: its version and its logged model's files. Runs stay (their metrics,
decisions and reports are small and feed the lifecycle report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quantrec.models.names import Variant


@dataclass(frozen=True)
class RegisteredVersion:
    """What retention reads of one registered version."""

    version: str
    run_date: str  # ISO date of the run that registered it ("" when untagged)
    variant: str  # "fp32", "fp16", "int8", "searched" ("" when untagged)
    run_id: str  # the MLflow run that registered it
    pending_review: bool = False


@dataclass(frozen=True)
class RetentionPlan:
    """``keep`` and ``drop``: version numbers; ``why``: version -> why it is kept."""

    keep: tuple[str, ...]
    drop: tuple[str, ...]
    why: Mapping[str, str]


def retained(
    versions: Iterable[RegisteredVersion], aliases: Mapping[str, str], *, keep_days: int
) -> RetentionPlan:
    """Split ``versions`` into those the policy keeps and those it drops.

    Args:
        versions: every registered version of the model.
        aliases: alias name -> version (``champion``, ``previous``, ``challenger``).
        keep_days: run dates kept whole, counting back from the newest (at least 1).
    """
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1; got {keep_days}")
    versions = list(versions)
    dates = sorted({v.run_date for v in versions if v.run_date}, reverse=True)
    recent = set(dates[:keep_days])
    by_number = {v.version: v for v in versions}
    parent_of_run = {v.run_id: v.version for v in versions if v.variant == Variant.FP32}
    why: dict[str, str] = {}
    for alias, number in sorted(aliases.items()):
        if number in by_number:
            why.setdefault(number, f"alias {alias}")
            parent = parent_of_run.get(by_number[number].run_id)
            if parent is not None:
                why.setdefault(parent, f"fp32 parent of the {alias} (version {number})")
    for v in versions:
        if v.pending_review:
            why.setdefault(v.version, "under review")
        if v.run_date in recent:
            why.setdefault(v.version, f"run date {v.run_date} is among the last {keep_days}")
        if not v.run_date:
            # No identity tags: not one of the lifecycle's own; never removed automatically.
            why.setdefault(v.version, "not tagged by a run of the lifecycle")
    order = sorted(by_number, key=int)
    return RetentionPlan(
        keep=tuple(n for n in order if n in why),
        drop=tuple(n for n in order if n not in why),
        why=why,
    )
