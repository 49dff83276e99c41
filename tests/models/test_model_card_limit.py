"""A model card fits MLflow's 5000-character version description on every store (a
PostgreSQL store refuses a longer one): a long plan table gives way from its end."""

import re

from quantrec.models.model_card import DESCRIPTION_MAX, model_card
from quantrec.models.plan_table import plan_rows
from quantrec.models.quantize import build_variant

from .test_model_card import _dlrm, _outcome


def test_a_card_of_many_units_keeps_every_section_within_the_limit():
    rows = plan_rows(build_variant(_dlrm(tables=60), "int8"))
    whole = model_card(_outcome(), "int8", plan=rows, max_chars=10**6)
    assert len(whole) > DESCRIPTION_MAX  # the case the limit is for

    card = model_card(_outcome(), "int8", plan=rows)

    assert len(card) <= DESCRIPTION_MAX
    shown = re.findall(r"^\| `([^`]+)`", card, flags=re.MULTILINE)
    assert 10 < len(shown) < len(rows)
    assert [r.unit for r in rows[: len(shown)]] == shown  # the first rows, in order
    assert f"({len(rows) - len(shown)} more units: the run's `plans/int8.json`" in card
    for section in ("### Metrics on the run date", "### Drift", "### Gate checks"):
        assert section in card


def test_a_short_card_is_whole():
    rows = plan_rows(build_variant(_dlrm(), "int8"))
    card = model_card(_outcome(), "int8", plan=rows)
    assert card == model_card(_outcome(), "int8", plan=rows, max_chars=10**6)
    assert "more units" not in card
