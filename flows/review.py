"""Review flows: the human decisions on the registry, one flow run each (so the Prefect UI
lists them beside the daily runs, each with its log and a ``review-<version>`` artifact).
``quantrec review ...``, ``quantrec rollback`` and ``quantrec promote`` call these."""

from __future__ import annotations

from prefect import flow

from quantrec.tasks import review


@flow(name="review-approve", flow_run_name="approve-{version}")
def approve_challenger(model_name: str, version: str, reason: str = "") -> dict:
    """Approve a challenger: it becomes the champion."""
    return review.publish_review(model_name, review.approve(model_name, version, reason))


@flow(name="review-reject", flow_run_name="reject-{version}")
def reject_challenger(model_name: str, version: str, reason: str) -> dict:
    """Reject a challenger: tagged, the challenger alias dropped, the champion stays."""
    return review.publish_review(model_name, review.reject(model_name, version, reason))


@flow(name="rollback", flow_run_name="rollback-{model_name}")
def rollback_champion(model_name: str, reason: str = "") -> dict:
    """Point the champion back at the previous one."""
    return review.publish_review(model_name, review.rollback(model_name, reason))


@flow(name="promote-override", flow_run_name="promote-{version}")
def promote_version(model_name: str, version: str, reason: str) -> dict:
    """Promote a version the gate did not promote, with a recorded reason."""
    return review.publish_review(model_name, review.promote_override(model_name, version, reason))
