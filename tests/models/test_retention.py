"""The retention policy keeps what a model line needs and nothing else."""

from __future__ import annotations

import pytest

from quantrec.models.retention import RegisteredVersion, retained

VARIANTS = ("fp32", "fp16", "int8", "searched")


def _day(first: int, run_date: str, run_id: str) -> list[RegisteredVersion]:
    return [
        RegisteredVersion(version=str(first + k), run_date=run_date, variant=v, run_id=run_id)
        for k, v in enumerate(VARIANTS)
    ]


def _registry() -> list[RegisteredVersion]:
    """Four days of four variants: versions 1-4 on 03-01 ... 13-16 on 03-04."""
    return [
        v
        for k, day in enumerate(["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"])
        for v in _day(1 + 4 * k, day, f"run-{k}")
    ]


def test_the_last_days_are_kept_whole_and_older_unaliased_versions_dropped():
    plan = retained(_registry(), {}, keep_days=2)
    assert plan.keep == tuple(str(n) for n in range(9, 17))
    assert plan.drop == tuple(str(n) for n in range(1, 9))
    assert plan.why["9"] == "run date 2026-03-03 is among the last 2"


def test_aliased_versions_and_their_fp32_parents_are_kept_however_old():
    # champion: the int8 of 03-01 (version 3), previous: the searched of 03-02 (version 8).
    plan = retained(_registry(), {"champion": "3", "previous": "8"}, keep_days=1)
    assert set(plan.keep) == {"3", "1", "8", "5", "13", "14", "15", "16"}
    assert plan.why["1"] == "fp32 parent of the champion (version 3)"
    assert plan.why["3"] == "alias champion"


def test_a_version_under_review_or_without_identity_is_never_dropped():
    versions = _registry()
    versions[1] = RegisteredVersion("2", "2026-03-01", "fp16", "run-0", pending_review=True)
    versions.append(RegisteredVersion("17", "", "", ""))
    plan = retained(versions, {}, keep_days=1)
    assert {"2", "17"} <= set(plan.keep) and "1" in plan.drop
    assert plan.why["2"] == "under review"


def test_keep_days_below_one_is_refused():
    with pytest.raises(ValueError, match="keep_days must be at least 1; got 0"):
        retained(_registry(), {}, keep_days=0)
