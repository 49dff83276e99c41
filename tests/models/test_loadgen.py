"""The load generator's bounded runs: it stops within its bounds and counts each query once.

No timing assertions: the counts a run issues follow from its seeded arrivals alone.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from quantrec.models.loadgen import LoadError, LoadSettings, run_load


def test_a_run_bounded_by_queries_completes_each_once() -> None:
    settings = LoadSettings(rate_qps=5000.0, max_queries=40, max_seconds=30.0, seed=0)
    result = run_load([lambda x: x * 2, lambda x: x + 1], list(range(7)), settings)
    assert (result.issued, result.completed, result.abandoned) == (40, 40, 0)
    assert result.completed_ids.tolist() == list(range(40))
    assert result.latencies_ms.shape == (40,) and (result.latencies_ms >= 0).all()
    assert result.queries_per_s > 0
    assert result.percentile_ms(50) <= result.percentile_ms(99)


def test_a_run_bounded_by_time_issues_only_the_queries_due_in_time() -> None:
    settings = LoadSettings(rate_qps=200.0, max_queries=10_000, max_seconds=0.1, seed=1)
    due = settings.arrivals()
    assert 0 < len(due) < 10_000 and due.max() <= 0.1
    np.testing.assert_array_equal(due, LoadSettings(200.0, 10_000, 0.1, seed=1).arrivals())
    result = run_load([lambda x: x], [None], settings)
    assert result.issued == len(due)
    assert result.completed + result.abandoned == result.issued


def test_queries_past_the_deadline_are_abandoned_not_lost() -> None:
    def slow(x):
        time.sleep(0.02)
        return x

    settings = LoadSettings(rate_qps=2000.0, max_queries=200, max_seconds=0.1, seed=2)
    result = run_load([slow, slow], [0], settings)
    assert result.completed < result.issued  # 100-odd queries of 40 ms cannot fit in 0.1 s
    assert result.completed + result.abandoned == result.issued
    assert len(set(result.completed_ids.tolist())) == result.completed


def test_a_failing_stage_is_reported() -> None:
    def broken(x):
        raise KeyError("no such item")

    with pytest.raises(LoadError, match="no such item"):
        run_load([broken], [0], LoadSettings(rate_qps=1000.0, max_queries=5, max_seconds=5.0))


def test_settings_are_checked() -> None:
    with pytest.raises(LoadError, match="rate_qps"):
        LoadSettings(rate_qps=0.0, max_queries=1, max_seconds=1.0)
    with pytest.raises(LoadError, match="max_queries"):
        LoadSettings(rate_qps=1.0, max_queries=0, max_seconds=1.0)
    with pytest.raises(LoadError, match="at least one stage"):
        run_load([], [0], LoadSettings(rate_qps=1.0, max_queries=1, max_seconds=1.0))
