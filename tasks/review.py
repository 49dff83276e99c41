"""Registry review: the human decisions on model versions, recorded where reviewers look.

Every decision is a set of version tags (``quantrec.review``, ``quantrec.reviewed_by``,
``quantrec.review_reason``, ``quantrec.reviewed_at``; overrides and rollbacks their own) and
an alias move, so the MLflow UI shows who decided what and why. The version's decision tag
and model card then say what happened ("approved", "rejected in review", "rolled back",
"promoted by override"), and so do the run date's MLflow description and Prefect summary.
As in the daily flow, the alias switch is the only promotion step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from mlflow.exceptions import MlflowException
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from quantrec.models.model_card import (
    description_limit,
    model_card,
    reviewed_decision,
    summary_markdown,
)
from quantrec.models.names import Alias, Tag
from quantrec.tasks.settings import os_user, quantrec_home
from quantrec.tasks.tracking import (
    connect,
    load_outcome,
    load_plan_rows,
    mlflow_task,
    move_champion,
    retry_unless,
    set_note,
)


class ReviewError(ValueError):
    """A review command cannot apply: unknown model or version, nothing to roll back to."""


_RETRY = dict(retry_condition_fn=retry_unless(ReviewError))


@dataclass(frozen=True)
class Pending:
    """A version waiting for review, with what the gate said about it."""

    version: str
    run_date: str
    variant: str
    aliases: tuple[str, ...]
    reason: str
    decision: dict | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# What the registry answers for a model or version it does not hold (a malformed version
# number included); any other MlflowException (a lost server) is raised as it is.
ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _version(client, model_name: str, version: str):
    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if err.error_code not in ABSENT:  # a lost server is not a missing version
            raise
        raise ReviewError(
            f"model {model_name!r} has no version {version!r} in the registry at "
            f"{client.tracking_uri}; `quantrec review list` shows the pending ones"
        ) from err


def _aliases(client, model_name: str) -> dict[str, str]:
    try:
        return {a: str(v) for a, v in client.get_registered_model(model_name).aliases.items()}
    except MlflowException as err:
        if err.error_code not in ABSENT:
            raise
        raise ReviewError(f"no registered model {model_name!r} at {client.tracking_uri}") from err


def pending_reviews(model_name: str) -> list[Pending]:
    """Versions tagged ``quantrec.review=pending`` (the challengers), newest first."""
    _, client = connect()
    aliases = _aliases(client, model_name)
    found = client.search_model_versions(f"name='{model_name}' and tags.`{Tag.REVIEW}` = 'pending'")
    pending = []
    for version in sorted(found, key=lambda v: int(v.version), reverse=True):
        run_id = version.tags.get(Tag.MLFLOW_RUN_ID)
        try:
            decision = mlflow.artifacts.load_dict(f"runs:/{run_id}/decision.json")
        except (MlflowException, OSError):
            decision = None
        pending.append(
            Pending(
                version=str(version.version),
                run_date=version.tags.get(Tag.RUN_DATE, ""),
                variant=version.tags.get(Tag.VARIANT, ""),
                aliases=tuple(a for a, v in aliases.items() if v == str(version.version)),
                reason=version.tags.get(Tag.CHALLENGER_REASON, ""),
                decision=decision,
            )
        )
    return pending


def _tag(client, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value[:5000])


def _drop_challenger(client, model_name: str, version: str) -> None:
    if _aliases(client, model_name).get(Alias.CHALLENGER) == version:
        client.delete_registered_model_alias(model_name, Alias.CHALLENGER)


def _require_challenger(model_name: str, found, aliases: dict[str, str]) -> None:
    """Approval skips the gate only for the version it sent to review: the one the
    ``challenger`` alias points at, still tagged pending. Anything else is an override."""
    version = str(found.version)
    review = found.tags.get(Tag.REVIEW)
    challenger = aliases.get(Alias.CHALLENGER)
    if challenger == version and review == "pending":
        return
    held = [alias for alias, held_by in aliases.items() if held_by == version]
    what = [
        f"gate decision {found.tags.get(Tag.DECISION, 'not recorded')!r}",
        f"review {repr(review) if review else 'never requested'}",
        f"aliases {', '.join(sorted(held)) or 'none'}",
    ]
    if aliases.get(Alias.CHAMPION) == version:
        what.insert(0, "it is the champion already")
    raise ReviewError(
        f"version {version} of {model_name!r} is not the challenger under review "
        f"(the challenger is {'version ' + challenger if challenger else 'none'}); "
        f"version {version}: {'; '.join(what)}. `quantrec review approve` applies only to "
        f"the current challenger; to make version {version} the champion anyway, record an "
        f'override: quantrec promote {version} --reason "..."'
    )


@mlflow_task("approve-challenger", **_RETRY)
def approve(model_name: str, version: str, reason: str = "") -> dict:
    """Make the challenger ``version`` the champion after review (the old one becomes
    ``previous``); any other version is refused (``ReviewError``): that is ``promote``."""
    _, client = connect()
    found = _version(client, model_name, version)
    version = str(found.version)
    aliases = _aliases(client, model_name)
    _require_challenger(model_name, found, aliases)
    before = aliases.get(Alias.CHAMPION)
    _tag(
        client,
        model_name,
        version,
        {
            Tag.REVIEW: "approved",
            Tag.REVIEWED_BY: os_user(),
            Tag.REVIEWED_AT: _now(),
            Tag.REVIEW_REASON: reason or "approved",
        },
    )
    after = move_champion(client, model_name, version)
    _drop_challenger(client, model_name, version)
    _record_review(client, model_name, version)
    return {
        "action": "approve",
        "version": version,
        "champion_before": before,
        "champion": after,
        "by": os_user(),
    }


@mlflow_task("reject-challenger", **_RETRY)
def reject(model_name: str, version: str, reason: str) -> dict:
    """Record that ``version`` must not serve; the champion does not move."""
    if not reason.strip():
        raise ReviewError('a rejection needs a reason: --reason "..."')
    _, client = connect()
    version = str(_version(client, model_name, version).version)
    _tag(
        client,
        model_name,
        version,
        {
            Tag.REVIEW: "rejected",
            Tag.REVIEWED_BY: os_user(),
            Tag.REVIEWED_AT: _now(),
            Tag.REVIEW_REASON: reason,
        },
    )
    _drop_challenger(client, model_name, version)
    _record_review(client, model_name, version)
    return {
        "action": "reject",
        "version": version,
        "champion": _aliases(client, model_name).get(Alias.CHAMPION),
        "by": os_user(),
    }


@mlflow_task("rollback-champion", **_RETRY)
def rollback(model_name: str, reason: str = "") -> dict:
    """Point ``champion`` back at ``previous``; the demoted version is tagged as such."""
    _, client = connect()
    aliases = _aliases(client, model_name)
    previous, current = aliases.get(Alias.PREVIOUS), aliases.get(Alias.CHAMPION)
    if previous is None:
        raise ReviewError(
            f"model {model_name!r} has no 'previous' alias to roll back to (champion is {current})"
        )
    if current is not None:
        _tag(
            client,
            model_name,
            current,
            {
                Tag.ROLLED_BACK_BY: os_user(),
                Tag.ROLLED_BACK_AT: _now(),
                Tag.ROLLED_BACK_REASON: reason or "rollback",
            },
        )
    client.set_registered_model_alias(model_name, Alias.CHAMPION, previous)
    # The demoted version is not a safe place to return to; previous is now ambiguous.
    client.delete_registered_model_alias(model_name, Alias.PREVIOUS)
    if current is not None:
        _record_review(client, model_name, current)
    return {
        "action": "rollback",
        "version": current,
        "champion_before": current,
        "champion": previous,
        "by": os_user(),
        "reason": reason or "rollback",
    }


@mlflow_task("override-gate", **_RETRY)
def promote_override(model_name: str, version: str, reason: str) -> dict:
    """Promote ``version`` although the gate did not: recorded with reason and user."""
    if not reason.strip():
        raise ReviewError('overriding the gate needs a reason: --reason "..."')
    _, client = connect()
    found = _version(client, model_name, version)
    version = str(found.version)
    before = _aliases(client, model_name).get(Alias.CHAMPION)
    _tag(
        client,
        model_name,
        version,
        {
            Tag.OVERRIDE_REASON: reason,
            Tag.OVERRIDE_BY: os_user(),
            Tag.OVERRIDE_AT: _now(),
            Tag.OVERRIDE_OF_DECISION: found.tags.get(Tag.DECISION, "unknown"),
        },
    )
    after = move_champion(client, model_name, version)
    _drop_challenger(client, model_name, version)
    _record_review(client, model_name, version)
    return {
        "action": "promote",
        "version": version,
        "champion_before": before,
        "champion": after,
        "by": os_user(),
        "reason": reason,
    }


def _record_review(client, model_name: str, version: str) -> None:
    """After a human decision on ``version``: its decision tag and model card say what
    happened, and so does the description of the run that registered it."""
    found = client.get_model_version(model_name, version)
    tags = dict(found.tags)
    decided = reviewed_decision(tags)
    if decided is None:
        return
    client.set_model_version_tag(model_name, version, Tag.DECISION, decided)
    run_id, variant = tags.get(Tag.MLFLOW_RUN_ID), tags.get(Tag.VARIANT)
    outcome = load_outcome(run_id) if run_id else None
    if outcome is None or not variant:
        return  # a version registered before runs recorded their outcome: tags only
    plan = load_plan_rows(run_id, variant)
    limit = description_limit(embedded_sqlite=quantrec_home().uses_embedded_tracking)
    card = model_card(outcome, variant, plan=plan, review=tags, max_chars=limit)
    client.update_model_version(model_name, version, description=card)
    set_note(client, run_id, day_summary(client, model_name, version))


def day_summary(client, model_name: str, version: str) -> str | None:
    """The summary of the run date that registered ``version``, as it stands now (the
    review, the current champion); None when that run recorded no outcome."""
    tags = client.get_model_version(model_name, version).tags
    run_id = tags.get(Tag.MLFLOW_RUN_ID)
    outcome = load_outcome(run_id) if run_id else None
    if outcome is None:
        return None
    winner = outcome.promoted_variant or outcome.challenger_variant
    return summary_markdown(
        outcome,
        plan=load_plan_rows(run_id, winner),
        review=tags,
        reviewed_version=version,
        champion=_aliases(client, model_name).get(Alias.CHAMPION),
        checks=False,
    )


@mlflow_task("publish-review")
def publish_review(model_name: str, result: dict) -> dict:
    """The review in Prefect: the decision in the flow run's log, a markdown artifact
    (``review-<version>``), and the run date's summary artifact brought up to date."""
    logger = get_run_logger()
    version = result.get("version")
    logger.info(
        "%s of %s version %s by %s: champion %s -> %s (%s)",
        result["action"],
        model_name,
        version,
        result.get("by"),
        result.get("champion_before"),
        result.get("champion"),
        result.get("reason", ""),
    )
    lines = [
        f"# {result['action']}: {model_name} version {version}",
        "",
        f"- by: {result.get('by')}",
        f"- champion: version {result.get('champion_before')} -> {result.get('champion')}",
    ]
    if result.get("reason"):
        lines.append(f"- reason: {result['reason']}")
    summary = None
    if version:
        _, client = connect()
        summary = day_summary(client, model_name, version)
        run_date = client.get_model_version(model_name, version).tags.get(Tag.RUN_DATE)
        if summary and run_date:
            create_markdown_artifact(
                markdown=summary,
                key=f"lifecycle-{run_date}",
                description=f"quantrec decision for {run_date}, after review",
            )
    create_markdown_artifact(
        markdown="\n".join(lines + (["", "---", "", summary] if summary else [])),
        key=f"review-{version or 'none'}",
        description=f"{result['action']} of {model_name} version {version}",
    )
    return result
