"""Reruns, locks, model cards and registry review, on a copy of the backfilled state."""

import json

import pytest

from quantrec.flows.cli import main
from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.tasks.settings import RunInProgressError, os_user, run_date_lock

from .conftest import END


@pytest.fixture
def copied(home_copy):
    _, config, records, client = home_copy
    return config, records, client


def _versions(client, name):
    return {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}


def _alias(client, name, alias):
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else str(version)


def test_rerun_of_a_finished_date_reuses_it_and_registers_nothing(copied):
    config, records, client = copied
    name = config.registry.model_name
    before = _versions(client, name)
    record = daily_lifecycle(END, config).to_record()
    assert record["reused_from"] == records[-1]["mlflow_run_id"]
    assert record["registered_versions"] == records[-1]["registered_versions"]
    assert _versions(client, name).keys() == before.keys()
    rerun = client.get_run(record["rerun_mlflow_run_id"])
    assert rerun.data.tags["quantrec.reused_from"] == records[-1]["mlflow_run_id"]


def test_forced_rerun_trains_and_registers_new_versions(copied):
    config, records, client = copied
    name = config.registry.model_name
    before = _versions(client, name)
    record = daily_lifecycle(END, config, force=True).to_record()
    new = set(_versions(client, name)) - set(before)
    assert len(new) == 4
    assert set(record["registered_versions"].values()) == new
    run = client.get_run(record["mlflow_run_id"])
    first = client.get_run(records[-1]["mlflow_run_id"])
    assert run.data.tags["quantrec.run_key"] == first.data.tags["quantrec.run_key"]
    # Forced, it trains again from the parent the first run continued, not from the
    # versions the first run of the date registered.
    assert run.data.tags["quantrec.training_reason"] == first.data.tags["quantrec.training_reason"]
    assert record["trained_through"] == records[-1]["trained_through"]


def test_a_second_run_of_the_same_date_is_refused_while_one_holds_the_lock(copied):
    config, _, client = copied
    runs_before = len(client.search_runs([client.get_experiment_by_name("quantrec").experiment_id]))
    with run_date_lock(config.registry.model_name, END):
        with pytest.raises(RunInProgressError, match=str(END)):
            daily_lifecycle(END, config)
        assert main(["run", "--date", str(END), "--rows", "3000"]) == 4
    experiment = client.get_experiment_by_name("quantrec").experiment_id
    assert len(client.search_runs([experiment])) == runs_before


def test_each_version_carries_a_model_card(copied):
    config, records, client = copied
    version = records[-1]["registered_versions"]["searched"]
    card = client.get_model_version(config.registry.model_name, version).description
    assert "searched" in card and "Precision plan" in card and "digest" in card
    assert "Gate checks of this variant" in card
    assert records[-1]["metrics"]["searched"]["ne"] is not None


def test_review_approve_reject_rollback_and_override(copied, capsys):
    config, records, client = copied
    name = config.registry.model_name
    champion = _alias(client, name, "champion")
    candidates = [v for v in records[-1]["registered_versions"].values() if v != champion]
    first, second = candidates[:2]
    for version in (first, second):
        client.set_model_version_tag(name, version, "quantrec.review", "pending")
    client.set_registered_model_alias(name, "challenger", first)

    assert main(["review", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {item["version"] for item in listed} == {first, second}
    assert next(i for i in listed if i["version"] == first)["aliases"] == ["challenger"]

    assert main(["review", "reject", second, "--reason", "calibration off on tail items"]) == 0
    tags = client.get_model_version(name, second).tags
    assert tags["quantrec.review"] == "rejected"
    assert tags["quantrec.review_reason"] == "calibration off on tail items"
    assert tags["quantrec.reviewed_by"] == os_user()
    assert _alias(client, name, "champion") == champion

    assert main(["review", "approve", first]) == 0
    assert _alias(client, name, "champion") == first
    assert _alias(client, name, "previous") == champion
    assert "challenger" not in client.get_registered_model(name).aliases
    assert client.get_model_version(name, first).tags["quantrec.review"] == "approved"

    assert main(["rollback", "--reason", "NE alarm"]) == 0
    assert _alias(client, name, "champion") == champion
    assert client.get_model_version(name, first).tags["quantrec.rolled_back_reason"] == "NE alarm"

    assert main(["promote", second, "--reason", "gate too strict on a holiday"]) == 0
    tags = client.get_model_version(name, second).tags
    assert _alias(client, name, "champion") == second
    assert tags["quantrec.override_reason"] == "gate too strict on a holiday"
    assert tags["quantrec.override_by"] == os_user()


def test_review_of_an_unknown_version_is_a_clear_error(copied, capsys):
    assert main(["review", "approve", "999"]) == 2
    assert "no version '999'" in capsys.readouterr().err
    assert main(["review", "list"]) == 0


def test_approving_a_version_that_was_never_a_challenger_is_refused(copied, capsys):
    config, records, client = copied
    name = config.registry.model_name
    champion = records[-1]["registered_versions"]["int8"]
    client.set_registered_model_alias(name, "champion", champion)
    never = records[0]["registered_versions"]["fp32"]
    assert main(["review", "approve", never]) == 2
    err = capsys.readouterr().err
    assert f"version {never} of '{name}' is not the challenger under review" in err
    assert "review never requested" in err
    assert f'quantrec promote {never} --reason "..."' in err
    assert _alias(client, name, "champion") == champion
    assert "quantrec.review" not in client.get_model_version(name, never).tags

    assert main(["review", "approve", champion]) == 2
    assert "it is the champion already" in capsys.readouterr().err
    assert _alias(client, name, "champion") == champion
