"""A sudden shift must hurt a model trained before it; a stable feed must not.

The probe is a logistic regression on one-hot ids and log counts: the simplest model that
learns per-id effects, so it feels exactly what the shift redraws.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import OneHotEncoder

from feeds.synthetic import SyntheticFeed

SHIFT = date(2024, 3, 1)
ROWS = 15_000


def _features(frame: pd.DataFrame, feed: SyntheticFeed, encoder: OneHotEncoder) -> sp.csr_matrix:
    schema = feed.schema()
    dense = (np.log1p(frame[list(schema.dense)].to_numpy(np.float64)) - 2.0) / 2.0
    ids = encoder.transform(frame[schema.categorical_names].to_numpy())
    return sp.hstack([ids, sp.csr_matrix(dense)]).tocsr()


def _test_loss(feed: SyntheticFeed, train_days: list[date], test_day: date) -> float:
    train = pd.concat([feed.day(d) for d in train_days], ignore_index=True)
    test = feed.day(test_day)
    encoder = OneHotEncoder(handle_unknown="ignore")
    encoder.fit(train[feed.schema().categorical_names].to_numpy())
    model = LogisticRegression(C=0.1, max_iter=300, tol=1e-3)
    model.fit(_features(train, feed, encoder), train.label.to_numpy())
    scores = model.predict_proba(_features(test, feed, encoder))[:, 1]
    return log_loss(test.label.to_numpy(), scores)


def _old_and_fresh_loss(feed: SyntheticFeed) -> tuple[float, float]:
    day = lambda k: SHIFT + timedelta(days=k)  # noqa: E731
    old = _test_loss(feed, [day(-2), day(-1)], day(2))
    fresh = _test_loss(feed, [day(0), day(1)], day(2))
    return old, fresh


@pytest.mark.parametrize(
    ("scenario", "hurts"), [("sudden", True), ("stable", False)]
)
def test_a_sudden_shift_hurts_a_model_trained_before_it(scenario: str, hurts: bool) -> None:
    shift = SHIFT if scenario == "sudden" else None
    feed = SyntheticFeed(seed=3, rows_per_day=ROWS, scenario=scenario, shift_date=shift)
    old, fresh = _old_and_fresh_loss(feed)
    if hurts:
        assert old > 1.05 * fresh, (old, fresh)  # measured: ~10 % worse
    else:
        assert abs(old / fresh - 1.0) < 0.03, (old, fresh)
