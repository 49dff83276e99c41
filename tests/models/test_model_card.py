"""Model cards and summaries as a reviewer reads them: tables that render as tables, the
plan in the model's order with its bytes, checks failures first with directed thresholds,
and a card that says what a review decided."""

from datetime import date

from quantrec.models.dlrm import DLRM
from quantrec.models.lifecycle import DayOutcome
from quantrec.models.markdown import GAP, escape_markdown, table
from quantrec.models.model_card import (
    checks_table,
    model_card,
    reviewed_decision,
    summary_markdown,
    threshold_text,
)
from quantrec.models.names import Tag
from quantrec.models.plan_table import PlanRow, plan_markdown, plan_rows
from quantrec.models.quantize import build_variant, model_bytes, quantizable_units

CHECKS = [
    {"name": "calibration_min", "value": 0.9, "threshold": 0.8, "direction": "min", "passed": True},
    {"name": "ne_budget", "value": 0.01, "threshold": 0.005, "direction": "max", "passed": False},
    {"name": "slice_ne", "value": 0.1, "threshold": 0.02, "passed": True, "gated": False},
    {
        "name": "auc_loss",
        "value": -0.001,
        "threshold": -0.002,
        "direction": "min",
        "passed": True,
        "within_noise": True,
    },
]


def _outcome(**changes) -> DayOutcome:
    values = dict(
        date=date(2026, 3, 2),
        model_name="ctr",
        mlflow_run_id="run-1",
        decision="challenger",
        reason="severe drift on cat_1: review it",
        challenger_variant="int8",
        checks={"int8": CHECKS, "fp32": CHECKS[:1]},
        metrics={
            "int8": {"ne": 0.871854, "auc": 0.786622, "log_loss": 0.118232, "calibration": 1.01},
            "fp32": {"ne": 0.87, "auc": 0.787, "log_loss": 0.118, "calibration": 1.0},
        },
        bytes={"int8": 250, "fp32": 1000},
        window=(date(2026, 2, 28), date(2026, 3, 1)),
        registered_versions={"int8": "7", "fp32": "5"},
        champion_version_before="3",
        champion_version="3",
        challenger_version="7",
        drift={"level": "severe", "reasons": ["warn: cat_1 js 0.45 >= 0.4"]},
    )
    return DayOutcome(**{**values, **changes})


def _dlrm(tables: int = 12) -> DLRM:
    return DLRM(
        num_dense=3,
        table_sizes=[10] * tables,
        embedding_dim=4,
        bottom_mlp=[8, 4],
        top_mlp=[8, 1],
        feature_names=[f"cat_{i}" for i in range(tables)],
    )


def test_a_table_pads_every_cell_but_the_last_and_stands_apart():
    lines = table(["a", "b"], [[1, 2]], right=1)
    assert lines == ["", f"| a{GAP} | b |", "|---|---:|", f"| 1{GAP} | 2 |", ""]


def test_plan_rows_follow_the_model_with_each_units_bytes():
    model = build_variant(_dlrm(), "int8")
    rows = plan_rows(model)
    units = quantizable_units(model)
    assert [r.unit for r in rows] == list(units)  # module order: bags.2 before bags.10
    bags = [r.unit for r in rows if "embedding_bags" in r.unit]
    assert bags.index("sparse_arch.embedding_bags.2") < bags.index("sparse_arch.embedding_bags.10")
    assert [r.bytes for r in rows] == [model_bytes(m) for m in units.values()]
    assert {r.precision for r in rows} == {"int8"}
    assert rows[2].feature == "cat_0" and rows[0].feature == "bottom MLP"
    assert rows[-1].feature == "top MLP"
    lines = plan_markdown(rows)
    assert f"**{sum(r.bytes for r in rows):,}**" in lines[-2]
    assert PlanRow.from_dict(rows[3].to_dict()) == rows[3]


def test_checks_read_failures_first_with_directed_thresholds():
    assert threshold_text(CHECKS[0]) == ">= 0.8" and threshold_text(CHECKS[1]) == "<= 0.005"
    rows = [line for line in checks_table(CHECKS) if line.startswith("| ") and "---" not in line]
    results = [row.split("|")[1].replace(GAP, "").strip() for row in rows[1:]]
    assert results == ["**FAIL**", "pass", "pass (within noise)", "not gated"]


def test_the_card_renders_its_tables_and_says_what_a_review_decided():
    rows = plan_rows(build_variant(_dlrm(), "int8"))
    card = model_card(_outcome(), "int8", plan=rows)
    assert "**Verdict:** challenger" in card
    assert f"\n\n| model{GAP} | ne{GAP} |" in card
    assert f"0.871854{GAP} | 0.786622{GAP} | 0.118232{GAP}" in card  # one number per cell
    assert "cat\\_1" in card  # an underscore is not an italic marker
    tags = {
        Tag.REVIEW: "approved",
        Tag.REVIEWED_BY: "ana",
        Tag.REVIEWED_AT: "2026-03-03T09:00:00+00:00",
        Tag.REVIEW_REASON: "slices fine",
    }
    assert reviewed_decision(tags) == "approved"
    reviewed = model_card(_outcome(), "int8", plan=rows, review=tags)
    assert "**Decision:** approved (the gate said: challenger)" in reviewed
    assert "approved in review by ana**: slices fine" in reviewed
    later = {**tags, Tag.ROLLED_BACK_AT: "2026-03-04T10:00:00+00:00", Tag.ROLLED_BACK_BY: "bo"}
    assert reviewed_decision(later) == "rolled back"


def test_the_summary_opens_on_the_decision_and_follows_a_review():
    rows = [PlanRow("sparse_arch.embedding_bags.0", "cat_0", "int8", 120)]
    summary = summary_markdown(_outcome(), plan=rows)
    lines = summary.splitlines()
    assert lines[0] == "# quantrec lifecycle, run date 2026-03-02"
    assert lines[2] == "**Decision:** challenger (int8)"
    assert "**Champion:** version 3 (before this run: 3)" in summary
    assert "`quantrec review approve 7`" in summary
    assert "## Precision plan of `int8`" in summary and "| 120" in summary
    failures = summary.index("**FAIL**")
    assert failures < summary.index("| pass")
    tags = {Tag.REVIEW: "approved", Tag.REVIEWED_AT: "t", Tag.REVIEWED_BY: "ana"}
    after = summary_markdown(_outcome(), review=tags, reviewed_version="7", champion="7")
    assert "**After review:** version 7 approved" in after
    assert "**Champion:** version 7 (before this run: 3)" in after
    assert "review approve 7" not in after


def test_escape_markdown_keeps_names_as_written():
    assert escape_markdown("users_new *x* [a]|b") == "users\\_new \\*x\\* \\[a\\]\\|b"
