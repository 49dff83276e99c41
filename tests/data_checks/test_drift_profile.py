"""The drift profile: what it keeps, that it survives a save/load unchanged, how it fails,
and that on the synthetic feed it is quiet on stable days and loud on a sudden shift."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrec.data_checks.drift import DriftProfile, calibrated, measure
from quantrec.data_checks.drift_profile import PROFILE_FILE, VOCAB_FILE, DriftError, id_keys
from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.feeds.synthetic import SyntheticFeed

BAGS = FeatureSchema(
    dense=("x",),
    categorical=(
        CategoricalFeature(name="c", hash_size=10),
        CategoricalFeature(name="tags", hash_size=10, multi_valued=True),
    ),
)
START = date(2024, 3, 1)
SHIFT = START + timedelta(days=4)  # window: days 0-2; day 3 is the day before the shift


def _bag_frame(seed: int, rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "label": (rng.random(rows) < 0.2).astype(np.int8),
            "x": rng.lognormal(1.0, 1.0, rows),
            "c": np.array([f"u{i}" for i in rng.zipf(1.5, rows) % 97]),
            "tags": [
                list(rng.choice(["a", "b", "c", "d", f"t{seed}"], size=k))
                for k in rng.integers(0, 4, rows)
            ],
        }
    )


def test_the_profile_keeps_top_ids_other_vocabulary_and_label_rate() -> None:
    frame = pd.DataFrame(
        {
            "label": np.r_[np.ones(5), np.zeros(5)].astype(np.int8),
            "x": np.arange(10.0),
            "c": np.array([7, 7, 7, 7, 3, 3, 3, 9, 9, 5]),  # 7: .4, 3: .3, 9: .2, 5: .1
            "tags": [["a", "b"], ["a"], [], ["a"], ["b"], ["a"], ["c"], ["a"], ["a"], ["a"]],
        }
    )
    profile = DriftProfile.build(frame, BAGS, top_k=2, source={"days": ["2024-03-01"]})
    c = profile.categorical["c"]
    assert c.top_ids.tolist() == [7, 3] and c.top_shares.tolist() == [0.4, 0.3]
    assert c.other_share == pytest.approx(0.3) and c.vocabulary.tolist() == [3, 5, 7, 9]
    assert c.singleton_share == pytest.approx(0.1) and c.id_kind == "integer"
    tags = profile.categorical["tags"]  # 10 elements: a x7, b x2, c x1 (empty bag: none)
    assert tags.elements == 10 and tags.top_shares.tolist() == [0.7, 0.2]
    assert tags.top_ids.tolist() == id_keys(pd.Series(["a", "b"]), "tags")[0].tolist()
    assert (profile.rows, profile.label_rate, profile.source) == (10, 0.5, {"days": ["2024-03-01"]})
    assert profile.dense["x"].shares.sum() == pytest.approx(1.0)


def test_string_ids_hash_to_fixed_int64_keys() -> None:
    # Golden values: pandas' SipHash with its fixed key, not Python's per-process salted hash.
    keys, codes, kind = id_keys(pd.Series(["a", "b", "a"]), "c")
    assert keys.tolist() == [-4496393130729816112, -5758684491630436641]
    assert codes.tolist() == [0, 1, 0] and kind == "hashed"
    assert id_keys(pd.Series([[1, 2], [3]]).explode(), "tags")[2] == "integer"


def test_save_and_load_give_identical_measurements(tmp_path: Path) -> None:
    scores = np.random.default_rng(1).beta(1, 20, 400)
    profile = DriftProfile.build(_bag_frame(0), BAGS, scores=scores, source={"run": "r1"})
    profile.save(tmp_path / "drift")
    assert sorted(p.name for p in (tmp_path / "drift").iterdir()) == [PROFILE_FILE, VOCAB_FILE]
    loaded = DriftProfile.load(tmp_path / "drift")
    day, day_scores = _bag_frame(1), np.random.default_rng(2).beta(1, 15, 400)
    before = measure(profile, day, BAGS, scores=day_scores)
    after = measure(loaded, day, BAGS, scores=day_scores)
    pd.testing.assert_frame_equal(before.table, after.table, check_exact=True)
    assert before.to_metrics() == after.to_metrics() and after.prediction_psi is not None
    assert loaded.to_dict() == profile.to_dict()
    meta = json.loads((tmp_path / "drift" / PROFILE_FILE).read_text())
    assert (
        meta["source"] == {"run": "r1"} and meta["schema_fingerprint"] == profile.schema_fingerprint
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / PROFILE_FILE).unlink(), PROFILE_FILE),
        (lambda d: (d / PROFILE_FILE).write_text("{not json"), PROFILE_FILE),
        (
            lambda d: (d / PROFILE_FILE).write_text('{"format": "other"}'),
            "not a quantrec.drift_profile",
        ),
        (lambda d: (d / VOCAB_FILE).unlink(), VOCAB_FILE),
        (lambda d: (d / VOCAB_FILE).write_bytes(b"garbage"), VOCAB_FILE),
    ],
)
def test_a_missing_or_corrupt_profile_names_its_path(tmp_path: Path, damage, message: str) -> None:  # noqa: ANN001
    DriftProfile.build(_bag_frame(0), BAGS).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(DriftError, match=message) as caught:
        DriftProfile.load(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_a_profile_of_another_schema_is_refused_with_the_columns() -> None:
    profile = DriftProfile.build(_bag_frame(0), BAGS)
    other = BAGS.model_copy(update={"dense": ("y",)})
    with pytest.raises(
        DriftError, match=r"only in the profile: \['x'\], only in the schema: \['y'\]"
    ):
        measure(profile, _bag_frame(1).rename(columns={"x": "y"}), other)
    with pytest.raises(DriftError, match=r"reference frame lacks schema columns \['tags'\]"):
        DriftProfile.build(_bag_frame(0).drop(columns=["tags"]), BAGS)


def _days(seed: int, rows: int) -> tuple[pd.DataFrame, list[pd.DataFrame], FeatureSchema]:
    """The window (days 0-2), then days 3 (before the shift) and 4 (the shift)."""
    feed = SyntheticFeed(seed=seed, rows_per_day=rows, scenario="sudden", shift_date=SHIFT)
    window = pd.concat([feed.day(START + timedelta(days=k)) for k in range(3)], ignore_index=True)
    return window, [feed.day(START + timedelta(days=k)) for k in (3, 4)], feed.schema()


def test_quiet_before_a_sudden_shift_and_severe_on_the_shift_day() -> None:
    # Measured with the default thresholds, 10k rows a day, seeds 0-4 (day 3 -> shift day):
    # dataset drift share 0 -> 0.64-0.74; max dense PSI <= 0.002 -> 0.29-0.34; max
    # categorical JS 0.040 -> 0.59-0.65; max L-inf <= 0.015 -> 0.54-0.62; mean OOV 0.046-0.048
    # -> 0.26-0.29; cat_2 bucket PSI <= 0.007 -> 1.7-4.0; level ok -> severe.
    window, (before, shifted), schema = _days(seed=4, rows=10_000)
    profile = DriftProfile.build(window, schema)
    quiet, loud = measure(profile, before, schema), measure(profile, shifted, schema)
    assert quiet.level == "ok" and quiet.reasons == () and quiet.dataset_drift_share == 0.0
    assert loud.level == "severe" and loud.reasons[0].statistic == "dataset_drift_share"
    assert loud.dataset_drift_share > 0.5
    assert quiet.max_dense_psi < 0.02 and loud.max_dense_psi > 0.25
    assert loud.mean_oov_rate > 3 * quiet.mean_oov_rate
    assert loud.value("cat_2", "psi") > 10 * quiet.value("cat_2", "psi")
    assert {"dense_2", "dense_4", "dense_9"} <= set(loud.drifted_features)  # the moved columns


@pytest.mark.parametrize("seed", [0, 3])
def test_a_stable_feed_stays_ok_on_consecutive_days(seed: int) -> None:
    # Measured, 10k rows, seeds 0-4, days 3-8 against days 0-2 (30 days): never a drifted
    # feature; worst values max dense PSI 0.003 (warn 0.2), categorical JS 0.044 (0.15),
    # L-inf 0.018 (0.1), OOV above the Good-Turing rate 0.010 (0.05), |label shift| 0.13
    # (0.25). At 5k rows a day (150 clicks) the label shift reached 0.28 once: warn.
    feed = SyntheticFeed(seed=seed, rows_per_day=10_000)
    window = pd.concat([feed.day(START + timedelta(days=k)) for k in range(3)], ignore_index=True)
    profile = DriftProfile.build(window, feed.schema())
    for k in (3, 4, 5):
        report = measure(profile, feed.day(START + timedelta(days=k)), feed.schema())
        assert report.level == "ok", report.summary()
        assert report.table.over_threshold.sum() == 0


def test_every_statistic_of_a_day_is_an_mlflow_metric() -> None:
    window, (before, _), schema = _days(seed=4, rows=2_000)
    report = measure(DriftProfile.build(window, schema), before, schema)
    metrics = report.to_metrics()
    assert metrics["drift.psi.dense_3"] == report.value("dense_3", "psi")
    assert {
        "drift.oov.cat_7",
        "drift.js.cat_7",
        "drift.linf.cat_7",
        "drift.mean_oov_rate",
        "drift.max_dense_psi",
        "drift.label_rate_shift",
        "drift.level",
    } <= set(metrics)


def _ratings_log_day(k: int, rows: int = 2_000) -> pd.DataFrame:
    """A ratings log's day: other users every day (ids of day k unseen on any other day), a
    user history feature whose level is the day's users', the same items and click model."""
    rng = np.random.default_rng(k)
    users = rng.integers(0, 40, rows) + 1_000 * k
    history = rng.gamma(2.0, 5.0 + 20.0 * (k % 3), rows)
    items = rng.zipf(1.5, rows) % 200
    return pd.DataFrame(
        {
            "label": (rng.random(rows) < 0.3).astype(np.int64),
            "history": history,
            "user": users,
            "item": items,
        }
    )


RATINGS = FeatureSchema(
    dense=("history",),
    categorical=(
        CategoricalFeature(name="user", hash_size=1000),
        CategoricalFeature(name="item", hash_size=200),
    ),
)


def test_a_ratings_log_is_not_drift_once_its_own_days_set_the_thresholds() -> None:
    """Each day holds other users: against fixed thresholds every day is severe; against
    what the window's days show among themselves, an ordinary day is not."""
    window = [_ratings_log_day(k) for k in range(3)]
    today = _ratings_log_day(3)
    plain = DriftProfile.build(pd.concat(window, ignore_index=True), RATINGS)
    assert measure(plain, today, RATINGS).level == "severe"

    profile = calibrated(plain, window, RATINGS)

    report = measure(profile, today, RATINGS)
    assert report.level != "severe", report.summary()
    assert profile.day_to_day["user|oov"] == pytest.approx(1.0)  # every user is new, daily
    row = report.table[(report.table.feature == "user") & (report.table.statistic == "oov")]
    assert row.threshold.iloc[0] == pytest.approx(1.5 * profile.day_to_day["user|oov"])


