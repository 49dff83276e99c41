"""Drift statistics against hand-computed values and scipy; the level rule, one crossing at a time.

The hand example (``_reference``/``_day``, 100 rows, bins=4, top_k=2):
- dense ``x``: reference 0..99 (quartile edges 24.75, 49.5, 74.25: shares .25 each), day
  0..49 twice (shares .5, .5, 0, 0);
- ``c``: reference ids 1 x60, 2 x30, 3 x10 (top 2: .6, .3, other .1); day 1 x30, 2 x30,
  9 x40 (.3, .3, other .4; id 9 is new: OOV .4);
- bag ``tags``: reference 50 x [a, b] + 50 x [a] (elements a 100, b 50: 2/3, 1/3, other 0);
  day 50 x [a, z] + 50 x [] (a 50, z 50: .5, 0, other .5; OOV .5 of elements).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from quantrec.data_checks.drift import (
    EPSILON,
    DriftError,
    DriftProfile,
    DriftThresholds,
    js_distance,
    measure,
    metric_name,
    psi,
    psi_from_shares,
)
from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema

SCHEMA = FeatureSchema(
    dense=("x",),
    categorical=(
        CategoricalFeature(name="c", hash_size=10),
        CategoricalFeature(name="tags", hash_size=10, multi_valued=True),
    ),
)
REFERENCE = np.arange(100.0)
LOWER_HALF = np.arange(50.0)
QUARTERS, HALVES = [0.25] * 4, [0.5, 0.5, 0.0, 0.0]


def _psi_by_hand(p: list[float], q: list[float]) -> float:
    p, q = [max(v, EPSILON) for v in p], [max(v, EPSILON) for v in q]
    return sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))


def _js_by_hand(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    return math.sqrt((kl(p, m) + kl(q, m)) / 2)


def _reference(clicks: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": np.r_[np.ones(clicks), np.zeros(100 - clicks)].astype(np.int8),
            "x": REFERENCE,
            "c": np.array([1] * 60 + [2] * 30 + [3] * 10, dtype=np.int64),
            "tags": [["a", "b"]] * 50 + [["a"]] * 50,
        }
    )


def _day(clicks: int = 4) -> pd.DataFrame:
    return _reference(clicks).assign(
        x=np.r_[LOWER_HALF, LOWER_HALF],
        c=np.array([1] * 30 + [2] * 30 + [9] * 40, dtype=np.int64),
        tags=[["a", "z"]] * 50 + [[]] * 50,
    )


def _profile(frame: pd.DataFrame | None = None, **kwargs) -> DriftProfile:  # noqa: ANN003
    return DriftProfile.build(
        _reference() if frame is None else frame, SCHEMA, bins=4, top_k=2, **kwargs
    )


def test_dense_psi_and_js_match_the_hand_values_and_scipy() -> None:
    report = measure(_profile(), _day(), SCHEMA)
    # 2 x (.5-.25) ln(.5/.25) + 2 x (1e-4-.25) ln(1e-4/.25)
    by_hand = _psi_by_hand(QUARTERS, HALVES)
    assert by_hand == pytest.approx(4.2570, abs=1e-4)
    assert report.value("x", "psi") == pytest.approx(by_hand, rel=1e-12)
    assert psi(REFERENCE, LOWER_HALF, bins=4) == pytest.approx(by_hand, rel=1e-12)
    assert _js_by_hand(QUARTERS, HALVES) == pytest.approx(0.5579, abs=1e-4)
    assert report.value("x", "js") == pytest.approx(_js_by_hand(QUARTERS, HALVES), rel=1e-12)
    assert js_distance(REFERENCE, LOWER_HALF, bins=4) == pytest.approx(
        jensenshannon(QUARTERS, HALVES, base=2), rel=1e-12
    )


def test_psi_is_zero_on_identical_samples_and_is_symmetrised_kl() -> None:
    rng = np.random.default_rng(0)
    reference = rng.lognormal(1.0, 1.0, 50_000)
    assert psi(reference, reference) == 0.0 and js_distance(reference, reference) == 0.0
    assert psi(reference, rng.lognormal(1.0, 1.0, 50_000)) < 0.01
    assert psi(reference, rng.lognormal(1.5, 1.0, 50_000)) > 0.1
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    # Without empty bins PSI is KL(q||p) + KL(p||q), which scipy.stats.entropy computes.
    assert psi_from_shares(p, q) == pytest.approx(entropy(q, p) + entropy(p, q), rel=1e-12)
    # Every statistic, JS included (scipy's gives NaN here), is exactly 0 on the window itself.
    assert (measure(_profile(), _reference(), SCHEMA).table.value.to_numpy() == 0.0).all()


def test_categorical_js_linf_oov_and_psi_over_the_top_ids_and_other() -> None:
    report = measure(_profile(), _day(), SCHEMA)
    p, q = [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]
    assert report.value("c", "linf") == pytest.approx(0.3)  # max(|.3-.6|, 0, |.4-.1|)
    assert report.value("c", "js") == pytest.approx(_js_by_hand(p, q), rel=1e-12)
    assert report.value("c", "js") == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    assert report.value("c", "psi") == pytest.approx(_psi_by_hand(p, q), rel=1e-12)
    assert report.value("c", "oov") == pytest.approx(0.4)  # 40 of 100 rows hold id 9


def test_bags_count_elements_and_string_ids_behave_like_integers() -> None:
    report = measure(_profile(), _day(), SCHEMA)
    # 100 day elements (50 x a, 50 x z; empty bags add none): half unseen.
    assert report.value("tags", "oov") == pytest.approx(0.5)
    assert report.value("tags", "linf") == pytest.approx(0.5)  # other: 0 -> .5
    p, q = [2 / 3, 1 / 3, 0.0], [0.5, 0.0, 0.5]
    assert report.value("tags", "js") == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    as_text = lambda f: f.assign(c=f.c.map(lambda i: f"id-{i}"))  # noqa: E731
    textual = measure(_profile(as_text(_reference())), as_text(_day()), SCHEMA)
    pd.testing.assert_frame_equal(textual.table, report.table)
    int_bags = lambda f: f.assign(tags=f.tags.map(lambda b: [ord(t) for t in b]))  # noqa: E731
    numeric = measure(_profile(int_bags(_reference())), int_bags(_day()), SCHEMA)
    pd.testing.assert_frame_equal(numeric.table, report.table)


def test_label_rate_shift_is_relative_and_absolute() -> None:
    report = measure(_profile(), _day(clicks=6), SCHEMA)  # 4 % -> 6 %
    assert report.label_rate_shift == pytest.approx(0.5)  # .06 / .04 - 1
    assert report.label_rate_abs_shift == pytest.approx(0.02)
    assert report.value("label", "rate_shift") == pytest.approx(0.5)
    with pytest.raises(DriftError, match="no clicks in 'label'"):
        _profile(_reference(clicks=0))


def test_prediction_psi_on_the_reference_score_bins() -> None:
    profile = _profile(scores=REFERENCE / 100)
    report = measure(profile, _reference(), SCHEMA, scores=np.r_[LOWER_HALF, LOWER_HALF] / 100)
    assert report.prediction_psi == pytest.approx(_psi_by_hand(QUARTERS, HALVES), rel=1e-12)
    assert report.to_metrics()["drift.prediction_psi"] == report.prediction_psi
    # Only when both sides have scores: no metric rather than a made-up zero.
    assert measure(_profile(), _reference(), SCHEMA, scores=REFERENCE).prediction_psi is None
    assert "drift.prediction_psi" not in measure(profile, _reference(), SCHEMA).to_metrics()


QUIET = dict(share_warn=0.5, share_severe=0.9)  # one drifted feature of three (1/3) stays quiet


@pytest.mark.parametrize(
    ("day", "scores", "thresholds", "level", "reason"),
    [
        # x alone drifts (PSI 4.26 >= .2): share 1/3 >= share_severe .3.
        (
            dict(x=np.r_[LOWER_HALF, LOWER_HALF]),
            None,
            {},
            "severe",
            ("dataset_drift_share", 1 / 3, 0.3),
        ),
        (
            dict(x=np.r_[LOWER_HALF, LOWER_HALF]),
            None,
            dict(share_warn=0.3, share_severe=0.5),
            "warn",
            ("dataset_drift_share", 1 / 3, 0.3),
        ),
        # One feature past its severe value warns by itself.
        (dict(x=np.r_[LOWER_HALF, LOWER_HALF]), None, QUIET, "warn", ("psi", 4.257, 1.0)),
        (
            dict(label=np.r_[np.ones(5), np.zeros(95)]),
            None,
            {},
            "warn",
            ("abs_label_rate_shift", 0.25, 0.25),
        ),
        (
            dict(label=np.r_[np.ones(2), np.zeros(98)]),
            None,
            {},
            "severe",
            ("abs_label_rate_shift", 0.5, 0.5),
        ),
        (
            {},
            np.r_[REFERENCE[:88], REFERENCE[:12]] / 100,
            {},
            "warn",
            ("prediction_psi", 0.1255, 0.1),
        ),
        ({}, np.r_[LOWER_HALF, LOWER_HALF] / 100, {}, "severe", ("prediction_psi", 4.257, 0.25)),
    ],
)
def test_each_threshold_crossing_sets_the_documented_level_and_reason(
    day: dict, scores: np.ndarray | None, thresholds: dict, level: str, reason: tuple
) -> None:
    report = measure(
        _profile(scores=REFERENCE / 100),
        _reference().assign(**day),
        SCHEMA,
        scores=scores,
        thresholds=DriftThresholds(**thresholds),
    )
    assert report.level == level, report.summary()
    statistic, value, threshold = reason
    first = report.reasons[0]
    assert (first.level, first.statistic) == (level, statistic), report.summary()
    assert first.value == pytest.approx(value, abs=1e-3) and first.threshold == threshold
    assert report.to_metrics()["drift.level"] == ["ok", "warn", "severe"].index(level)


def test_the_prediction_psi_of_a_moderate_shift_by_hand() -> None:
    scores = np.r_[REFERENCE[:88], REFERENCE[:12]] / 100  # quarters hold 37, 25, 25, 13 of 100
    report = measure(_profile(scores=REFERENCE / 100), _reference(), SCHEMA, scores=scores)
    by_hand = _psi_by_hand(QUARTERS, [0.37, 0.25, 0.25, 0.13])
    assert by_hand == pytest.approx(0.12 * math.log(1.48) - 0.12 * math.log(0.52))  # 0.1255
    assert report.prediction_psi == pytest.approx(by_hand, rel=1e-12)


def test_a_quiet_day_is_ok_with_no_reasons_and_the_share_counts_features() -> None:
    report = measure(_profile(), _reference(), SCHEMA)
    assert (report.level, report.reasons, report.dataset_drift_share) == ("ok", (), 0.0)
    drifted = measure(_profile(), _day(), SCHEMA)  # x, c and tags all past their warn values
    assert drifted.dataset_drift_share == 1.0 and set(drifted.drifted_features) == {
        "x",
        "c",
        "tags",
    }
    over = drifted.table.set_index(["feature", "statistic"]).over_threshold
    assert over[("c", "oov")] and not over[("c", "psi")]  # psi is information, never decides
    assert drifted.level == "severe"


def test_oov_threshold_is_the_good_turing_rate_plus_the_margin() -> None:
    singletons = _reference().assign(c=np.r_[np.ones(90), np.arange(2, 12)].astype(np.int64))
    profile = _profile(singletons)
    assert profile.categorical["c"].singleton_share == pytest.approx(0.1)  # 10 ids seen once
    report = measure(profile, singletons, SCHEMA)
    assert report.table.set_index(["feature", "statistic"]).threshold[("c", "oov")] == (
        pytest.approx(0.1 + DriftThresholds().oov_warn)
    )


def test_metrics_are_valid_mlflow_keys_and_the_report_is_json() -> None:
    odd = FeatureSchema(dense=("price (€)",), categorical=SCHEMA.categorical)
    frame = _reference().rename(columns={"x": "price (€)"})
    day = _day().rename(columns={"x": "price (€)"})
    report = measure(DriftProfile.build(frame, odd, bins=4, top_k=2), day, odd)
    metrics = report.to_metrics()
    assert all(re.fullmatch(r"[A-Za-z0-9_\-./ ]+", key) for key in metrics), sorted(metrics)
    assert {
        "drift.psi.price ___",
        "drift.js.c",
        "drift.linf.c",
        "drift.oov.tags",
        "drift.dataset_drift_share",
        "drift.label_rate_shift",
        "drift.level",
    } <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metric_name("a@b c/d:e") == "a_b c/d_e"
    assert json.loads(json.dumps(report.to_dict()))["level"] == report.level


def test_thresholds_validate_warn_below_severe() -> None:
    with pytest.raises(ValueError, match=r"psi_warn \(2.0\) must not exceed psi_severe \(1.0\)"):
        DriftThresholds(psi_warn=2.0)
    with pytest.raises(ValueError, match="share_warn"):
        DriftThresholds(share_warn=1.5)
    assert all(f.description for f in DriftThresholds.model_fields.values())


@pytest.mark.parametrize(
    ("day", "message"),
    [
        (_day().drop(columns=["c"]), r"current frame lacks schema columns \['c'\]"),
        (_day().assign(x=np.nan), "current 'x' has no finite values"),
        (_day().assign(tags=[[]] * 100), "current column 'tags' holds no ids"),
        (_day().iloc[:0], "no rows"),
    ],
)
def test_unmeasurable_days_raise_errors_naming_the_column(day: pd.DataFrame, message: str) -> None:
    with pytest.raises(DriftError, match=message):
        measure(_profile(), day, SCHEMA)
