"""The tasks' shared base: the MLflow plumbing (connect, one run per run date, flat metric
names, dataset records, the registry's alias primitives) and the one retry policy of the
tasks that talk to MLflow.

Tasks log through an explicit ``run_id`` (``MlflowClient``) rather than the fluent
"active run", so a stage never writes into whatever run another thread left open.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
import torch
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantrec.models.artifact import LoadedModel
from quantrec.models.lifecycle import DayOutcome
from quantrec.models.manifest import IntegrityError, Manifest, file_sha256, take_manifest
from quantrec.models.names import Alias, Tag
from quantrec.models.plan_table import PlanRow
from quantrec.tasks.settings import Home, quantrec_home

logger = logging.getLogger(__name__)
# Every finished lifecycle run keeps its DayOutcome here (models.lifecycle.DayOutcome).
RECORD_ARTIFACT = "lifecycle_record.json"
# Each registered version's manifest is a run artifact here (``record_manifest``).
MANIFEST_DIR = "manifests"
# Each variant's precision plan, unit by unit (``models.plan_table``), as run artifacts here.
PLAN_TABLE_DIR = "plans"
# The run description MLflow's UI shows on the run page (markdown).
NOTE_TAG = "mlflow.note.content"
# The experiment tag MLflow 3's UI reads to choose its layout: "custom_model_development"
# opens on the runs table, no tag (or "genai_development") on the GenAI overview.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_ML = "custom_model_development"
# What ``mlflow models serve`` installs for a logged quantrec model (a variant, a pipeline).
SERVING_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "pandas", "numpy", "pyarrow"]


def mlflow_task(name: str, **options):
    """A Prefect task that talks to MLflow: never cached, retried with exponential backoff
    and jitter (a tracking server restarting, a locked SQLite file). ``options`` override,
    e.g. ``retry_condition_fn``."""
    policy = dict(
        cache_policy=NO_CACHE,
        retries=3,
        retry_jitter_factor=0.5,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
    )
    return task(name=name, **{**policy, **options})


def connect() -> tuple[Home, MlflowClient]:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or the embedded store; return a client.

    A relative store path is made absolute first: MLflow resolves it against the working
    directory of each call, and it exports the URI to child processes, which may start
    elsewhere. A new local database is created with its artifact root in the home, so even
    MLflow's own ``Default`` experiment keeps its files there.
    """
    home = quantrec_home()
    uri = absolute_tracking_uri(home.tracking_uri)
    if is_serverless(uri):
        _create_store(uri, home)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return home, MlflowClient(tracking_uri=uri, registry_uri=uri)


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative SQLite file or store folder resolved against the working
    directory now (``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri and not uri.startswith("file:"):
        return Path(uri).resolve().as_uri()
    return uri


def is_serverless(uri: str) -> bool:
    """Whether ``uri`` is a store this process writes directly (SQLite, a database, a
    folder), with no tracking server to hold the artifacts: they then belong in the home."""
    return not uri.startswith(("http://", "https://", "databricks"))


def _create_store(uri: str, home: Home) -> None:
    """Create a SQLite store that does not exist yet with the home's artifact root (MLflow
    would give its ``Default`` experiment ``./mlruns`` of the working directory)."""
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(uri, home.mlflow_artifacts.as_uri())


EXPERIMENT_NOTE = (
    "quantrec's daily lifecycle: one run per run date (lifecycle-YYYY-MM-DD, its description "
    "the day's decision), the lifecycle report run (lifecycle-report), and the registered "
    "model's versions with a model card each. The champion alias is the version that serves."
)


def experiment_id(client: MlflowClient, home: Home, name: str) -> str:
    """The experiment's id, created on first use: artifacts under ``$QUANTREC_HOME`` when
    no tracking server holds them, and the MLflow UI opening on its runs."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        serverless = is_serverless(client.tracking_uri)
        location = home.mlflow_artifacts.as_uri() if serverless else None
        found = client.create_experiment(name, artifact_location=location)
    else:
        found = experiment.experiment_id
        if is_serverless(client.tracking_uri) and not _inside(experiment, home):
            logger.warning(
                "experiment %r keeps its artifacts at %s, outside $QUANTREC_HOME (%s): it was "
                "created by an older quantrec or another tool; `make clean` will not remove "
                "them. Start a new home, or name another experiment ([registry] experiment).",
                name,
                experiment.artifact_location,
                home.root,
            )
    if (experiment.tags if experiment else {}).get(EXPERIMENT_KIND) != EXPERIMENT_KIND_ML:
        # MLflow 3's UI opens an experiment without this tag on its GenAI overview.
        client.set_experiment_tag(found, EXPERIMENT_KIND, EXPERIMENT_KIND_ML)
    if not (experiment.tags if experiment else {}).get(NOTE_TAG):
        # The Experiments list shows it as the experiment's description.
        client.set_experiment_tag(found, NOTE_TAG, EXPERIMENT_NOTE)
    return found


def _inside(experiment, home: Home) -> bool:
    location = experiment.artifact_location
    path = Path(location.removeprefix("file://")) if location.startswith("file:") else None
    return path is not None and path.resolve().is_relative_to(home.root)


def start_run(
    client: MlflowClient, experiment: str, run_date: date, tags: Mapping[str, str]
) -> str:
    """Open this run date's MLflow run and return its id."""
    run = client.create_run(
        experiment,
        run_name=f"lifecycle-{run_date.isoformat()}",
        tags={Tag.RUN_DATE: run_date.isoformat(), **tags},
    )
    return run.info.run_id


def retry_unless(*errors: type[BaseException]):
    """A Prefect ``retry_condition_fn``: retry any failure except ``errors`` (bad input
    that a retry cannot fix)."""

    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except errors:
            return False
        except Exception:  # noqa: BLE001 - anything else may be transient
            return True
        return True

    return condition


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log finite metrics in one call; NaN (e.g. AUC of a one-class day) is skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, 0)
        for key, value in metrics.items()
        if value is not None and math.isfinite(float(value))
    ]
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start : start + 500])


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def flatten(prefix: str, values: Mapping[str, object]) -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}`` for metric and param names."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(name, value))
        else:
            flat[name] = value
    return flat


