"""Registry stages: load the champion, register every evaluated variant, switch aliases.

Each variant is an MLflow ``python_function`` model whose loader is ``models.pyfunc``
reading tensors plus the recipe: nothing pickled is ever loaded. Each version's stored files
get a manifest of their SHA-256 when it is registered (``tracking.record_manifest``), checked
before every load. The alias switch is the only promotion step; until it runs, the old
champion keeps serving.

The searched variant's numerics against its fp32 parent (``models.numerics``) are logged
with it as ``search/numerics.csv``; ``version_numerics`` measures them for any two
registered versions (``quantrec debug``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from prefect import get_run_logger

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.artifact import LoadedModel, save_model
from quantrec.models.batch import batch_from_frame
from quantrec.models.lifecycle import Champion, DayOutcome, Lineage
from quantrec.models.manifest import IntegrityError
from quantrec.models.model_card import description_limit, model_card
from quantrec.models.names import Alias, Tag, Variant
from quantrec.models.numerics import (
    DEFAULT_ROWS,
    DEFAULT_THRESHOLD_DB,
    NUMERICS_ARTIFACT,
    OUTPUT,
    NumericsError,
    NumericsReport,
    compare_numerics,
)
from quantrec.models.plan import PrecisionPlan
from quantrec.models.plan_table import plan_rows
from quantrec.tasks.settings import pause_point, quantrec_home
from quantrec.tasks.tracking import (
    SERVING_REQUIREMENTS,
    champion_version,
    connect,
    load_version,
    log_plan_rows,
    mlflow_task,
    move_champion,
    record_manifest,
    retry_unless,
)


# Tampered files stay tampered: no retry.
@mlflow_task("load-champion", retry_condition_fn=retry_unless(IntegrityError))
def load_champion(model_name: str) -> Champion | None:
    _, client = connect()
    version = champion_version(client, model_name)
    if version is None:
        get_run_logger().info("no champion yet for %s", model_name)
        return None
    run_id = client.get_model_version(model_name, version).tags.get(Tag.MLFLOW_RUN_ID, "")
    return Champion(
        version=version,
        loaded=load_version(model_name, version),
        model_name=model_name,
        run_id=run_id,
        parent_version=_fp32_parent(client, model_name, run_id),
    )


def _fp32_parent(client, model_name: str, run_id: str) -> str | None:
    """The fp32 version registered by the run ``run_id`` (the newest when repeated)."""
    if not run_id:
        return None
    siblings = client.search_model_versions(
        f"name='{model_name}' and tags.`{Tag.MLFLOW_RUN_ID}` = '{run_id}'"
    )
    parents = [v for v in siblings if v.tags.get(Tag.VARIANT) == Variant.FP32]
    return str(max(parents, key=lambda v: int(v.version)).version) if parents else None


def _lineage(version) -> Lineage | None:
    """What the fp32 parent version recorded of its training; None for a version that
    recorded nothing (it cannot be continued)."""
    through, full = (version.tags.get(Tag.TRAINED_THROUGH), version.tags.get(Tag.FULL_RETRAIN_DATE))
    if not through or not full:
        return None
    return Lineage(
        version=str(version.version),
        trained_through=date.fromisoformat(through),
        full_retrain_date=date.fromisoformat(full),
    )


@mlflow_task("find-training-parent")
def latest_parent(model_name: str, run_date: date) -> Lineage | None:
    """The newest registered fp32 parent trained before ``run_date``: the model line that
    continual training continues, whether or not the gate promoted it (the gate guards
    what serves; the line learns every day). None when there is none yet."""
    _, client = connect()
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.VARIANT}` = '{Variant.FP32}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    # A version made by a run of this date (a forced rerun) or a later one is not a parent:
    # the rerun continues from what the first run of the date continued from.
    lines = [
        line
        for v in found
        if v.tags.get(Tag.RUN_DATE, "") < run_date.isoformat()
        and (line := _lineage(v))
        and line.trained_through < run_date
    ]
    return max(lines, key=lambda line: (line.trained_through, int(line.version)), default=None)


def registered_for(client, model_name: str, run_key: str) -> dict[str, str]:
    """Variant -> version already registered under ``run_key`` (newest when repeated)."""
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.RUN_KEY}` = '{run_key}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    versions: dict[str, str] = {}
    for version in sorted(found, key=lambda v: int(v.version)):
        variant = version.tags.get(Tag.VARIANT)
        if variant:
            versions[variant] = str(version.version)
    return versions


@mlflow_task("register")
def register_variants(
    outcome: DayOutcome,
    variants: dict,
    plans: dict[str, PrecisionPlan],
    schema: FeatureSchema,
    run_key: str,
    force: bool = False,
) -> DayOutcome:
    """Register every variant as a version tagged with its verdict; the outcome with the
    versions (name -> version).

    Idempotent: a variant already registered under ``run_key`` (a crashed or repeated run
    of the same date, data, config and code) is not registered again unless ``force``; its
    tags and model card are brought up to date. Each version's description is its model
    card (``models.model_card``) with its precision plan unit by unit, also logged as the
    run's ``plans/<variant>.json``.
    """
    _, client = connect()
    model_name, run_id = outcome.model_name, outcome.mlflow_run_id
    existing = {} if force else registered_for(client, model_name, run_key)
    versions: dict[str, str] = {}
    for name, model in variants.items():
        if name in existing:
            version = existing[name]
            get_run_logger().info("%s already registered as version %s", name, version)
            if not client.get_model_version(model_name, version).tags.get(Tag.MANIFEST_SHA256):
                # A crash between logging and the manifest: this run key wrote the files
                # moments ago, so the resumed run takes the manifest it did not get to.
                record_manifest(client, model_name, version, run_id)
        else:
            pause_point("register")
            identity = {
                Tag.RUN_KEY: run_key,
                Tag.VARIANT: name,
                Tag.MLFLOW_RUN_ID: run_id,
                Tag.RUN_DATE: outcome.date.isoformat(),
            }
            version = _log_version(
                client, run_id, name, model, schema, plans.get(name), model_name, identity
            )
            # Taken of what the store holds now, before anything can read it back.
            record_manifest(client, model_name, version, run_id)
        tags = {
            Tag.RUN_DATE: outcome.date.isoformat(),
            Tag.VARIANT: name,
            Tag.DECISION: outcome.verdict(name),
            Tag.NE: (f"{outcome.metrics[name]['ne']:.6f}" if name in outcome.metrics else "n/a"),
            Tag.BYTES: str(outcome.bytes[name]),
            Tag.MLFLOW_RUN_ID: run_id,
            Tag.RUN_KEY: run_key,
            Tag.TRAINING_MODE: outcome.training_mode or "",
            Tag.TRAINED_THROUGH: outcome.trained_through or "",
            Tag.FULL_RETRAIN_DATE: outcome.full_retrain_date or "",
        }
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        rows = plan_rows(model, plans.get(name))
        log_plan_rows(client, run_id, name, rows)
        limit = description_limit(embedded_sqlite=quantrec_home().uses_embedded_tracking)
        card = model_card(outcome, name, plan=rows, max_chars=limit)
        client.update_model_version(model_name, version, description=card)
        versions[name] = version
    if Variant.SEARCHED in variants:
        # Tomorrow's run reads this to decide whether the plan may be reused.
        client.set_tag(run_id, Tag.SEARCHED_VERDICT, outcome.verdict(Variant.SEARCHED))
        if Variant.FP32 in variants:
            _record_numerics(client, run_id, variants, schema, outcome.date)
    return outcome.replace(registered_versions=versions)


def _record_numerics(client, run_id: str, variants: dict, schema, run_date: date) -> None:
    """The searched variant against its fp32 parent, unit by unit, on the run date's first
    ``DEFAULT_ROWS`` rows (what ``quantrec debug`` measures for the registered versions)."""
    home, _ = connect()
    batch = batch_from_frame(home.day_lake().read(run_date).head(DEFAULT_ROWS), schema)
    report = compare_numerics(variants[Variant.FP32], variants[Variant.SEARCHED], batch)
    client.log_text(run_id, report.to_csv(), NUMERICS_ARTIFACT)
    get_run_logger().info(
        "searched vs fp32: output SQNR %.1f dB; %s",
        report.unit(OUTPUT).sqnr_db,
        f"first divergence {report.first_divergence}"
        if report.first_divergence
        else f"no unit below {report.threshold_db:g} dB",
    )


@dataclass(frozen=True)
class VersionNumerics:
    """``version_numerics``' answer: the report and which versions it compares."""

    report: NumericsReport
    reference: str  # e.g. "fp32 v4"
    compared: str  # e.g. "searched v7"
    run_date: date


