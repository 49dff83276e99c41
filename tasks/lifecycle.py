"""The lifecycle report: does the managed champion stay accurate while the data moves?

For each run date in a range it puts side by side, on that day's rows:
1. the first day's model frozen in int8 (what serving would be without the daily care),
2. the model retrained daily in fp32 (the accuracy available that day),
3. the managed champion: the model quantrec serves after that day's decision (the promoted
   variant, or the champion it kept).
The numbers come from the runs' records in MLflow; the frozen model is scored anew on each
day's partition from the lake.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from quantrec.models.batch import batch_from_frame
from quantrec.models.scorer import score
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.data import lake
from quantrec.tasks.registry import load_version
from quantrec.tasks.report_render import lifecycle_summary, write_lifecycle_report
from quantrec.tasks.tracking import RUN_DATE_TAG, connect

FROZEN_VARIANT = "int8"


class ReportError(ValueError):
    """The range holds no finished lifecycle run to report on."""


def day_records(start: date, end: date, experiment: str) -> dict[date, dict]:
    """The record of the latest finished (not reused) run of each date in [start, end]."""
    _, client = connect()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"no MLflow experiment {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id],
        # Tags compare only by equality or LIKE: filter the dates here.
        filter_string=f"tags.`{RUN_DATE_TAG}` != '' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    records: dict[date, dict] = {}
    for run in runs:
        day = run.data.tags.get(RUN_DATE_TAG, "")
        if "quantrec.reused_from" in run.data.tags or not start.isoformat() <= day <= end.isoformat():
            continue
        try:
            record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/lifecycle_record.json")
        except (MlflowException, OSError):
            continue
        records[date.fromisoformat(record["date"])] = record  # later runs win
    if not records:
        raise ReportError(f"no finished lifecycle run between {start} and {end} in experiment "
                          f"{experiment!r}; run `quantrec backfill --start {start} --end {end}`")
    return dict(sorted(records.items()))


def lifecycle_frame(records: dict[date, dict], model_name: str,
                    batch_size: int) -> pd.DataFrame:
    """One row per run date: frozen_ne, fp32_ne, champion_ne, drift_level, promoted, outcome."""
    frozen = _frozen_model(records, model_name)
    approved = _approved_versions(model_name)
    day_lake = lake()
    rows = []
    for day, record in records.items():
        metrics = record.get("metrics", {})
        frozen_ne = math.nan
        if frozen is not None and day_lake.exists(day):
            batch = batch_from_frame(day_lake.read(day), frozen.schema)
            frozen_ne = score(frozen.model, batch, batch_size=batch_size).ne
        rows.append({
            "date": day,
            "frozen_ne": frozen_ne,
            "fp32_ne": metrics.get("fp32", {}).get("ne", math.nan),
            "champion_ne": _champion_ne(record, approved),
            "drift_level": record.get("drift_level"),
            "promoted": (record.get("champion_version") != record.get("champion_version_before")
                         or record.get("challenger_version") in approved),
            "outcome": record.get("decision"),
        })
    return pd.DataFrame(rows)


def _champion_ne(record: dict, approved: set[str]) -> float:
    """NE on the day of the model served after the day's decision: the promoted variant,
    the challenger if a reviewer approved it, else the champion that was kept."""
    metrics = record.get("metrics", {})
    promoted = record.get("promoted_variant")
    if not promoted and record.get("challenger_version") in approved:
        promoted = record.get("challenger_variant")
    if promoted and promoted in metrics:
        return metrics[promoted]["ne"]
    return metrics.get("champion", {}).get("ne", math.nan)


def _approved_versions(model_name: str) -> set[str]:
    _, client = connect()
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`quantrec.review` = 'approved'")
    except MlflowException:
        return set()
    return {str(v.version) for v in found}


def _frozen_model(records: dict[date, dict], model_name: str):
    for record in records.values():
        version = record.get("registered_versions", {}).get(FROZEN_VARIANT)
        if version:
            return load_version(model_name, version)
    return None


def write_report(start: date, end: date, out: Path, config: QuantrecConfig,
                 *, shift_date: date | None = None) -> tuple[Path, Path, dict]:
    """Write ``lifecycle.png`` and ``lifecycle.html`` into ``out``; return them and the
    summary numbers."""
    records = day_records(start, end, config.registry.experiment)
    days = lifecycle_frame(records, config.registry.model_name, config.evaluation.batch_size)
    budget = config.gate.quantization_ne_budget_rel
    png, html = write_lifecycle_report(days, Path(out), budget_rel=budget, shift_date=shift_date)
    days.to_csv(Path(out) / "lifecycle.csv", index=False)
    return png, html, lifecycle_summary(days, budget_rel=budget, shift_date=shift_date)
