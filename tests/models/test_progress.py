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
