"""Baselines beside the DLRM: the window's click rate and a logistic regression on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.baselines import (
    BaselineError,
    BaselineSettings,
    fit_baselines,
    ground_truth_ne,
    score_baselines,
)
from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.metrics import log_loss, normalized_entropy
from quantrec.models.names import Baseline
from quantrec.models.stream import InMemorySource, WindowStream

FAST = BaselineSettings(grid=(0.03, 0.1, 0.3, 1.0, 3.0), solvers=("newton-cg",))


@pytest.fixture
def window(make_batch):
    """(training rows, held-out rows, the run date's rows) of the learnable toy feed."""
    return (
        make_batch(rows=3_000, seed=0),
        make_batch(rows=800, seed=1),
        make_batch(rows=2_000, seed=2),
    )


def test_the_constant_baseline_has_ne_one_on_its_own_training_rows(window):
    training, held_out, _ = window
    baselines = fit_baselines(training, held_out, settings=FAST)
    assert baselines.base_rate == pytest.approx(training.labels.double().mean().item())
    metrics = score_baselines(baselines, training)
    assert metrics[Baseline.CONSTANT].ne == pytest.approx(1.0, abs=1e-9)
    assert baselines.rows == baselines.fitted_rows == len(training)


def test_the_logistic_baseline_beats_the_constant_on_a_learnable_day(window):
    training, held_out, day = window
    metrics = score_baselines(fit_baselines(training, held_out, settings=FAST), day)
    assert set(metrics) == {"baseline.constant", "baseline.logistic"}
    assert metrics[Baseline.LOGISTIC].ne < 0.9 < metrics[Baseline.CONSTANT].ne
    assert metrics[Baseline.LOGISTIC].auc > 0.7


def test_c_and_the_solver_are_chosen_from_the_grid_by_held_out_log_loss(window):
    training, held_out, _ = window
    settings = BaselineSettings(grid=(0.001, 0.1, 10.0), solvers=("newton-cg", "lbfgs"))
    logistic = fit_baselines(training, held_out, settings=settings).logistic
    assert logistic.C in settings.grid and logistic.solver in settings.solvers
    best = min(logistic.grid, key=lambda p: p.held_out_log_loss)
    assert (best.solver, best.C) == (logistic.solver, logistic.C)
    assert {p.C for p in logistic.grid} <= set(settings.grid)
    assert {p.solver for p in logistic.grid} == {"newton-cg", "lbfgs"}
    probs = logistic.predict(held_out)
    labels = held_out.labels.double().numpy()
    assert best.held_out_log_loss == pytest.approx(log_loss(labels, probs))
    assert best.held_out_ne == pytest.approx(normalized_entropy(labels, probs))
    assert "held-out log loss" in logistic.reason
    refined = [p for p in logistic.grid if p.refined]
    assert [(p.solver, p.C) for p in refined] == [(logistic.solver, logistic.C)]


def test_the_grid_walk_stops_where_held_out_loss_stops_improving(window):
    training, held_out, _ = window
    logistic = fit_baselines(training, held_out, settings=FAST).logistic
    loss = {p.C: p.held_out_log_loss for p in logistic.grid}
    assert len(loss) < len(FAST.grid)  # the walk did not fit every C
    assert min(loss, key=loss.get) == logistic.C
    at = FAST.grid.index(logistic.C)
    neighbours = [FAST.grid[i] for i in (at - 1, at + 1) if 0 <= i < len(FAST.grid)]
    assert any(loss.get(c, -1.0) > loss[logistic.C] for c in neighbours)  # it stopped there


def test_a_stream_gives_the_same_baselines_as_the_batch(tmp_path, tiny_schema, make_frame, window):
    _, held_out, day = window
    frames = [make_frame(rows=1_500, seed=s) for s in (10, 11)]
    paths = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"day={i}" / "part-0.parquet"
        path.parent.mkdir()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=500)
        paths.append(path)
    stream = WindowStream(paths, tiny_schema, chunk_rows=256, prefetch=False)
    batch = batch_from_frame(pd.concat(frames, ignore_index=True), tiny_schema)
    streamed = fit_baselines(stream, held_out, settings=FAST)
    in_memory = fit_baselines(batch, held_out, settings=FAST)
    shuffled = fit_baselines(InMemorySource(batch), held_out, settings=FAST)
    assert streamed.rows == in_memory.rows == shuffled.rows == 3_000
    assert streamed.base_rate == pytest.approx(in_memory.base_rate)
    assert streamed.logistic.C == in_memory.logistic.C == shuffled.logistic.C
    for other in (streamed, shuffled):  # row order changes only the solver's rounding
        np.testing.assert_allclose(
            other.logistic.predict(day), in_memory.logistic.predict(day), atol=1e-4
        )


