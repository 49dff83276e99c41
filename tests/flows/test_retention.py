"""Retention: after every run the registry keeps the recent days, the aliased versions and
their fp32 parents; `quantrec gc` says what it would delete, then deletes it with its files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from quantrec.flows.backfill import backfill
from quantrec.flows.cli import main
from quantrec.tasks.tracking import connect, load_version, registry_aliases

from .conftest import tiny_config

START, END = date(2026, 7, 1), date(2026, 7, 3)


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """Three days with retention on and two days kept: day 1 goes after day 3's run."""
    home = tmp_path_factory.mktemp("retention-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = tiny_config(
            quantization_ne_budget_rel=0.05,
            champion_ne_epsilon_rel=0.05,
            baseline_ne_margin_rel=0.1,
        ).with_overrides(registry={"keep_days": 2})
        records = [o.to_record() for o in backfill(START, END, config)]
        _, client = connect()
        yield home, config, records, client


def _files(home: Path) -> set[str]:
    return {str(p) for p in (home / "mlartifacts").rglob("MLmodel")}


def _numbers(client, name):
    return {str(v.version) for v in client.search_model_versions(f"name='{name}'")}


def test_each_run_keeps_the_last_days_and_what_the_aliases_need(kept):
    home, config, records, client = kept
    name = config.registry.model_name
    left = _numbers(client, name)
    first_day = set(records[0]["registered_versions"].values())
    later = {v for r in records[1:] for v in r["registered_versions"].values()}
    assert later <= left  # the last two days whole
    aliased = set(registry_aliases(client, name).values())
    assert aliased <= left
    assert first_day - left, "day 1 had versions no alias needs: some must have gone"
    for number in first_day - left:
        assert number not in aliased
    assert len(_files(home)) == len(left)  # a deleted version's files went with it


def test_gc_dry_run_says_what_would_go_and_gc_then_deletes_it(kept, monkeypatch, capsys):
    home, config, records, client = kept
    monkeypatch.setenv("QUANTREC_HOME", str(home))
    name = config.registry.model_name
    before = _numbers(client, name)
    aliases = registry_aliases(client, name)

    assert main(["gc", "--dry-run", "--keep-days", "1"]) == 0
    said = capsys.readouterr().out
    assert "would delete" in said and _numbers(client, name) == before
    middle = set(records[1]["registered_versions"].values()) - set(aliases.values())

    assert main(["gc", "--keep-days", "1"]) == 0
    said = capsys.readouterr().out
    left = _numbers(client, name)
    assert "deleted" in said and "MiB of files freed" in said
    last_day = set(records[-1]["registered_versions"].values())
    parents = {
        r["registered_versions"]["fp32"]
        for r in records
        if set(r["registered_versions"].values()) & set(aliases.values())
    }
    assert left == last_day | set(aliases.values()) | parents
    assert not (middle - parents) & left  # the rest of day 2 went
    assert len(_files(home)) == len(left)
    champion = aliases.get("champion")
    if champion:  # what serves still loads
        assert load_version(name, champion).model is not None

    assert main(["gc", "--keep-days", "0"]) == 2