def version_numerics(
    model_name: str,
    version: str,
    *,
    against: str | None = None,
    rows: int = DEFAULT_ROWS,
    run_date: date | None = None,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
) -> VersionNumerics:
    """Registered ``version`` against ``against`` (default: the fp32 parent its run
    registered), unit by unit, on the first ``rows`` rows of ``run_date`` in the lake
    (default: the version's run date). Both are loaded verified (``load_version``).

    Raises:
        NumericsError: an unknown version, no fp32 parent, versions of other shapes.
    """
    if rows < 1:
        raise NumericsError(f"--rows must be at least 1, got {rows}")
    home, client = connect()
    tags = _version_tags(client, model_name, version)
    if against is None:
        against = _fp32_parent(client, model_name, tags.get(Tag.MLFLOW_RUN_ID, ""))
        if against is None:
            raise NumericsError(
                f"version {version} of {model_name!r} has no fp32 parent registered by its "
                f"run ({Tag.MLFLOW_RUN_ID} = {tags.get(Tag.MLFLOW_RUN_ID)!r}); pass --against"
            )
    _version_tags(client, model_name, against)
    if str(against) == str(version):
        raise NumericsError(
            f"version {version} of {model_name!r} is its own reference (it is the fp32 "
            "parent); pass --against another version"
        )
    reference, compared = load_version(model_name, against), load_version(model_name, version)
    _check_same_shapes(model_name, (against, reference), (version, compared))
    day = run_date or date.fromisoformat(tags[Tag.RUN_DATE])
    frame = home.day_lake().read(day).head(rows)
    report = compare_numerics(
        reference.model,
        compared.model,
        batch_from_frame(frame, reference.schema),
        threshold_db=threshold_db,
    )
    return VersionNumerics(
        report=report,
        reference=f"{reference.precision} v{against}",
        compared=f"{compared.precision} v{version}",
        run_date=day,
    )


