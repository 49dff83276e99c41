"""The pure report renderers: per-run HTML page and lifecycle chart/page (no servers)."""

import base64
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from quantrec.models.lifecycle_report import lifecycle_summary, write_lifecycle_report
from quantrec.models.report_render import (
    ReportError,
    calibration_bins,
    calibration_figure,
    png_bytes,
    run_report_html,
)

PNG = b"\x89PNG"


def _decision(reason="int8 within budget"):
    return {
        "outcome": "promoted",
        "promoted": "int8",
        "challenger": "fp32",
        "reason": reason,
        "checks": {
            "int8": [
                {
                    "name": "quantization_ne_budget",
                    "value": 0.004,
                    "threshold": 0.01,
                    "passed": True,
                    "within_noise": True,
                    "ci_low": 0.001,
                    "ci_high": 0.007,
                },
                {
                    "name": "slice_ne",
                    "value": 0.02,
                    "threshold": 0.015,
                    "passed": False,
                    "slice": "cat_1=7",
                    "direction": "max",
                },
            ],
            "fp32": [{"name": "beats_champion", "value": -0.01, "threshold": 0.0, "passed": True}],
        },
    }


def _report(**overrides):
    drift = pd.DataFrame(
        {
            "feature": ["dense_0", "dense_0", "cat_1", "label"],
            "kind": ["dense", "dense", "categorical", "label"],
            "statistic": ["psi", "js", "oov", "rate_shift"],
            "value": [0.3, 0.1, 0.02, 0.05],
            "threshold": [0.2, np.nan, 0.05, np.nan],
            "over_threshold": [True, False, False, False],
        }
    )
    bins = pd.DataFrame(
        {"mean_predicted": [0.02, 0.05], "observed_rate": [0.03, 0.04], "rows": [50, 50]}
    )
    slices = pd.DataFrame(
        {
            "slice": ["all", "all", "new users", "new users"],
            "variant": ["fp32", "int8"] * 2,
            "rows": [100, 100, 20, 20],
            "ne": [0.8, 0.81, 0.9, 0.92],
        }
    )
    arguments = dict(
        run_date=date(2024, 3, 5),
        decision=_decision(),
        drift=drift,
        drift_level="warn",
        drift_reasons=["dense_0 psi 0.3 > 0.2"],
        metrics={"int8": {"ne": 0.81, "auc": 0.7, "log_loss": 0.4, "calibration": 1.02}},
        calibration={"int8": bins, "fp32": bins},
        slices=slices,
        staleness={"days_since_plan": 3.0},
        links={"MLflow run": "http://localhost:5000/x"},
        numerics=pd.DataFrame(
            {"unit": ["sparse_arch.tables.cat_1", "output"], "sqnr_db": [31.2, 28.4]}
        ),
    )
    arguments.update(overrides)
    return run_report_html(**arguments)


def test_run_report_names_every_check_and_the_outcome():
    page = _report()
    for name in ("quantization_ne_budget", "slice_ne", "beats_champion", "promoted", "cat_1=7"):
        assert name in page
    assert '<a href="http://localhost:5000/x">MLflow run</a>' in page
    assert "not measured" not in page
    assert "Numerics: searched vs fp32" in page and "sparse_arch.tables.cat_1" in page


def test_run_report_escapes_text_and_defuses_script_links():
    page = _report(
        decision=_decision(reason="<script>alert(1)</script>"), links={"bad": "javascript:alert(1)"}
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript' not in page


def test_run_report_embeds_valid_pngs_and_marks_missing_sections():
    page = _report()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # drift, calibration, slices
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    empty = _report(
        drift=None,
        drift_level=None,
        drift_reasons=[],
        metrics={},
        calibration={},
        slices=None,
        staleness=None,
        links=None,
        numerics=None,
    )
    assert empty.count("not measured") == 6
    assert "the MLflow UI address is not known" in empty
    assert "data:image/png" not in empty


def test_calibration_bins_hand_example():
    bins = calibration_bins(np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9]), bins=2)
    assert list(bins.columns) == ["mean_predicted", "observed_rate", "rows"]
    np.testing.assert_allclose(bins.mean_predicted, [0.15, 0.8])
    np.testing.assert_allclose(bins.observed_rate, [0.5, 1.0])
    assert bins.rows.tolist() == [2, 2]
    assert png_bytes(calibration_figure({"int8": bins})).startswith(PNG)


