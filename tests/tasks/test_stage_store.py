"""Resumable stage results: read back whole, keyed by what the stage was asked, never
unpickled (a tampered folder is refused without running its code)."""

from __future__ import annotations

import json
import os
import pickle
import time
from datetime import date

import numpy as np
import pytest
import torch

from quantrec.models import lifecycle
from quantrec.models.evaluation import predict_proba
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.stage_store import (
    StageResultError,
    StageStore,
    stage_key,
    training_plan_dict,
)

RUN_DATE = date(2026, 3, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small fp32 training on two synthetic days, with its training plan."""
    root = tmp_path_factory.mktemp("stage-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(root))
        config = QuantrecConfig().with_overrides(
            feed={"rows_per_day": 4000, "seed": 3}, training={"window_days": 2}
        )
        lake = quantrec_home().day_lake()
        partitions = lifecycle.admit_days(lake, config.feed.build(RUN_DATE), RUN_DATE, 2)
        paths = [lake.path(d) for d in partitions.window]
        with torch.random.fork_rng(devices=[]):
            result = lifecycle.train_fp32(
                paths,
                partitions.schema,
                model=config.model,
                training=config.training,
                holdout_fraction=config.search.holdout_fraction,
            )
    result.plan = lifecycle.TrainingPlan(
        mode="full",
        days=tuple(partitions.window),
        reason="no champion parent to continue",
        full_retrain_date=RUN_DATE,
    )
    result.computed_by = "run-1"
    return result, paths, config


def _load(store, key, paths, config):
    return store.load_trained(
        key,
        holdout_path=paths[-1],
        holdout_fraction=config.search.holdout_fraction,
        seed=config.training.seed,
    )


def test_a_training_reads_back_whole(trained, tmp_path):
    result, paths, config = trained
    store = StageStore(tmp_path / "stages")
    key = stage_key("run-key", training_plan_dict(result.plan))
    store.save_trained(key, result)

    back = _load(store, key, paths, config)

    assert back is not None and back.computed_by == "run-1" and back.plan == result.plan
    assert back.report == result.report and back.rows == result.rows
    assert torch.equal(back.holdout.labels, result.holdout.labels)
    assert back.sample.equals(result.sample)
    expected = predict_proba(result.model, result.holdout, batch_size=512)
    assert np.array_equal(predict_proba(back.model, back.holdout, batch_size=512), expected)
    # The optimizers' state travels with the model, for the continued run of tomorrow.
    assert result.model.optimizer_state is not None
    assert back.model.optimizer_state.keys() == result.model.optimizer_state.keys()


def test_a_result_is_resumed_only_for_the_same_question(trained, tmp_path):
    result, paths, config = trained
    store = StageStore(tmp_path / "stages")
    store.save_trained(stage_key("run-key", training_plan_dict(result.plan)), result)
    other_parent = {**training_plan_dict(result.plan), "warm_from": "7"}

    assert _load(store, stage_key("run-key", other_parent), paths, config) is None
    assert (
        _load(store, stage_key("other-run", training_plan_dict(result.plan)), paths, config) is None
    )


def test_an_old_result_is_not_resumed_and_a_finished_run_removes_its_own(trained, tmp_path):
    result, paths, config = trained
    store = StageStore(tmp_path / "stages")
    key = stage_key("run-key", training_plan_dict(result.plan))
    folder = store.save_trained(key, result)
    three_days_ago = time.time() - 3 * 86400
    os.utime(folder, (three_days_ago, three_days_ago))
    assert _load(store, key, paths, config) is None

    store.discard("run-key")
    assert not (tmp_path / "stages" / "run-key").exists()


class _Payload:
    """Unpickling this writes a file: proof that a loader ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("target", ["model/weights.pt", "model/optimizer.pt"])
def test_a_pickle_in_place_of_the_tensors_is_refused_without_running(trained, tmp_path, target):
    result, paths, config = trained
    store = StageStore(tmp_path / "stages")
    key = stage_key("run-key", training_plan_dict(result.plan))
    folder = store.save_trained(key, result)
    marker = tmp_path / "code-ran"
    with open(folder / target, "wb") as out:
        pickle.dump({"x": _Payload(marker)}, out)

    with pytest.raises(StageResultError) as refused:
        _load(store, key, paths, config)

    assert not marker.exists()
    assert str(folder) in str(refused.value)


def test_an_edited_report_is_refused_naming_the_folder(trained, tmp_path):
    result, paths, config = trained
    store = StageStore(tmp_path / "stages")
    key = stage_key("run-key", training_plan_dict(result.plan))
    folder = store.save_trained(key, result)
    (folder / "trained.json").write_text('{"report": ')

    with pytest.raises(StageResultError, match="trained.json|JSONDecodeError") as refused:
        _load(store, key, paths, config)
    assert str(folder) in str(refused.value)


def test_a_plan_choice_reads_back_with_its_search_evidence(trained, tmp_path):
    result, _, config = trained
    choice = lifecycle.search_plan(
        result,
        reason="no plan yet",
        budget_rel=0.01,
        linear_candidates=("fp16", "int8"),
        table_candidates=("int8", "int4"),
        batch_size=config.evaluation.batch_size,
        threads=1,
    )
    choice.computed_by = "run-1"
    store = StageStore(tmp_path / "stages")
    key = stage_key("run-key", training_plan_dict(result.plan), False, "ok")
    store.save_choice(key, choice)

    back = store.load_choice(key)

    assert back.plan == choice.plan and back.source == choice.source
    assert back.reason == choice.reason and back.predicted == choice.predicted
    assert back.result.to_dict() == choice.result.to_dict()
    assert json.loads(back.plan.to_json()) == json.loads(choice.plan.to_json())
    assert (
        store.load_choice(stage_key("run-key", training_plan_dict(result.plan), True, "ok")) is None
    )
