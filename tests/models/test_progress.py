"""Progress of the long stages: one line per training epoch on the progress logger, shown
where the CLI points it and nowhere else."""

from __future__ import annotations

import io
import logging

import pytest

from quantrec.models.progress import LOGGER_NAME, print_progress_to
from quantrec.models.train import train_dlrm


@pytest.fixture
def progress_lines():
    """The progress logger's messages during the test, its handlers restored after."""
    logger = logging.getLogger(LOGGER_NAME)
    handlers, propagate = list(logger.handlers), logger.propagate
    stream = io.StringIO()
    print_progress_to(stream)
    yield lambda: stream.getvalue().splitlines()
    logger.handlers, logger.propagate = handlers, propagate


def test_every_epoch_of_an_early_stopped_run_reports_its_losses(
    make_model, make_batch, progress_lines
):
    report = train_dlrm(
        make_model(seed=0),
        make_batch(rows=512, seed=0),
        seed=0,
        validation=make_batch(rows=256, seed=1),
        max_epochs=3,
        batch_size=64,
        learning_rate=0.02,
    )
    lines = progress_lines()
    assert len(lines) == report.epochs >= 1
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"  training: epoch {epoch}/3 at most, 512 rows, loss ")
        held_out = float(line.split("held-out loss ")[1].split()[0])
        assert held_out == pytest.approx(report.validation_losses[epoch], abs=5e-5)


def test_a_fixed_run_without_held_out_rows_reports_its_training_loss(
    make_model, make_batch, progress_lines
):
    report = train_dlrm(
        make_model(), make_batch(rows=128), seed=0, epochs=2, batch_size=64, learning_rate=0.01
    )
    lines = progress_lines()
    assert [line.split(",")[0] for line in lines] == [
        "  training: epoch 1/2",
        "  training: epoch 2/2",
    ]
    assert f"loss {report.epoch_losses[-1]:.4f}" in lines[-1] and "held-out" not in lines[-1]


def test_the_search_reports_each_unit_with_its_ne_changes_and_then_its_choice(
    make_model, make_batch, progress_lines
):
    from quantrec.models.search import search_precision_plan

    model = make_model(seed=0, embedding_dim=8)
    train_dlrm(model, make_batch(rows=1024), epochs=1, batch_size=64, seed=0)
    result = search_precision_plan(
        model,
        make_batch(rows=1024, seed=1),
        linear_candidates=("fp16", "int8"),
        table_candidates=("int8",),
    )
    lines = [line for line in progress_lines() if line.startswith("  search:")]
    units = [s["unit"] for s in result.sensitivity if s["precision"] == "fp32"]
    assert len(lines) == len(units) + 1
    for k, (unit, line) in enumerate(zip(units, lines), start=1):
        assert line.startswith(f"  search: unit {k}/{len(units)} {unit}: ")
        for s in result.sensitivity:
            if s["unit"] == unit and s["precision"] != "fp32":
                assert f"{s['precision']} {100 * s['ne_delta_rel']:+.4f} %" in line
    assert lines[-1] == (
        f"  search: {result.chosen_by} plan chosen, {len(result.evaluated)} plans scored"
    )