def test_fits_are_deterministic_and_the_row_cap_is_a_seeded_subsample(window):
    training, held_out, day = window
    capped = BaselineSettings(grid=(0.1,), solvers=("newton-cg",), max_rows=1_000, seed=3)
    first, again = (fit_baselines(training, held_out, settings=capped) for _ in range(2))
    np.testing.assert_array_equal(first.logistic.predict(day), again.logistic.predict(day))
    assert first.fitted_rows == 1_000 and first.rows == 3_000
    assert first.base_rate == pytest.approx(training.labels.double().mean().item())  # all rows
    other = fit_baselines(training, held_out, settings=capped.model_copy(update={"seed": 4}))
    assert not np.allclose(other.logistic.predict(day), first.logistic.predict(day))


def test_bags_of_ids_unseen_ids_and_folded_vocabularies_are_encoded():
    schema = FeatureSchema(
        dense=("count",),
        categorical=(
            CategoricalFeature(name="user", hash_size=1_000),
            CategoricalFeature(name="genres", hash_size=40, multi_valued=True),
        ),
        dense_transform="none",
    )
    rng = np.random.default_rng(0)
    rows = 4_000
    genres = [rng.choice(12, size=rng.integers(0, 4), replace=False).tolist() for _ in range(rows)]
    liked = np.array([3 in g for g in genres])
    count = rng.pareto(1.5, rows) * 10  # non-negative, heavy-tailed: log1p before scaling
    logit = -2.0 + 2.0 * liked + 0.5 * np.log1p(count)
    frame = pd.DataFrame(
        {
            "label": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int),
            "count": count,
            "user": rng.integers(0, 900, rows),
            "genres": genres,
        }
    )
    batch = batch_from_frame(frame, schema)
    training, held_out, day = (
        batch.slice(0, 2_500),
        batch.slice(2_500, 3_000),
        batch.slice(3_000, rows),
    )
    folded = FAST.model_copy(update={"max_buckets": 64})
    baselines = fit_baselines(training, held_out, settings=folded)
    encoder = baselines.logistic.encoder
    assert encoder.log1p.tolist() == [True]
    assert encoder.columns.size <= 64 + 12  # users folded into 64 buckets, 12 genres
    metrics = score_baselines(baselines, day)
    assert metrics[Baseline.LOGISTIC].ne < 0.9
    new_ids = Batch(
        dense=day.dense,
        labels=day.labels,
        sparse=type(day.sparse)(
            keys=day.sparse.keys,
            offsets=day.sparse.offsets,
            values=tuple(v + 10_000 for v in day.sparse.values),
        ),
    )
    probs = baselines.logistic.predict(new_ids)  # nothing seen: the dense terms and the bias
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()


def test_one_class_training_rows_give_only_the_constant(window):
    training, held_out, day = window
    no_click = Batch(
        dense=training.dense, sparse=training.sparse, labels=torch.zeros_like(training.labels)
    )
    baselines = fit_baselines(no_click, held_out, settings=FAST)
    assert baselines.logistic is None and "one class" in baselines.note
    assert set(baselines.predict(day)) == {"baseline.constant"}
    assert (baselines.predict(day)["baseline.constant"] > 0).all()  # clipped, not 0


def test_held_out_rows_without_clicks_or_without_rows_still_choose(window):
    training, held_out, _ = window
    no_click = Batch(
        dense=held_out.dense, sparse=held_out.sparse, labels=torch.zeros_like(held_out.labels)
    )
    logistic = fit_baselines(training, no_click, settings=FAST).logistic
    assert logistic.C in FAST.grid and "NE undefined" in logistic.reason
    assert all(p.held_out_ne is None for p in logistic.grid)
    empty = fit_baselines(training, held_out.slice(0, 0), settings=FAST).logistic
    assert empty.C == sorted(FAST.grid)[len(FAST.grid) // 2] and len(empty.grid) == 1
    assert "no held-out rows" in empty.reason
    with pytest.raises(BaselineError, match="0 training rows"):
        fit_baselines(training.slice(0, 0), held_out, settings=FAST)


def test_the_ground_truth_ne_is_the_ne_of_the_true_probabilities():
    rng = np.random.default_rng(0)
    truth = 1 / (1 + np.exp(-rng.normal(-2, 1, 50_000)))
    labels = (rng.random(truth.size) < truth).astype(float)
    rate = labels.mean()
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert ground_truth_ne(labels, truth) == pytest.approx(log_loss(labels, truth) / entropy)
    assert ground_truth_ne(labels, truth) < ground_truth_ne(labels, np.full(truth.size, rate))


def test_settings_are_validated_and_summaries_are_json(window):
    with pytest.raises(ValidationError, match="grid"):
        BaselineSettings(grid=())
    with pytest.raises(ValidationError, match="positive"):
        BaselineSettings(grid=(0.1, -1.0))
    with pytest.raises(ValidationError, match="solvers"):
        BaselineSettings(solvers=("adam",))
    import json

    training, held_out, _ = window
    record = json.loads(json.dumps(fit_baselines(training, held_out, settings=FAST).to_dict()))
    assert record["logistic"]["C"] in FAST.grid and record["logistic"]["grid"]
