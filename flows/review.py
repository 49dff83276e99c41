"""Review flows: the human decisions on the registry, one flow run each (so the Prefect UI
lists them beside the daily runs). ``quantrec review ...``, ``quantrec rollback`` and
``quantrec promote`` call these."""

from __future__ import annotations

from prefect import flow

from quantrec.tasks import review


@flow(name="review-approve")
def approve_challenger(model_name: str, version: str, reason: str = "") -> dict:
    """Approve a challenger: it becomes the champion."""
    return review.approve(model_name, version, reason)


@flow(name="review-reject")
def reject_challenger(model_name: str, version: str, reason: str) -> dict:
    """Reject a challenger: tagged, the challenger alias dropped, the champion stays."""
    return review.reject(model_name, version, reason)


@flow(name="rollback")
def rollback_champion(model_name: str, reason: str = "") -> dict:
    """Point the champion back at the previous one."""
    return review.rollback(model_name, reason)


@flow(name="promote-override")
def promote_version(model_name: str, version: str, reason: str) -> dict:
    """Promote a version the gate did not promote, with a recorded reason."""
    return review.promote_override(model_name, version, reason)