def _version_tags(client, model_name: str, version: str) -> dict[str, str]:
    try:
        return client.get_model_version(model_name, str(version)).tags
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # a lost server is not a missing version
        raise NumericsError(
            f"model {model_name!r} has no version {version!r} in the registry at "
            f"{client.tracking_uri}"
        ) from err


def _check_same_shapes(model_name: str, *versions: tuple[str, LoadedModel]) -> None:
    (v1, a), (v2, b) = versions
    if a.model.architecture() != b.model.architecture():
        raise NumericsError(
            f"versions {v1} and {v2} of {model_name!r} have different architectures "
            f"({a.model.architecture()} vs {b.model.architecture()}); compare variants of "
            "one fp32 parent"
        )


def _log_version(
    client,
    run_id: str,
    name: str,
    model,
    schema: FeatureSchema,
    plan: PrecisionPlan | None,
    model_name: str,
    identity: dict[str, str],
) -> str:
    """Log the variant's files to the run, then create its version with ``identity`` (run
    key, variant, run, date) as tags in the same call: a crash can leave files, never a
    version that a resumed run cannot recognise as its own."""
    with tempfile.TemporaryDirectory() as tmp:
        artifact = save_model(
            model, Path(tmp) / "artifact", schema=schema, precision=name, plan=plan
        )
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pyfunc.log_model(
                name=name,
                loader_module="quantrec.models.pyfunc",
                data_path=str(artifact),
                pip_requirements=SERVING_REQUIREMENTS,
            )
        finally:
            # Leaving a fluent run would mark it FINISHED; promote and summarize are still to
            # come, and a crash there must leave the run RUNNING for the next run to close.
            mlflow.end_run(status="RUNNING")
    pause_point("register-files")  # the files are logged, no version exists yet
    try:
        client.create_registered_model(model_name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        model_name, info.model_uri, run_id=run_id, tags=identity, model_id=info.model_id
    )
    return str(version.version)


@mlflow_task("promote")
def switch_champion(outcome: DayOutcome) -> DayOutcome:
    """Point ``champion`` at the promoted variant's version (and ``previous`` at the one it
    replaces); nothing moves when nothing was promoted. The outcome with the champion
    before and after the step."""
    _, client = connect()
    pause_point("promote")
    before = champion_version(client, outcome.model_name)
    version = outcome.registered_versions.get(outcome.promoted_variant or "")
    after = move_champion(client, outcome.model_name, version)
    if version is not None:
        client.set_tag(outcome.mlflow_run_id, Tag.CHAMPION_VERSION, after)
    return outcome.replace(champion_version_before=before, champion_version=after)


@mlflow_task("nominate-challenger")
def set_challenger(outcome: DayOutcome) -> DayOutcome:
    """Point ``challenger`` at the day's winner for human review (severe drift); the
    champion does not move."""
    _, client = connect()
    model_name = outcome.model_name
    version = outcome.registered_versions[outcome.challenger_variant]
    client.set_registered_model_alias(model_name, Alias.CHALLENGER, version)
    client.set_model_version_tag(model_name, version, Tag.REVIEW, "pending")
    client.set_model_version_tag(model_name, version, Tag.CHALLENGER_REASON, outcome.reason[:5000])
    client.set_tag(outcome.mlflow_run_id, Tag.CHALLENGER_VERSION, version)
    get_run_logger().warning(
        "version %s of %s is the challenger, awaiting review: %s",
        version,
        model_name,
        outcome.reason,
    )
    return outcome.replace(challenger_version=version)
