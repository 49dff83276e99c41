"""The per-unit sensitivity measurements, made one unit at a time from a saved job folder
(as a task runner's workers make them), give the search the same plan as in-process."""

from __future__ import annotations

import json

import pytest

from quantrec.models.search import search_precision_plan
from quantrec.models.search_evaluate import Evaluator
from quantrec.models.sensitivity import load_job, save_job, unit_sensitivity
from quantrec.models.train import train_dlrm

LINEARS = ("fp16", "int8", "int8_static_minmax")
TABLES = ("int8", "int4", "int2")


@pytest.fixture
def trained(make_model, make_batch):
    model = make_model(seed=0, embedding_dim=8)
    train_dlrm(
        model,
        make_batch(rows=2048),
        epochs=2,
        batch_size=64,
        learning_rate=0.02,
        seed=0,
        sparse_optimizer="sparse_adam",
        fused=False,
    )
    return model


def without_timings(result) -> str:
    """The search's record as JSON (its latencies are the test's constant)."""
    return json.dumps(result.to_dict(), sort_keys=True)


def test_units_measured_from_a_saved_job_give_the_same_search(
    trained, make_batch, tmp_path, monkeypatch
):
    # Finalists within 1 % of bytes are told apart by wall-clock latency, which no two
    # searches share; with one latency for all, the rest must match exactly.
    monkeypatch.setattr(Evaluator, "latency_ms", lambda *_args, **_kw: 1.0)
    held_out, calibration = make_batch(rows=2048, seed=1), make_batch(rows=512, seed=2)
    confirmation = make_batch(rows=2048, seed=3)
    asked = []

    def measure(job):
        folder = save_job(job, tmp_path / "job")
        asked.extend(job.options)
        # Each unit from its own load of the folder: nothing shared but the files.
        return {unit: unit_sensitivity(load_job(folder), unit) for unit in reversed(job.options)}

    kwargs = dict(
        calibration=calibration,
        confirmation=confirmation,
        linear_candidates=LINEARS,
        table_candidates=TABLES,
    )
    inline = search_precision_plan(trained, held_out, **kwargs)
    fanned = search_precision_plan(trained, held_out, measure=measure, **kwargs)

    assert asked and set(asked) == {row["unit"] for row in inline.sensitivity}
    assert fanned.sensitivity == inline.sensitivity  # float for float
    assert without_timings(fanned) == without_timings(inline)
    assert fanned.chosen.precisions() == inline.chosen.precisions()


def test_a_unit_outside_the_job_is_named(trained, make_batch, tmp_path):
    def measure(job):
        with pytest.raises(KeyError, match="no-such-unit"):
            unit_sensitivity(job, "no-such-unit")
        return {unit: unit_sensitivity(job, unit) for unit in job.options}

    search_precision_plan(
        trained,
        make_batch(rows=512, seed=1),
        measure=measure,
        table_candidates=TABLES,
        linear_candidates=("fp16",),
    )
