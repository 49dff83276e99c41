"""Resumable stage results, kept in ``$QUANTREC_HOME/stages/`` in formats that cannot run code.

A crashed run's rerun reuses the fp32 training and the precision plan its first attempt
computed, instead of computing them again. Each result is a folder under the run's
identity (``run_key``), named by the stage and a digest of what it was asked (the training
plan: its parent version and days; the search's flags), written whole or not at all (a
temporary folder renamed into place):

- ``<run_key>/train-<digest>/``: the model as ``models.artifact`` saves it (tensors read back with
  ``weights_only``), ``trained.json`` (the training report, rows, seconds, the run that
  computed it, the training plan) and ``sample.parquet`` (the held-out rows' first
  thousand, for the dataset record). The held-out rows themselves are read again from the
  day file, as training selected them (seeded).
- ``<run_key>/search-<digest>/``: ``choice.json``, the plan with its source, reason,
  prediction and the search's evidence.

Prefect's own result persistence is not used for these: it writes cloudpickle files, and a
file replaced under its storage ran code on the rerun. Nothing here is unpickled: a folder
that does not read back as these formats (edited, truncated, replaced by a pickle) is
reported in the run's log, naming the file and the error, and the stage is computed again.
Results older than ``STAGE_RESULT_TTL`` are ignored; a finished run removes its own (its
record answers a rerun).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TypeVar

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.artifact import load_model, save_model
from quantrec.models.batch import batch_from_frame
from quantrec.models.lifecycle import PlanChoice, Trained, TrainingPlan
from quantrec.models.plan import PrecisionPlan
from quantrec.models.search import SearchResult
from quantrec.models.search_accept import DeltaInterval
from quantrec.models.stream import read_holdout
from quantrec.models.train import TrainReport
from quantrec.tasks.settings import STAGE_RESULT_TTL, quantrec_home

FORMAT_VERSION = 1
logger = logging.getLogger(__name__)
T = TypeVar("T")


class StageResultError(ValueError):
    """A persisted stage result that does not read back (names the file and why)."""


def stage_key(run_key: str, *asked: object) -> str:
    """``run_key/digest``: the run's identity, and what the stage was asked (its training
    plan, its flags) as 16 hex, so a result is resumed only for the same question."""
    text = "|".join(json.dumps(a, sort_keys=True, default=str) for a in asked)
    return f"{run_key}/{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def training_plan_dict(plan: TrainingPlan | None) -> dict | None:
    if plan is None:
        return None
    return {
        "mode": plan.mode,
        "days": [d.isoformat() for d in plan.days],
        "reason": plan.reason,
        "full_retrain_date": plan.full_retrain_date.isoformat(),
        "warm_from": plan.warm_from,
    }


def _training_plan(body: dict | None) -> TrainingPlan | None:
    if body is None:
        return None
    return TrainingPlan(
        mode=body["mode"],
        days=tuple(date.fromisoformat(d) for d in body["days"]),
        reason=body["reason"],
        full_retrain_date=date.fromisoformat(body["full_retrain_date"]),
        warm_from=body["warm_from"],
    )


class StageStore:
    """The stage results of one home (``$QUANTREC_HOME/stages``)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else quantrec_home().stages

    def path(self, stage: str, key: str) -> Path:
        """``stages/<run_key>/<stage>-<digest>`` for a ``stage_key``."""
        run_key, _, digest = key.partition("/")
        return self.root / run_key / f"{stage}-{digest}"

    # --- writing ---------------------------------------------------------------------------

    def _write(self, stage: str, key: str, fill) -> Path:
        """Fill a temporary folder, then rename it into place (whole or not at all)."""
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stage}-", dir=final.parent))
        try:
            fill(tmp)
            (tmp / "stage.json").write_text(
                json.dumps({"format_version": FORMAT_VERSION, "stage": stage, "key": key})
            )
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def save_trained(self, key: str, trained: Trained) -> Path:
        def fill(folder: Path) -> None:
            save_model(trained.model, folder / "model", schema=trained.schema, precision="fp32")
            trained.sample.to_parquet(folder / "sample.parquet")
            body = {
                "report": asdict(trained.report),
                "rows": trained.rows,
                "seconds": trained.seconds,
                "computed_by": trained.computed_by,
                "plan": training_plan_dict(trained.plan),
            }
            (folder / "trained.json").write_text(json.dumps(body, indent=2))

        return self._write("train", key, fill)

    def save_choice(self, key: str, choice: PlanChoice) -> Path:
        body = {
            "plan": json.loads(choice.plan.to_json()),
            "source": choice.source,
            "reason": choice.reason,
            "result": None if choice.result is None else choice.result.to_dict(),
            "seconds": choice.seconds,
            "computed_by": choice.computed_by,
            "predicted": None if choice.predicted is None else asdict(choice.predicted),
        }

        def fill(folder: Path) -> None:
            (folder / "choice.json").write_text(json.dumps(body, indent=2))

        return self._write("search", key, fill)

    # --- reading ---------------------------------------------------------------------------

    def _found(self, stage: str, key: str) -> Path | None:
        """The result's folder when one is there and fresh enough to resume."""
        folder = self.path(stage, key)
        if not folder.is_dir():
            return None
        if time.time() - folder.stat().st_mtime > STAGE_RESULT_TTL.total_seconds():
            logger.info("stage result %s is older than %s; not resumed", folder, STAGE_RESULT_TTL)
            return None
        marker = folder / "stage.json"
        try:
            version = json.loads(marker.read_text()).get("format_version")
        except (OSError, ValueError) as err:
            raise StageResultError(f"{marker}: unreadable ({err})") from err
        if version != FORMAT_VERSION:
            raise StageResultError(
                f"{marker}: format_version {version}, this reader handles {FORMAT_VERSION}"
            )
        return folder

    def load_trained(
        self, key: str, *, holdout_path: Path, holdout_fraction: float, seed: int
    ) -> Trained | None:
        """The persisted training of ``key``, or None when there is none to resume.

        Raises:
            StageResultError: a result is there but does not read back (file and error).
        """
        folder = self._found("train", key)
        if folder is None:
            return None
        try:
            loaded = load_model(folder / "model")
            body = json.loads((folder / "trained.json").read_text())
            report = body["report"]
            for name in ("epoch_losses", "validation_losses"):
                report[name] = tuple(report[name])
            sample = pd.read_parquet(folder / "sample.parquet")
            _, held = read_holdout(holdout_path, fraction=holdout_fraction, seed=seed)
            return Trained(
                model=loaded.model,
                report=TrainReport(**report),
                holdout=batch_from_frame(held, loaded.schema),
                sample=sample,
                schema=loaded.schema,
                plan=_training_plan(body["plan"]),
                rows=int(body["rows"]),
                seconds=float(body["seconds"]),
                computed_by=str(body["computed_by"]),
            )
        except Exception as err:  # any defect of the folder: never trust part of it
            raise StageResultError(f"{folder}: {type(err).__name__}: {err}") from err

    def load_choice(self, key: str) -> PlanChoice | None:
        """The persisted plan choice of ``key``, or None (``StageResultError`` as above)."""
        folder = self._found("search", key)
        if folder is None:
            return None
        try:
            body = json.loads((folder / "choice.json").read_text())
            predicted = body["predicted"]
            return PlanChoice(
                plan=PrecisionPlan.from_json(json.dumps(body["plan"])),
                source=body["source"],
                reason=body["reason"],
                result=None if body["result"] is None else SearchResult.from_dict(body["result"]),
                seconds=float(body["seconds"]),
                computed_by=str(body["computed_by"]),
                predicted=None if predicted is None else DeltaInterval(**predicted),
            )
        except Exception as err:
            raise StageResultError(
                f"{folder / 'choice.json'}: {type(err).__name__}: {err}"
            ) from err

    def discard(self, run_key: str) -> None:
        """Remove every stage result of ``run_key``, once its run has finished."""
        shutil.rmtree(self.root / run_key, ignore_errors=True)


def resume_stage(what: str, load: Callable[[], T | None]) -> T | None:
    """``load()``, or None with a warning in the run's log when the persisted result does
    not read back (the stage is then computed again; nothing of the folder is used)."""
    try:
        return load()
    except StageResultError as err:
        get_run_logger().warning(
            "the persisted %s is not resumed, it is computed again: %s", what, err
        )
        return None


@task(name="discard-stage-results", cache_policy=NO_CACHE)
def discard_stage_results(run_key: str) -> None:
    """A finished run's stage results are no longer needed: its record answers a rerun."""
    StageStore().discard(run_key)
