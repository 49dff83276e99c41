"""The synthetic feed: deterministic, contract-shaped, ~3 % clicks, and shifts that hurt."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from quantrec.feeds.criteo_schema import HASH_SIZES
from quantrec.feeds.synthetic import FeedError, SyntheticFeed

DAY = date(2024, 3, 1)
ROWS = 4000


def _fingerprint(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy()).hexdigest()


def _days(k: int) -> date:
    return DAY + timedelta(days=k)


@pytest.mark.parametrize("scenario", ["stable", "gradual", "sudden"])
def test_a_day_does_not_depend_on_call_order_or_instance(scenario: str) -> None:
    shift = _days(1) if scenario == "sudden" else None
    first = SyntheticFeed(seed=7, rows_per_day=ROWS, scenario=scenario, shift_date=shift)
    second = SyntheticFeed(seed=7, rows_per_day=ROWS, scenario=scenario, shift_date=shift)
    a1, a2 = first.day(_days(0)), first.day(_days(2))
    b2, b1 = second.day(_days(2)), second.day(_days(0))
    pd.testing.assert_frame_equal(a1, b1)
    pd.testing.assert_frame_equal(a2, b2)
    pd.testing.assert_frame_equal(a1, first.day(_days(0)))  # repeated calls agree too
    assert not a1.equals(a2)


def test_a_day_is_identical_in_another_process() -> None:
    code = (
        "from datetime import date; import hashlib, pandas as pd;"
        "from quantrec.feeds.synthetic import SyntheticFeed;"
        f"f = SyntheticFeed(seed=3, rows_per_day={ROWS}).day(date(2024, 3, 1));"
        "print(hashlib.sha256(pd.util.hash_pandas_object(f, index=True).to_numpy()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = SyntheticFeed(seed=3, rows_per_day=ROWS).day(DAY)
    assert out.stdout.strip() == _fingerprint(here)


def test_seeds_give_different_worlds() -> None:
    a = SyntheticFeed(seed=1, rows_per_day=ROWS).day(DAY)
    b = SyntheticFeed(seed=2, rows_per_day=ROWS).day(DAY)
    assert not a.equals(b)


def test_columns_and_dtypes_follow_the_schema() -> None:
    feed = SyntheticFeed(seed=0, rows_per_day=ROWS)
    schema, frame = feed.schema(), feed.day(DAY)
    assert list(frame.columns) == schema.columns
    assert len(frame) == ROWS
    assert frame[schema.label].dtype == np.int8
    assert set(np.unique(frame[schema.label])) == {0, 1}
    dense = frame[list(schema.dense)]
    assert (dense.dtypes == np.float32).all()
    assert np.isfinite(dense.to_numpy()).all() and (dense.to_numpy() >= 0).all()
    assert (dense.to_numpy() == np.floor(dense.to_numpy())).all()  # counts
    for feature in schema.categorical:
        ids = frame[feature.name]
        assert ids.dtype == np.int64
        assert ids.between(0, feature.hash_size - 1).all(), feature.name


def test_schema_has_a_criteo_like_spread_of_hash_sizes() -> None:
    sizes = SyntheticFeed().schema().hash_sizes
    assert len(sizes) == 26 and sizes == list(HASH_SIZES)
    assert min(sizes) <= 10 and max(sizes) <= 50_000
    assert sum(1_000 <= s <= 50_000 for s in sizes) >= 13


def test_dense_counts_are_heavy_tailed_and_ids_follow_a_power_law() -> None:
    frame = SyntheticFeed(seed=0, rows_per_day=20_000).day(DAY)
    counts = frame["dense_12"]
    assert counts.max() > 100 * max(counts.median(), 1.0)
    shares = frame["cat_2"].value_counts(normalize=True).to_numpy()
    assert shares[0] > 50 * shares[99]  # the head dwarfs the 100th id
    assert frame["cat_2"].nunique() > 2_000  # and the tail is long


@pytest.mark.parametrize("scenario", ["stable", "gradual", "sudden"])
def test_click_rate_is_about_three_percent_every_day(scenario: str) -> None:
    shift = _days(3) if scenario == "sudden" else None
    feed = SyntheticFeed(seed=5, rows_per_day=20_000, scenario=scenario, shift_date=shift)
    rates = [feed.day(_days(k)).label.mean() for k in range(0, 28, 4)]
    assert all(0.025 <= r <= 0.035 for r in rates), rates


def test_true_probabilities_leave_something_to_learn() -> None:
    feed = SyntheticFeed(seed=0, rows_per_day=20_000)
    labels, prob = feed.day(DAY).label.to_numpy(), feed.click_probability(DAY)
    rate = labels.mean()
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    loss = -np.mean(labels * np.log(prob) + (1 - labels) * np.log(1 - prob))
    assert 0.65 < loss / entropy < 0.85  # normalized entropy of the ground truth


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"scenario": "sudden"}, "needs shift_date"),
        ({"scenario": "sudden", "shift_date": "2024-03-01"}, "datetime.date"),
        ({"scenario": "weekly"}, "scenario must be one of"),
        ({"rows_per_day": 0}, "rows_per_day"),
        ({"seed": -1}, "seed"),
        ({"period_days": 1}, "period_days"),
        ({"new_id_share": 1.5}, "new_id_share"),
    ],
)
def test_bad_settings_say_what_to_change(settings: dict, words: str) -> None:
    with pytest.raises(FeedError, match=words):
        SyntheticFeed(**settings)


def test_ids_born_at_a_sudden_shift_were_never_seen_before() -> None:
    feed = SyntheticFeed(seed=2, rows_per_day=10_000, scenario="sudden", shift_date=_days(5))
    schema = feed.schema()
    large = [c for c in schema.categorical if c.hash_size >= 1_000]
    before = pd.concat([feed.day(_days(k)) for k in range(5)])
    for column in schema.categorical:
        assert (before[column.name] < column.hash_size).all()  # only the first catalog
    after = feed.day(_days(6))
    born = np.mean([(after[c.name] >= c.hash_size).mean() for c in large])
    assert 0.10 <= born <= 0.20
    assert feed.is_shifted(_days(5)) and not feed.is_shifted(_days(4))


def test_sudden_shift_moves_some_dense_distributions() -> None:
    feed = SyntheticFeed(seed=2, rows_per_day=10_000, scenario="sudden", shift_date=_days(1))
    before, after = feed.day(_days(0)), feed.day(_days(1))
    assert after["dense_2"].mean() > 2 * before["dense_2"].mean()
    assert after["dense_0"].mean() == pytest.approx(before["dense_0"].mean(), rel=0.25)
