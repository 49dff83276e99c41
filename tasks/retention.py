"""Apply the registry's retention policy (``models.retention``): delete the versions no one
needs, their logged models, and, on the embedded store, their files (``mlflow gc``).

``quantrec gc [--dry-run]`` runs it by hand; with ``registry.retention`` on (the default) the
daily flow runs it after every run date.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.names import Tag
from quantrec.models.retention import RegisteredVersion, RetentionPlan, retained
from quantrec.tasks.tracking import connect, is_serverless, registry_aliases


@dataclass(frozen=True)
class Collected:
    """What one pass did (or, dry, would do)."""

    plan: RetentionPlan
    deleted: tuple[str, ...]  # versions deleted (none when dry)
    freed_bytes: int  # bytes of model files removed from the home's artifact store
    dry_run: bool

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        freed = "" if self.dry_run else f", {self.freed_bytes / 2**20:.1f} MiB of files freed"
        drop = ", ".join(self.plan.drop) or "none"
        return (
            f"retention: keeping {len(self.plan.keep)} version(s), {verb} "
            f"{len(self.plan.drop)} ({drop}){freed}"
        )


def _versions(client, model_name: str) -> list:
    try:
        return client.search_model_versions(f"name='{model_name}'")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def collect(model_name: str, *, keep_days: int, dry_run: bool = False) -> Collected:
    """Plan retention for ``model_name`` and, unless ``dry_run``, carry it out."""
    home, client = connect()
    found = _versions(client, model_name)
    plan = retained(
        [
            RegisteredVersion(
                version=str(v.version),
                run_date=v.tags.get(Tag.RUN_DATE, ""),
                variant=v.tags.get(Tag.VARIANT, ""),
                run_id=v.tags.get(Tag.MLFLOW_RUN_ID, v.run_id or ""),
                pending_review=v.tags.get(Tag.REVIEW) == "pending",
            )
            for v in found
        ],
        registry_aliases(client, model_name),
        keep_days=keep_days,
    )
    if dry_run or not plan.drop:
        return Collected(plan=plan, deleted=(), freed_bytes=0, dry_run=dry_run)
    by_number = {str(v.version): v for v in found}
    logged, freed = [], 0
    for number in plan.drop:
        version = by_number[number]
        client.delete_model_version(model_name, number)
        model_id = getattr(version, "model_id", None) or (
            version.source.removeprefix("models:/")
            if version.source.startswith("models:/m-")
            else None
        )
        if model_id:
            model = client.get_logged_model(model_id)
            location = model.artifact_location
            if location.startswith("file://"):
                freed += _folder_bytes(location.removeprefix("file://"))
            client.delete_logged_model(model_id)
            logged.append(model_id)
    if logged and is_serverless(client.tracking_uri):
        _gc(client.tracking_uri, logged)
    return Collected(plan=plan, deleted=plan.drop, freed_bytes=freed, dry_run=False)


def _gc(tracking_uri: str, logged_model_ids: list[str]) -> None:
    """``mlflow gc`` of the deleted logged models: their records and files, for good."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "gc",
            "--backend-store-uri",
            tracking_uri,
            "--tracking-uri",
            tracking_uri,
            "--logged-model-ids",
            ",".join(logged_model_ids),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


@task(name="retention", cache_policy=NO_CACHE)
def apply_retention(model_name: str, keep_days: int) -> None:
    """The daily flow's pass: keep what the policy keeps, delete the rest."""
    get_run_logger().info(collect(model_name, keep_days=keep_days).summary())