def test_a_sudden_shift_stays_severe_with_calibrated_thresholds() -> None:
    feed = SyntheticFeed(seed=4, rows_per_day=10_000, scenario="sudden", shift_date=SHIFT)
    days = [feed.day(START + timedelta(days=k)) for k in range(3)]
    schema = feed.schema()
    profile = calibrated(
        DriftProfile.build(pd.concat(days, ignore_index=True), schema), days, schema
    )
    assert measure(profile, feed.day(START + timedelta(days=3)), schema).level == "ok"
    assert measure(profile, feed.day(SHIFT), schema).level == "severe"


def test_day_to_day_values_survive_a_save_and_load(tmp_path: Path) -> None:
    window = [_ratings_log_day(k) for k in range(3)]
    profile = calibrated(
        DriftProfile.build(pd.concat(window, ignore_index=True), RATINGS), window, RATINGS
    )
    loaded = DriftProfile.load(profile.save(tmp_path / "profile"))
    assert loaded.day_to_day == profile.day_to_day and loaded.day_to_day
    today = _ratings_log_day(3)
    pd.testing.assert_frame_equal(
        measure(loaded, today, RATINGS).table, measure(profile, today, RATINGS).table
    )
    assert calibrated(profile, window[:1], RATINGS).day_to_day == {}  # one day: nothing to learn
