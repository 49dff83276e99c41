"""The daily lifecycle's pure core: what each stage hands the next, the policies between the
stages, and the one record of a run date.

For run date D the stages run in this order (``flows/daily_lifecycle.py`` composes them as
Prefect tasks, each timing its call into this core as ``time.<stage>_s``):

1. ``admit_days``: the W window days and D into the lake -> ``Partitions``;
2. validation of D (``data_checks.partition``) -> ``Validation``; ``why_stop`` says whether the
   run stops before training (bad or missing data, an empty window);
3. drift of D against the champion's reference -> ``DriftOutcome``;
4. ``train_fp32`` on the window, a seeded share of its last day held out -> ``Trained``;
5. ``why_search`` (reuse yesterday's plan, or search: forced, none, failed, severe drift,
   realised change drifting towards the faithfulness bound), the reuse check
   (``reuse_plan``, ``reuse_refused``) and ``search_plan`` -> ``PlanChoice``, with the
   plan's predicted NE change and its interval;
6. ``build_variants``: fp32, fp16, int8 and the plan's variant -> ``Candidate``;
7. scoring on D (``models.evaluation``) and the gate (``models.gate``), candidates in
   ``promotion_preference`` order;
8. registration and the alias switch, then ``DayOutcome``: the run date's one record, read by
   the model cards, the summary, the CLI and the lifecycle report.

Nothing here imports Prefect or MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from quantrec.data_checks.schema import FeatureSchema
from quantrec.feeds.base import FeedError, SmallDayError
from quantrec.feeds.lake import DayLake
from quantrec.models.artifact import LoadedModel
from quantrec.models.baselines import Baselines, BaselineSettings, fit_baselines
from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.gate import Decision
from quantrec.models.names import CHAMPION_KEY, DriftLevel, Variant
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import model_bytes, uniform_plan
from quantrec.models.search import (
    Budget,
    DeltaInterval,
    Faithfulness,
    SearchResult,
    search_precision_plan,
)
from quantrec.models.search_accept import DeltaMeter
from quantrec.models.sensitivity import SensitivityMeasure
from quantrec.models.sizing import auto_model_size
from quantrec.models.stream import WindowStream, read_holdout
from quantrec.models.torchrun import train_through_torchrun
from quantrec.models.train import TrainReport, torch_threads, train_dlrm, warm_start

# --- 1-2: the days a run reads, and whether it may go on -----------------------------------


@dataclass(frozen=True)
class Partitions:
    """The days a run reads: the training window and the run date, with content digests.

    ``window`` holds only the days that are in the lake: days a feed skipped (too few rows)
    or that sit in quarantine are left out. ``problem`` says why the run date itself is
    not usable (quarantined, too small, not in the feed), or is None.
    """

    run_date: date
    window: tuple[date, ...]
    digests: dict[date, str]
    schema: FeatureSchema
    skipped: dict[date, str]
    problem: str | None = None

    def window_digest(self) -> str:
        joined = "|".join(self.digests[d] for d in self.window)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def training_window(run_date: date, window_days: int) -> tuple[date, ...]:
    """The ``window_days`` days before ``run_date``, oldest first."""
    return tuple(run_date - timedelta(days=k) for k in range(window_days, 0, -1))


def _admit(day_lake: DayLake, source, day: date) -> str | None:
    """Bring ``day`` into the lake if it is not there; why it is unusable, or None."""
    if day_lake.exists(day):
        return None
    if day_lake.is_quarantined(day):
        return (
            f"day {day} is quarantined ({day_lake.quarantine_path(day).parent}); "
            f"after fixing the source, re-admit it with `quantrec readmit --date {day}` "
            "(with the run's feed options): the day is read again from the source"
        )
    try:
        day_lake.write(day, source.day(day))
    except SmallDayError as err:
        return f"skipped: {err}"
    except FeedError as err:
        return f"not available from the feed: {err}"
    return None


def admit_days(day_lake: DayLake, source, run_date: date, window_days: int) -> Partitions:
    """Write the window and the run date into the lake (days already there are kept, never
    overwritten) and describe what the run can read."""
    window = training_window(run_date, window_days)
    problems = {day: _admit(day_lake, source, day) for day in (*window, run_date)}
    skipped = {day: why for day, why in problems.items() if why is not None}
    usable = [d for d in (*window, run_date) if d not in skipped]
    return Partitions(
        run_date=run_date,
        window=tuple(d for d in window if d not in skipped),
        digests={d: day_lake.digest(d) for d in usable},
        schema=source.schema(),
        skipped=skipped,
        problem=skipped.get(run_date),
    )


@dataclass(frozen=True)
class Validation:
    """The validation of the days a run reads: whether they passed, in one sentence, the
    failing (or the run date's) report in full, and where the failing day was quarantined.
    ``failed_day``: the day that failed (the run date, or a day of the training window)."""

    passed: bool
    summary: str
    report: dict
    quarantined: str | None = None
    failed_day: date | None = None


def why_stop(partitions: Partitions, validation: Validation | None, window_days: int) -> str | None:
    """Why the run must stop before training, or None to go on."""
    if partitions.problem:
        return partitions.problem
    if validation is not None and not validation.passed:
        return validation.summary
    if not partitions.window:
        return f"no usable day in the {window_days}-day training window"
    return None


# --- 3: drift ------------------------------------------------------------------------------


@dataclass
class DriftOutcome:
    """What the gate and the reports need from the drift stage."""

    level: DriftLevel
    reasons: list[str]
    summary: dict
    table: pd.DataFrame | None = None
    staleness: dict[str, float] = field(default_factory=dict)
    reference: str = ""  # where the reference profile came from


def drift_outcome(report, *, staleness: dict[str, float], reference: str) -> DriftOutcome:
    """The drift stage's result from a ``data_checks.drift.DriftReport``."""
    reasons = [str(r) for r in report.reasons]
    return DriftOutcome(
        level=DriftLevel(report.level),
        reasons=reasons,
        table=report.table,
        staleness=staleness,
        reference=reference,
        summary={
            "level": report.level,
            "reasons": reasons,
            "dataset_drift_share": report.dataset_drift_share,
            "prediction_psi": report.prediction_psi,
            "label_rate_shift": report.label_rate_shift,
        },
    )


@dataclass(frozen=True)
class Lineage:
    """Where a registered fp32 parent came from: the last day it trained on, and the run
    date of the full retrain its warm-started line began with."""

    version: str
    trained_through: date
    full_retrain_date: date


@dataclass
class Champion:
    """The serving model: its version, weights, the run that made it and its fp32 parent."""

    version: str
    loaded: LoadedModel
    model_name: str = ""
    run_id: str = ""
    parent_version: str | None = None


# --- 4: training ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPlan:
    """What today's fp32 parent trains on: ``days`` (oldest first), from scratch
    (``warm_from`` None) or continuing the champion's parent (``warm_from``, its version)."""

    mode: str  # "full" or "continual"
    days: tuple[date, ...]
    reason: str
    full_retrain_date: date
    warm_from: str | None = None


def plan_training(
    run_date: date,
    window: tuple[date, ...],
    *,
    mode: str,
    full_retrain_days: int,
    parent: Lineage | None,
    drift_level: DriftLevel = DriftLevel.OK,
) -> TrainingPlan:
    """Continual training, as production CTR systems do: continue the model line's fp32
    parent on the days since it last trained, and retrain from scratch on the whole window
    every ``full_retrain_days`` days (or when continuing is not possible or not wise).

    ``window`` is the usable window (days in the lake). Full retrain when: ``mode`` is
    "window"; there is no parent; the days since the parent trained are not all in the
    window (a gap the parent never saw); severe drift (the past may mislead); or the
    lineage's last full retrain is ``full_retrain_days`` or more days old.
    """

    def full(reason: str) -> TrainingPlan:
        return TrainingPlan(mode="full", days=window, reason=reason, full_retrain_date=run_date)

    if mode == "window":
        return full("training.mode is window")
    if parent is None:
        return full("no champion parent to continue")
    if drift_level == DriftLevel.SEVERE:
        return full("severe drift")
    age = (run_date - parent.full_retrain_date).days
    if age >= full_retrain_days:
        return full(
            f"the last full retrain ({parent.full_retrain_date}) is {age} days old "
            f"(training.full_retrain_days = {full_retrain_days})"
        )
    new = tuple(d for d in window if d > parent.trained_through)
    expected = (run_date - parent.trained_through).days - 1
    if not new or len(new) != expected:
        return full(
            f"the parent trained through {parent.trained_through}; the days since "
            f"are not all in the window ({len(new)} of {expected})"
        )
    return TrainingPlan(
        mode="continual",
        days=new,
        warm_from=parent.version,
        full_retrain_date=parent.full_retrain_date,
        reason=f"continues version {parent.version} (trained through "
        f"{parent.trained_through}) on {len(new)} new day(s)",
    )


@dataclass
class Trained:
    """The fp32 parent, how its training went, and the recent rows it never saw."""

    model: DLRM
    report: TrainReport
    holdout: Batch
    sample: pd.DataFrame  # held-out rows as read: the window's schema for its dataset record
    schema: FeatureSchema  # the model's contract (its hash sizes): what scores it
    plan: TrainingPlan | None = None  # what it trained on, from scratch or continued
    rows: int = 0
    seconds: float = 0.0  # wall time of the whole stage: reading, training
    computed_by: str = ""  # MLflow run that computed it (another one when resumed)


def train_fp32(
    paths: list[Path],
    schema: FeatureSchema,
    *,
    model,
    training,
    holdout_fraction: float,
    warm_from: LoadedModel | None = None,
) -> Trained:
    """Train the fp32 DLRM on day files (oldest first), deterministically.

    The days stream from their files (memory does not grow with the window); a seeded
    ``holdout_fraction`` of the last day is excluded: early stopping measures on it, and
    the search and calibration use it afterwards. ``model`` and ``training`` are the
    config's ``[model]`` and ``[training]`` sections (``tasks.config.ModelConfig``,
    ``TrainingConfig``); sizes they leave unset follow the rows (``models.sizing``).

    ``warm_from``: a registered model to continue, with its architecture and its contract
    (``schema``), so its weights carry over whole. Otherwise a new model for ``schema``.
    """
    started = time.perf_counter()
    mask, held = read_holdout(paths[-1], fraction=holdout_fraction, seed=training.seed)
    torch.manual_seed(training.seed)
    if warm_from is not None:
        schema = warm_from.schema
        dlrm = DLRM(**warm_from.model.architecture())
        warm_start(dlrm, warm_from.model)
    else:
        rows = WindowStream(paths, schema, exclude={paths[-1]: mask}).rows
        size = auto_model_size(schema, rows, embedding_dim=model.embedding_dim)
        schema = size.apply(schema)  # tables sized to the rows: the model's own contract
        dlrm = DLRM.from_schema(
            schema,
            embedding_dim=size.embedding_dim,
            bottom_mlp=(*model.bottom_mlp[:-1], size.embedding_dim),
            top_mlp=model.top_mlp,
        )
    stream = WindowStream(paths, schema, exclude={paths[-1]: mask})
    holdout = batch_from_frame(held, schema)
    if getattr(training, "nproc_per_node", 1) > 1:  # tables sharded over torchrun ranks
        report = train_through_torchrun(
            dlrm,
            stream,
            nproc_per_node=training.nproc_per_node,
            seed=training.seed,
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            sparse_optimizer=training.sparse_optimizer,
            sparse_learning_rate=training.sparse_learning_rate,
            embedding_weight_decay=training.embedding_weight_decay,
            continued=warm_from is not None,
            threads=training.threads,
        )
    else:
        with torch_threads(training.threads):
            report = train_dlrm(
                dlrm,
                stream,
                seed=training.seed,
                epochs=training.epochs,
                max_epochs=training.max_epochs,
                validation=holdout,
                batch_size=training.batch_size,
                learning_rate=training.learning_rate,
                sparse_optimizer=training.sparse_optimizer,
                sparse_learning_rate=training.sparse_learning_rate,
                embedding_weight_decay=training.embedding_weight_decay,
                continued=warm_from is not None,
                optimizer_state=_resumable(warm_from, training),
                fused=training.fused,
            )
    dlrm.eval()
    return Trained(
        model=dlrm,
        report=report,
        holdout=holdout,
        sample=held.head(1000),
        schema=schema,
        rows=stream.rows,
        seconds=time.perf_counter() - started,
    )


def _resumable(warm_from: LoadedModel | None, training) -> dict | None:
    """The parent's optimizer state when this run can resume it (``models.train``)."""
    if warm_from is None or not (training.fused and training.sparse_optimizer == "rowwise_adagrad"):
        return None
    return warm_from.model.optimizer_state


def fit_window_baselines(
    paths: list[Path],
    trained: Trained,
    *,
    holdout_fraction: float,
    seed: int,
    settings: BaselineSettings | None = None,
) -> Baselines:
    """The base rate and the logistic baseline on the window's rows (the fp32 model's
    held-out share excluded, C chosen on that share). In continual mode the fp32 parent
    itself trains only on the new days; the baselines, trained from scratch, get the whole
    window: the strongest linear model the same data allows."""
    mask, _ = read_holdout(paths[-1], fraction=holdout_fraction, seed=seed)
    # The model's contract, so the baselines see the ids as the held-out batch holds them.
    stream = WindowStream(paths, trained.schema, exclude={paths[-1]: mask})
    return fit_baselines(stream, trained.holdout, settings=settings)


# --- 5: the precision plan -----------------------------------------------------------------


@dataclass
class PlanChoice:
    """The plan the searched variant runs and where it came from."""

    plan: PrecisionPlan
    source: str  # "searched" or "reused"
    reason: str
    result: SearchResult | None = None
    seconds: float = 0.0
    computed_by: str = ""  # MLflow run that computed it (another one when resumed)
    # The plan's NE change vs its fp32 parent on the held-out rows, with its paired
    # interval: the search's accepted interval, or the reuse check's. What D should see.
    predicted: DeltaInterval | None = None


@dataclass(frozen=True)
class PreviousPlan:
    """The latest earlier run's plan: the date it was searched for and its variant's verdict
    there (None when that run recorded none), and the plan's realised relative NE change
    against its fp32 parent on that run date (None when not recorded)."""

    plan: PrecisionPlan
    run_date: str
    verdict: str | None = None
    realised_delta: float | None = None


def why_search(
    previous: PreviousPlan | None,
    *,
    reuse: bool,
    force: bool,
    drift_level: DriftLevel = DriftLevel.OK,
    faithfulness: float | None = None,
    drift_share: float = 0.75,
) -> str | None:
    """Why a search must run today, or None when the previous plan may be reused.

    With ``faithfulness`` (the bound on |NE change| vs fp32), a plan whose realised
    |change| on its last run date reached ``drift_share`` of the bound is searched again:
    it is drifting towards the bound, and tomorrow it may be past it.
    """
    if force:
        return "search forced"
    if drift_level == DriftLevel.SEVERE:
        # The reused plan was fitted to a world that is gone.
        return "severe drift"
    if not reuse:
        return "search.reuse_plan is off"
    if previous is None:
        return "no earlier plan"
    if previous.verdict == "rejected":
        return f"the plan's variant failed the gate on {previous.run_date}"
    realised = previous.realised_delta
    if faithfulness is not None and realised is not None:
        if abs(realised) >= drift_share * faithfulness:
            return (
                f"the plan's realised NE change on {previous.run_date} "
                f"({100 * realised:+.3f} %) reached {drift_share:.0%} of the faithfulness "
                f"bound ({100 * faithfulness:.3f} %)"
            )
    return None


def search_plan(
    trained: Trained,
    *,
    reason: str,
    budget_rel: float,
    linear_candidates: tuple[str, ...],
    table_candidates: tuple[str, ...],
    batch_size: int,
    threads: int,
    faithfulness: Faithfulness | None = None,
    measure: SensitivityMeasure | None = None,
) -> PlanChoice:
    """Search a precision plan on the held-out rows: half to search on, half to confirm the
    finalists (a plan that passes the budget on the rows it was picked on can pass by
    noise) and, with ``faithfulness``, to accept the plan by its NE change interval.
    ``measure``: where the per-unit sensitivities are measured (None: here)."""
    started = time.perf_counter()
    half = len(trained.holdout) // 2
    with torch_threads(threads):
        result = search_precision_plan(
            trained.model,
            trained.holdout.slice(0, half),
            calibration=trained.holdout,
            confirmation=trained.holdout.slice(half, len(trained.holdout)),
            budget=Budget(limit=budget_rel),
            linear_candidates=linear_candidates,
            table_candidates=table_candidates,
            batch_size=batch_size,
            faithfulness=faithfulness,
            measure=measure,
        )
    # A skipped search (held-out rows without both classes) keeps the fp32 plan; it is no
    # plan to reuse tomorrow.
    return PlanChoice(
        plan=result.chosen,
        source="skipped" if result.skipped else "searched",
        reason=f"{reason}; {result.reason}",
        result=result,
        seconds=time.perf_counter() - started,
        predicted=result.predicted,
    )


def reuse_plan(
    previous: PreviousPlan,
    trained: Trained | None = None,
    *,
    faithfulness: Faithfulness | None = None,
    batch_size: int = 8192,
    threads: int = 1,
) -> PlanChoice:
    """Reuse the previous plan; with ``trained`` and ``faithfulness``, check it first: its NE
    change interval against today's fp32 parent on the held-out rows (re-calibrated on
    them, as ``build_variants`` does) is the day's prediction (``reuse_refused``)."""
    started = time.perf_counter()
    predicted = None
    if trained is not None and faithfulness is not None:
        with torch_threads(threads):
            variant = previous.plan.apply(trained.model, calibration=trained.holdout)
            meter = DeltaMeter(trained.model, trained.holdout, faithfulness, batch_size=batch_size)
            predicted = meter.measure(variant)
    reason = f"reused the plan searched for {previous.run_date}"
    return PlanChoice(
        plan=previous.plan,
        source="reused",
        reason=reason if predicted is None else f"{reason}; {predicted.describe()}",
        seconds=time.perf_counter() - started,
        predicted=predicted,
    )


def reuse_refused(choice: PlanChoice, faithfulness: Faithfulness | None) -> str | None:
    """Why a reused plan must be searched again after its check: its interval on today's
    held-out rows crosses the faithfulness bound. None: keep it."""
    if faithfulness is None or choice.predicted is None:
        return None
    if choice.predicted.holds(faithfulness.bound):
        return None
    return (
        f"the reused plan's interval crosses the faithfulness bound "
        f"({100 * faithfulness.bound:.3f} %) on the held-out rows: {choice.predicted.describe()}"
    )


# --- 6: the variants -----------------------------------------------------------------------


@dataclass
class Candidate:
    """The run date's fp32 model and the variants derived from it, by name."""

    variants: dict[str, DLRM]
    bytes: dict[str, int]
    plans: dict[str, PrecisionPlan]
    train_samples_per_s: float
    schema: FeatureSchema  # the contract every variant scores (the parent's)


def build_variants(trained: Trained, plan: PrecisionPlan, *, threads: int) -> Candidate:
    """fp32, fp16 and int8 everywhere, and the precision plan's variant (``searched``).

    Static recipes in the plan calibrate on the held-out rows, so a reused plan is
    re-calibrated on the freshest data.
    """
    model = trained.model
    with torch_threads(threads):
        plans = {
            Variant.FP32: PrecisionPlan.from_model(model),
            Variant.FP16: PrecisionPlan.from_precisions(uniform_plan(model, "fp16")),
            Variant.INT8: PrecisionPlan.from_precisions(uniform_plan(model, "int8")),
            Variant.SEARCHED: plan,
        }
        variants = {
            str(name): model
            if name == Variant.FP32
            else recipe.apply(model, calibration=trained.holdout)
            for name, recipe in plans.items()
        }
    return Candidate(
        variants=variants,
        bytes={n: model_bytes(m) for n, m in variants.items()},
        plans={str(n): p for n, p in plans.items()},
        train_samples_per_s=trained.report.samples_per_s,
        schema=trained.schema,
    )


def promotion_preference(sizes: dict[str, int]) -> list[str]:
    """The order in which passing variants are promoted: low precision smallest first (what
    serving wants), the fp32 parent last, as a fallback."""
    low = sorted((n for n in sizes if n != Variant.FP32), key=lambda n: sizes[n])
    return [*low, str(Variant.FP32)]


# --- 8: the record of a run date -----------------------------------------------------------

# The decision of a day that stopped before training holds its one check under this key
# (``models.gate.reject_invalid_data``).
STOPPED_CHECKS = "run_date"


@dataclass(frozen=True)
class DayOutcome:
    """Everything a run date decided and measured: built once after the gate, completed by
    registration and promotion (``dataclasses.replace``), then read by the model cards, the
    summary, the CLI and the lifecycle report. ``to_record`` is its JSON form (the run's
    ``lifecycle_record.json``), ``from_record`` reads it back."""

    date: date
    model_name: str
    mlflow_run_id: str
    decision: str  # promoted | challenger | rejected (models.names.Outcome)
    reason: str
    promoted_variant: str | None = None
    challenger_variant: str | None = None
    checks: dict[str, list[dict]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    precisions: dict[str, dict[str, str]] = field(default_factory=dict)
    window: tuple[date, ...] = ()
    window_digest: str = ""
    train_samples_per_s: float | None = None
    training_mode: str | None = None  # full | continual
    training_reason: str | None = None
    trained_through: str | None = None  # the last day the fp32 parent trained on (ISO)
    full_retrain_date: str | None = None  # its lineage's last full retrain (ISO)
    plan_source: str | None = None
    plan_reason: str | None = None
    drift: dict | None = None
    quarantined: str | None = None
    registered_versions: dict[str, str] = field(default_factory=dict)
    champion_version_before: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    report: str | None = None
    reused_from: str | None = None
    rerun_mlflow_run_id: str | None = None
    # The searched variant's relative NE change vs its fp32 parent: predicted on the
    # held-out rows (with its paired interval) and realised on D (``models.plan_record``).
    predicted_delta: float | None = None
    predicted_delta_low: float | None = None
    predicted_delta_high: float | None = None
    realised_delta: float | None = None
    # The two-stage pipeline plan's decision, and its registered version when one passed
    # (``models.pipeline_plan``; None when [pipeline] is off or nothing could be planned).
    pipeline: dict | None = None

    @classmethod
    def of_decision(
        cls, decision: Decision, *, run_date: date, model_name: str, run_id: str, **measured: Any
    ) -> DayOutcome:
        return cls(
            date=run_date,
            model_name=model_name,
            mlflow_run_id=run_id,
            decision=decision.outcome,
            reason=decision.reason,
            promoted_variant=decision.promoted,
            challenger_variant=decision.challenger,
            checks=decision.to_dict()["checks"],
            **measured,
        )

    def replace(self, **changes: Any) -> DayOutcome:
        return dataclasses.replace(self, **changes)

    @property
    def drift_level(self) -> str | None:
        return (self.drift or {}).get("level")

    @property
    def stopped(self) -> bool:
        """Whether the day stopped before training (bad or missing data)."""
        return STOPPED_CHECKS in self.checks

    def verdict(self, variant: str) -> str:
        """promoted | challenger | passed | rejected, as the gate said of ``variant``."""
        if variant in (self.promoted_variant, self.challenger_variant):
            return "promoted" if variant == self.promoted_variant else "challenger"
        checks = self.checks.get(variant, [])
        return "passed" if checks and all(c["passed"] for c in checks) else "rejected"

    def to_record(self) -> dict:
        record = dataclasses.asdict(self)
        record["date"] = self.date.isoformat()
        record["window"] = [d.isoformat() for d in self.window]
        record["drift_level"] = self.drift_level
        return record

    @classmethod
    def from_record(cls, record: dict) -> DayOutcome:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["date"] = date.fromisoformat(record["date"])
        values["window"] = tuple(date.fromisoformat(d) for d in record.get("window") or ())
        return cls(**values)


def served_ne(outcome: DayOutcome, approved: set[str]) -> float:
    """NE on the run date of the model served after the day's decision: the promoted
    variant, the challenger if a reviewer approved it, else the champion that was kept
    (NaN when there was none)."""
    promoted = outcome.promoted_variant
    if not promoted and outcome.challenger_version in approved:
        promoted = outcome.challenger_variant
    if promoted and promoted in outcome.metrics:
        return outcome.metrics[promoted]["ne"]
    return outcome.metrics.get(CHAMPION_KEY, {}).get("ne", float("nan"))
