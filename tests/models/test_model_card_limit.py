"""A model card fits MLflow's 5000-character version description on every store (a
PostgreSQL store refuses a longer one): a long plan table gives way from its end."""

import re

from quantrec.models.model_card import DESCRIPTION_MAX, description_limit, model_card
from quantrec.models.plan_table import plan_rows
from quantrec.models.quantize import build_variant

from .test_model_card import _dlrm, _outcome


def test_a_card_of_many_units_keeps_every_section_within_the_limit():
    rows = plan_rows(build_variant(_dlrm(tables=60), "int8"))
    whole = model_card(_outcome(), "int8", plan=rows)  # no limit: the embedded store's
    assert len(whole) > DESCRIPTION_MAX  # the case the limit is for

    card = model_card(_outcome(), "int8", plan=rows, max_chars=DESCRIPTION_MAX)

    assert len(card) <= DESCRIPTION_MAX
    shown = re.findall(r"^\| `([^`]+)`", card, flags=re.MULTILINE)
    assert 10 < len(shown) < len(rows)
    assert [r.unit for r in rows[: len(shown)]] == shown  # the first rows, in order
    assert f"({len(rows) - len(shown)} more units: the run's `plans/int8.json`" in card
    for section in ("### Metrics on the run date", "### Drift", "### Gate checks"):
        assert section in card


def test_a_short_card_is_whole_and_only_a_server_store_is_limited():
    rows = plan_rows(build_variant(_dlrm(), "int8"))
    card = model_card(_outcome(), "int8", plan=rows, max_chars=DESCRIPTION_MAX)
    assert card == model_card(_outcome(), "int8", plan=rows)
    assert "more units" not in card
    assert description_limit(embedded_sqlite=True) is None
    assert description_limit(embedded_sqlite=False) == DESCRIPTION_MAX


def test_a_day_drifted_on_every_feature_keeps_its_plan_and_counts_the_other_warns():
    """A shifted day gives a warn per feature: dozens of lines that must not push the
    plan, the table a reviewer reads the precisions in, out of the card."""
    rows = plan_rows(build_variant(_dlrm(tables=26), "int8"))
    warns = [f"warn: cat_{k} js 0.{40 + k} >= 0.4" for k in range(26)]
    reasons = ["severe: dataset_drift_share 0.6667 >= 0.3", *warns, *warns]  # js and linf
    drift = {"level": "severe", "reasons": reasons}

    card = model_card(_outcome(drift=drift), "int8", plan=rows)

    assert len(card) <= DESCRIPTION_MAX and "more units" not in card
    shown = re.findall(r"^\| `([^`]+)`", card, flags=re.MULTILINE)
    assert shown == [r.unit for r in rows]
    assert "- severe: dataset\\_drift\\_share 0.6667 >= 0.3" in card
    assert card.count("\n- warn: ") == 5
    assert f"({len(reasons) - 1 - 5} more warn reasons: the run's `drift/features.csv`" in card