@contextmanager
def stage_timer(client: MlflowClient, run_id: str, stage: str) -> Iterator[None]:
    """Log the wall time of a stage as ``time.<stage>_s``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log_metrics(client, run_id, {f"time.{stage}_s": time.perf_counter() - started})


def stage_timings(run_ids: list[str]) -> dict[str, list[float]]:
    """Seconds per stage (``time.<stage>_s``) across the given runs, in run order."""
    _, client = connect()
    timings: dict[str, list[float]] = {}
    for run_id in run_ids:
        for key, value in client.get_run(run_id).data.metrics.items():
            if key.startswith("time.") and key.endswith("_s"):
                timings.setdefault(key[len("time.") : -len("_s")], []).append(value)
    return timings


# --- datasets ------------------------------------------------------------------------------


def dataset_entity(
    frame: pd.DataFrame, *, name: str, source: str, digest: str, label: str, rows: int | None = None
):
    """The MLflow description of a frame (name, digest, source, schema, profile). With
    ``rows``, ``frame`` is a sample: the schema is the sample's, the profile counts ``rows``
    (a streamed window, a large day: never profiled whole)."""
    import json

    from mlflow.entities import Dataset

    with warnings.catch_warnings():
        # MLflow hints that integer id columns cannot hold missing values (the contract
        # forbids them) and that a local path could be two kinds of source: noise per run.
        warnings.simplefilter("ignore", UserWarning)
        entity = mlflow.data.from_pandas(
            frame, source=source, targets=label, name=name, digest=digest
        )._to_mlflow_entity()
    if rows is None:
        return entity
    return Dataset(
        name=entity.name,
        digest=entity.digest,
        source_type=entity.source_type,
        source=entity.source,
        schema=entity.schema,
        profile=json.dumps({"num_rows": rows, "num_elements": rows * frame.shape[1]}),
    )


def log_dataset(client, run_id: str, entity, *, context: str) -> None:
    """Record a dataset as an input of the run (context: training or evaluation)."""
    context_tag = InputTag(key="mlflow.data.context", value=context)
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[context_tag])])


# --- the MLflow UI's address, for links ---------------------------------------------------

# The file ``make ui`` (deploy/ui.sh) writes into the home: the MLflow UI's address.
UI_URL_FILE = "mlflow-ui.url"


def mlflow_ui_base(client) -> str | None:
    """The MLflow UI's address: ``$QUANTREC_MLFLOW_UI_URL``, what ``make ui`` wrote into
    the home, or an http(s) tracking URI; None when unknown."""
    base = os.environ.get("QUANTREC_MLFLOW_UI_URL")
    written = quantrec_home().root / UI_URL_FILE
    if not base and written.is_file():
        base = written.read_text().strip()
    base = base or client.tracking_uri
    return base.rstrip("/") if base.startswith(("http://", "https://")) else None


# MLflow 3's UI opens on its GenAI pages unless asked for the model-training ones.
_MODEL_TRAINING = "?workflowType=machine_learning"


def run_url(client, base: str, run_id: str, path: str = "") -> str:
    """The MLflow UI's page of a run, or of one of its artifacts (``path``: it previews
    HTML, images and tables)."""
    run = client.get_run(run_id)
    page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return page + (f"/artifacts/{path}" if path else "") + _MODEL_TRAINING


def artifact_url(client, base: str, run_id: str, path: str) -> str:
    return run_url(client, base, run_id, path)


def raw_artifact_url(base: str, run_id: str, path: str) -> str:
    """The file itself, as the MLflow server sends it (an image to embed)."""
    return f"{base}/get-artifact?path={path}&run_uuid={run_id}"


# --- records read back by later stages and by reviews ---------------------------------------


def log_plan_rows(client, run_id: str, variant: str, rows: list[PlanRow]) -> None:
    """Log ``variant``'s plan table as ``plans/<variant>.json`` of the run."""
    client.log_dict(run_id, [row.to_dict() for row in rows], f"{PLAN_TABLE_DIR}/{variant}.json")