def test_calibration_bins_ties_and_bad_sizes():
    tied = calibration_bins(np.array([0, 1, 0]), np.full(3, 0.4), bins=5)
    assert tied.rows.tolist() == [3]
    with pytest.raises(ValueError, match="3 labels and 2 probs"):
        calibration_bins(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="0 labels and 0 probs"):
        calibration_bins(np.array([]), np.array([]))


def _days():
    """Five run dates, shift after day 1: days 2-5 are counted. fp32 NE is 0.8 throughout,
    so gaps are (ne - 0.8) / 0.8; champion NaN on day 4, frozen NaN on day 5."""
    start = date(2024, 1, 1)
    return pd.DataFrame(
        {
            "date": [start + timedelta(days=i) for i in range(5)],
            "frozen_ne": [0.80, 0.81, 0.84, 0.86, np.nan],  # gaps: 0.0125, 0.05, 0.075, skip
            "fp32_ne": [0.80] * 5,
            "champion_ne": [0.80, 0.81, 0.812, np.nan, 0.808],  # gaps: 0.0125, 0.015, skip, 0.01
            "drift_level": ["ok", "severe", "warn", None, "ok"],
            "promoted": [True, False, True, False, False],
            "outcome": ["promoted", "rejected", "promoted", "stopped", "rejected"],
        }
    )


def test_lifecycle_summary_hand_computed():
    s = lifecycle_summary(_days(), budget_rel=0.02, shift_date=date(2024, 1, 1))
    assert s["days_after_shift"] == 4
    assert s["champion_max_gap_rel"] == pytest.approx(0.015)
    assert s["champion_worst_date"] == "2024-01-03"
    assert (s["champion_days_compared"], s["champion_days_within_budget"]) == (3, 3)
    assert s["champion_days_skipped"] == 1 and s["champion_within_budget"] is True
    assert s["frozen_max_gap_rel"] == pytest.approx(0.075)
    assert (s["frozen_days_compared"], s["frozen_days_within_budget"]) == (3, 1)
    assert s["frozen_days_skipped"] == 1 and s["frozen_within_budget"] is False
    assert (s["promotions"], s["drift_warn_days"], s["drift_severe_days"]) == (1, 1, 1)
    everything = lifecycle_summary(_days(), budget_rel=0.02, shift_date=None)
    assert everything["days_after_shift"] == 5 and everything["champion_days_compared"] == 4


def test_write_lifecycle_report_writes_png_and_html(tmp_path):
    png, page = write_lifecycle_report(
        _days(), tmp_path / "out", budget_rel=0.02, shift_date=date(2024, 1, 1)
    )
    assert (png.name, page.name) == ("lifecycle.png", "lifecycle.html")
    assert png.read_bytes().startswith(PNG)
    text = page.read_text(encoding="utf-8")
    assert "+1.50%" in text and "+7.50%" in text  # champion and frozen max gaps
    assert "3 of 3 days" in text and "1 of 3 days" in text
    assert "1 day(s) skipped" in text


def test_lifecycle_rejects_missing_columns():
    with pytest.raises(ValueError, match=r"\['fp32_ne', 'outcome'\]"):
        lifecycle_summary(
            _days().drop(columns=["fp32_ne", "outcome"]), budget_rel=0.02, shift_date=None
        )
    with pytest.raises(ReportError, match="no rows"):
        lifecycle_summary(_days().iloc[:0], budget_rel=0.02, shift_date=None)
