"""Drift statistics against hand-computed values, scipy, and the synthetic scenarios."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from data_checks.drift import (
    EPSILON,
    DriftError,
    category_psi,
    js_distance,
    label_rate_shift,
    measure_drift,
    oov_rate,
    psi,
    quantile_edges,
)
from data_checks.schema import FeatureSchema
from feeds.synthetic import SyntheticFeed

REFERENCE = np.arange(100.0)  # quartile edges 24.75, 49.5, 74.25: 25 values per bin
LOWER_HALF = np.arange(50.0)  # shares 0.5, 0.5, 0, 0 on those bins


def test_psi_matches_the_hand_computed_value() -> None:
    p, q = [0.25] * 4, [0.5, 0.5, EPSILON, EPSILON]
    by_hand = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert psi(REFERENCE, LOWER_HALF, bins=4) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(4.2570, abs=1e-4)


def test_psi_is_zero_on_the_same_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.lognormal(1.0, 1.0, 50_000)
    assert psi(reference, reference) == 0.0
    same = psi(reference, rng.lognormal(1.0, 1.0, 50_000))
    shifted = psi(reference, rng.lognormal(1.5, 1.0, 50_000))
    assert same < 0.01 < 0.1 < shifted


def test_psi_merges_tied_quantile_edges() -> None:
    reference = np.r_[np.zeros(600), np.arange(1.0, 401.0)]  # 60 % zeros
    edges = quantile_edges(reference, bins=10)
    assert edges[0] == 0.0 and len(edges) == len(np.unique(edges)) < 9
    assert psi(reference, reference) == 0.0
    fewer_zeros = np.r_[np.zeros(300), np.arange(1.0, 701.0)]
    assert psi(reference, fewer_zeros) > 0.25


def test_js_distance_matches_scipy_and_the_hand_value() -> None:
    p, q = np.array([0.25] * 4), np.array([0.5, 0.5, 0.0, 0.0])
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    by_hand = math.sqrt((kl(p, m) + kl(q, m)) / 2)
    assert by_hand == pytest.approx(0.5579, abs=1e-4)
    assert js_distance(REFERENCE, LOWER_HALF, bins=4) == pytest.approx(by_hand, rel=1e-12)
    assert js_distance(REFERENCE, LOWER_HALF, bins=4) == pytest.approx(
        jensenshannon(p, q, base=2), rel=1e-12
    )
    assert js_distance(REFERENCE, REFERENCE) == 0.0


def test_oov_rate_counts_rows_not_ids() -> None:
    assert oov_rate(np.array([1, 2, 3]), np.array([1, 4, 4, 5])) == 0.75
    assert oov_rate(np.array(["a", "b"]), np.array(["a", "a", "b"])) == 0.0


def test_category_psi_over_the_head_and_an_other_bucket() -> None:
    reference = np.array([1] * 6 + [2] * 3 + [3] * 1)  # top 2: shares .6 .3, other .1
    current = np.array([1] * 3 + [2] * 3 + [9] * 4)  # shares .3 .3, other (new id) .4
    p, q = [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]
    by_hand = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert category_psi(reference, current, top=2) == pytest.approx(by_hand, rel=1e-12)


def test_label_rate_shift_is_relative() -> None:
    reference = np.r_[np.ones(2), np.zeros(98)]
    current = np.r_[np.ones(3), np.zeros(97)]
    assert label_rate_shift(reference, current) == pytest.approx(0.5)
    with pytest.raises(DriftError, match="no clicks"):
        label_rate_shift(np.zeros(10), current)


@pytest.mark.parametrize(
    "call",
    [
        lambda: psi(np.array([]), np.ones(3)),
        lambda: psi(np.array([np.nan]), np.ones(3)),
        lambda: js_distance(np.ones(3), np.ones(3), bins=1),
        lambda: oov_rate(np.ones(3), np.array([])),
        lambda: label_rate_shift(np.array([]), np.ones(3)),
    ],
)
def test_unmeasurable_inputs_raise_drift_errors(call) -> None:  # noqa: ANN001
    with pytest.raises(DriftError):
        call()


def _window_and_day(scenario: str, rows: int = 8_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    start = date(2024, 3, 1)
    shift = start + timedelta(days=3) if scenario == "sudden" else None
    feed = SyntheticFeed(seed=4, rows_per_day=rows, scenario=scenario, shift_date=shift)
    window = pd.concat([feed.day(start + timedelta(days=k)) for k in range(3)])
    return window, feed.day(start + timedelta(days=3))


def test_measure_drift_is_quiet_when_stable_and_loud_after_a_sudden_shift(
    schema: FeatureSchema,
) -> None:
    stable = measure_drift(*_window_and_day("stable"), schema)
    sudden = measure_drift(*_window_and_day("sudden"), schema)
    assert stable.max_dense_psi < 0.02 and sudden.max_dense_psi > 0.25
    # Small windows miss some of the long tail, so a stable day has a few % OOV rows too.
    assert stable.mean_oov_rate < 0.08 and sudden.mean_oov_rate > 3 * stable.mean_oov_rate
    assert sudden.value("cat_2", "psi") > 10 * stable.value("cat_2", "psi")
    assert abs(stable.label_rate_shift) < 0.15


def test_drift_report_table_and_metrics(schema: FeatureSchema) -> None:
    report = measure_drift(*_window_and_day("stable", rows=2_000), schema)
    assert list(report.table.columns) == ["feature", "kind", "statistic", "value"]
    assert len(report.table) == 2 * len(schema.dense) + 2 * len(schema.categorical) + 1
    metrics = report.to_metrics()
    assert metrics["drift.psi.dense_3"] == report.value("dense_3", "psi")
    assert {"drift.oov.cat_7", "drift.js.dense_0", "drift.max_dense_psi"} <= set(metrics)
    assert {"drift.mean_oov_rate", "drift.max_oov_rate", "drift.label_rate_shift"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_measure_drift_names_missing_columns(schema: FeatureSchema) -> None:
    window, day = _window_and_day("stable", rows=500)
    with pytest.raises(DriftError, match=r"current frame lacks schema columns \['cat_3'\]"):
        measure_drift(window, day.drop(columns=["cat_3"]), schema)