def load_plan_rows(run_id: str, variant: str | None) -> list[PlanRow]:
    """The plan table ``log_plan_rows`` logged; empty when there is none."""
    if not variant:
        return []
    try:
        rows = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PLAN_TABLE_DIR}/{variant}.json")
    except (MlflowException, OSError):
        return []
    return [PlanRow.from_dict(row) for row in rows]


def load_outcome(run_id: str) -> DayOutcome | None:
    """The ``DayOutcome`` a finished run recorded, or None (a run that did not finish)."""
    try:
        return DayOutcome.from_record(
            mlflow.artifacts.load_dict(f"runs:/{run_id}/{RECORD_ARTIFACT}")
        )
    except (MlflowException, OSError):
        return None


def set_note(client, run_id: str, markdown: str) -> None:
    """The run's description (MLflow's tag values hold at most 8000 characters)."""
    if len(markdown) > 8000:
        markdown = markdown[:7900] + "\n\n(cut: the full text is the run's artifacts)"
    client.set_tag(run_id, NOTE_TAG, markdown)


# --- the registry's primitives -------------------------------------------------------------


def champion_version(client, model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None when there is none yet."""
    return registry_aliases(client, model_name).get(Alias.CHAMPION)


def registry_aliases(client, model_name: str) -> dict[str, str]:
    """Alias -> version of the registered model; empty when it is not registered yet."""
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in registered.aliases.items()}


def load_version(model_name: str, version: str) -> LoadedModel:
    """Load one registered version back into a model (tensors plus recipe), from a local
    copy of its files checked against its manifest first (``IntegrityError`` otherwise):
    what is checked is what MLflow then reads, so nothing it names runs unverified."""
    with tempfile.TemporaryDirectory(prefix="quantrec-verified-") as tmp:
        local = verified_copy(model_name, version, Path(tmp))
        return mlflow.pyfunc.load_model(str(local)).get_raw_model()


# --- integrity: the manifest of a version's files ------------------------------------------


def _model_artifacts(client, model_name: str, version: str) -> str:
    """The artifact URI of the files MLflow stored for ``version`` (its logged model's
    artifact location; a version registered from a run path, its source)."""
    source = client.get_model_version(model_name, str(version)).source
    if source.startswith("models:/m-"):
        return client.get_logged_model(source.removeprefix("models:/")).artifact_location
    return source


def record_manifest(client, model_name: str, version: str, run_id: str) -> Manifest:
    """Take the manifest of ``version``'s stored files (as the artifact store holds them,
    after logging), log it as the run artifact ``manifests/<version>.json`` and tag the
    version with its location and SHA-256."""
    with tempfile.TemporaryDirectory(prefix="quantrec-manifest-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_model_artifacts(client, model_name, version),
            dst_path=str(Path(tmp) / "model"),
        )
        manifest = take_manifest(Path(local))
        path = Path(tmp) / f"{model_name}-v{version}.json"
        path.write_text(manifest.to_json())
        client.log_artifact(run_id, str(path), artifact_path=MANIFEST_DIR)
    client.set_model_version_tag(
        model_name, version, Tag.MANIFEST, f"runs:/{run_id}/{MANIFEST_DIR}/{path.name}"
    )
    client.set_model_version_tag(model_name, version, Tag.MANIFEST_SHA256, manifest.sha256)
    return manifest


def _manifest_of(client, model_name: str, version: str, into: Path) -> Manifest:
    tags = client.get_model_version(model_name, str(version)).tags
    uri, expected = tags.get(Tag.MANIFEST), tags.get(Tag.MANIFEST_SHA256)
    if not uri or not expected:
        raise IntegrityError(
            f"model {model_name!r} version {version} has no manifest (tags {Tag.MANIFEST} and "
            f"{Tag.MANIFEST_SHA256}): it was registered before quantrec recorded manifests, "
            "or its registration was interrupted, so its files cannot be verified and it is "
            f"not loaded. Register it again (quantrec run --date "
            f"{tags.get(Tag.RUN_DATE, 'RUN_DATE')} --force) or promote a verified version."
        )
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    except (MlflowException, OSError) as err:
        raise IntegrityError(
            f"model {model_name!r} version {version}: its manifest {uri} "
            f"cannot be read ({err}); the version is not loaded"
        ) from err
    found = file_sha256(local)
    if found != expected:
        raise IntegrityError(
            f"model {model_name!r} version {version}: the manifest {uri} has sha256 {found}, "
            f"the registry's {Tag.MANIFEST_SHA256} tag says {expected}; the manifest was "
            "changed after registration and the version is not loaded"
        )
    return Manifest.from_json(local.read_text())


def verified_copy(model_name: str, version: str, into: Path) -> Path:
    """Download ``version``'s files into ``into`` and check every one against its manifest;
    the local folder to load from. ``IntegrityError`` names the model, the version, each
    file and both hashes when a file differs, is missing or is not in the manifest."""
    _, client = connect()
    manifest = _manifest_of(client, model_name, version, into / "manifest")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=_model_artifacts(client, model_name, version), dst_path=str(into / "model")
        )
    )
    mismatches = manifest.mismatches(local)
    if mismatches:
        raise IntegrityError(
            f"model {model_name!r} version {version} does not match its manifest: "
            + "; ".join(m.describe() for m in mismatches)
            + ". The registered files were changed after registration; nothing of the "
            "version was loaded. Restore the files or register the version again."
        )
    return local


def move_champion(client, model_name: str, version: str | None) -> str | None:
    """The one promotion step: ``previous`` <- old champion, then ``champion`` <- version.

    Setting ``previous`` first means a crash between the two calls leaves the old champion
    serving. With ``version`` None nothing moves. Returns the champion version after the step.
    """
    current = champion_version(client, model_name)
    if version is None or version == current:
        return current
    if current is not None:
        client.set_registered_model_alias(model_name, Alias.PREVIOUS, current)
    client.set_registered_model_alias(model_name, Alias.CHAMPION, version)
    logger.info("champion of %s: version %s (was %s)", model_name, version, current)
    return version
