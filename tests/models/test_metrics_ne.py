"""NE, log loss, AUC and calibration against scikit-learn and hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from quantrec.models.metrics import (
    MetricError,
    Metrics,
    calibration,
    compute_metrics,
    log_loss,
    normalized_entropy,
    roc_auc,
    undefined_reason,
)

LABELS = np.array([1, 0, 0, 1])
PROBS = np.array([0.8, 0.2, 0.4, 0.6])


def test_ne_matches_hand_computation() -> None:
    mean_log_loss = -(2 * math.log(0.8) + 2 * math.log(0.6)) / 4  # 0.36698...
    assert log_loss(LABELS, PROBS) == pytest.approx(mean_log_loss, rel=1e-12)
    # click rate 0.5 -> entropy ln 2
    assert normalized_entropy(LABELS, PROBS) == pytest.approx(0.5294468445267843, rel=1e-12)


def test_predicting_the_click_rate_gives_ne_one() -> None:
    labels = np.array([1, 0, 0, 0, 0])
    assert normalized_entropy(labels, np.full(5, 0.2)) == pytest.approx(1.0, rel=1e-12)


def test_log_loss_and_auc_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    probs = np.clip(rng.random(1000) * 0.5 + labels * 0.3, 0.01, 0.99)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), rel=1e-10)
    assert roc_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs), rel=1e-12)


def test_probabilities_are_clipped_at_1e7() -> None:
    labels = np.array([1, 0])
    expected = (-math.log(1e-7) - math.log(0.5)) / 2
    assert log_loss(labels, np.array([0.0, 0.5])) == pytest.approx(expected)


def test_calibration_is_mean_prediction_over_click_rate() -> None:
    assert calibration(LABELS, PROBS) == pytest.approx(0.5 / 0.5)
    assert calibration(np.array([1, 0, 0, 0]), np.full(4, 0.5)) == pytest.approx(2.0)


def test_compute_metrics_collects_everything() -> None:
    metrics = compute_metrics(LABELS, PROBS)
    assert isinstance(metrics, Metrics)
    assert metrics.rows == 4 and metrics.click_rate == 0.5
    assert metrics.auc == pytest.approx(1.0)
    assert metrics.ne == pytest.approx(0.5294468445267843)
    as_dict = json.loads(json.dumps(metrics.to_dict()))
    assert set(as_dict) == {"ne", "auc", "log_loss", "calibration", "rows", "click_rate"}


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([], [], "empty"),
        ([1, 0], [0.5], "differ in length"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "every label is 0"),
        ([1, 1], [0.1, 0.2], "every label is 1"),
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, np.nan], r"\[0, 1\]"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
    ],
)
def test_unscorable_input_raises_metric_error(labels, probs, message) -> None:
    with pytest.raises(MetricError, match=message):
        compute_metrics(np.array(labels), np.array(probs))


def test_log_loss_is_defined_for_single_class_labels() -> None:
    assert log_loss(np.array([0, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ([], "no rows"),
        ([0, 0, 0], "every label is 0 (3 rows, 0 clicks)"),
        ([1, 1], "every label is 1 (2 rows, 2 clicks)"),
        ([0, 1], None),
    ],
)
def test_undefined_reason_says_why_a_set_cannot_be_scored(labels, reason) -> None:
    found = undefined_reason(np.array(labels))
    assert found == reason if reason is None else reason in found
    if reason is not None and labels:  # the error of scoring it anyway says the same
        with pytest.raises(MetricError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            normalized_entropy(np.array(labels), np.full(len(labels), 0.5))
