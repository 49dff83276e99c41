import json
import os
from datetime import date
from pathlib import Path

import pytest

from quantrec.feeds import MovieLensFeedConfig, SyntheticFeedConfig
from quantrec.tasks.config import ConfigError, QuantrecConfig, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored_environ(tmp_path, monkeypatch):
    """The CLI sets defaults in os.environ (Prefect's home, telemetry off): undo them."""
    saved = dict(os.environ)
    monkeypatch.setenv("QUANTREC_HOME", str(tmp_path / "home"))
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_defaults_without_a_file():
    config = load_config(None)
    assert config.gate.quantization_ne_budget_rel == pytest.approx(0.0005)
    assert config.model.embedding_dim is None  # the width follows the training rows
    assert config.training.epochs is None and config.training.batch_size is None


def test_file_overrides_only_what_it_lists(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(
        '[training]\nwindow_days = 5\n[feed]\nscenario = "sudden"\nshift_date = 2026-01-05\n'
    )
    config = load_config(path)
    assert config.training.window_days == 5
    assert config.feed.kind == "synthetic"  # a [feed] without kind is the synthetic feed
    assert config.feed.shift_date == date(2026, 1, 5)
    assert config.training.epochs == QuantrecConfig().training.epochs


def test_unknown_key_names_file_and_field(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[training]\nwindow_dayz = 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "training.window_dayz" in str(err.value)


def test_bad_value_says_both_values(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[model]\nembedding_dim = 8\nbottom_mlp = [64, 16]\n")
    with pytest.raises(ConfigError, match=r"embedding_dim=8.*\[64, 16\]"):
        load_config(path)


def test_sudden_scenario_needs_a_shift_date():
    with pytest.raises(ConfigError, match="shift_date"):
        QuantrecConfig().with_overrides(feed={"scenario": "sudden"})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def _load(tmp_path, text: str) -> QuantrecConfig:
    path = tmp_path / "q.toml"
    path.write_text(text)
    return load_config(path)


def test_a_misspelt_feed_option_names_the_field_and_the_feed(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[feed]\nkind = "synthetic"\nrows_per_dya = 5\n')
    message = str(err.value)
    assert str(tmp_path / "q.toml") in message
    assert "feed.rows_per_dya is not an option of the synthetic feed (got 5)" in message
    assert "rows_per_day" in message  # the options it does take


def test_an_option_of_another_feed_names_the_field_the_kind_and_the_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[feed]\nkind = "movielens"\nscenario = "sudden"\n')
    assert (
        "feed.scenario is not an option of the movielens feed (got 'sudden'); "
        "options: path, min_rows"
    ) in str(err.value)


def test_an_unknown_kind_and_a_missing_required_option_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"feed\.kind: 'movielense' is not a feed.*movielens"):
        _load(tmp_path, '[feed]\nkind = "movielense"\n')
    with pytest.raises(ConfigError, match=r"feed\.spec: required by the table feed"):
        _load(tmp_path, '[feed]\nkind = "table"\n')
    with pytest.raises(ConfigError, match=r"feed\.path: required by the criteo feed"):
        _load(tmp_path, '[feed]\nkind = "criteo"\n')


def test_a_bad_feed_value_names_the_field_as_the_file_spells_it(tmp_path):
    with pytest.raises(ConfigError, match=r"feed\.rows_per_day: .*greater than 0.*\(got 0\)"):
        _load(tmp_path, "[feed]\nrows_per_day = 0\n")


def test_the_default_feed_is_the_synthetic_one_with_its_documented_defaults():
    feed = QuantrecConfig().feed
    assert isinstance(feed, SyntheticFeedConfig)
    assert (feed.rows_per_day, feed.scenario, feed.seed) == (100_000, "stable", 0)


def test_the_movielens_deployment_config_loads():
    config = load_config(REPO / "deploy" / "movielens.toml")
    assert config.feed == MovieLensFeedConfig()


def test_with_feed_keeps_the_kind_and_sets_options_ignoring_none():
    config = QuantrecConfig().with_feed(seed=7, rows_per_day=None)
    assert config.feed == SyntheticFeedConfig(seed=7)
    again = config.with_feed("synthetic", scenario="gradual")
    assert again.feed == SyntheticFeedConfig(seed=7, scenario="gradual")


def test_with_feed_switching_kind_starts_from_that_kinds_defaults():
    synthetic = QuantrecConfig().with_feed(seed=7)
    movielens = synthetic.with_feed("movielens", path="/data/ml-100k", scenario=None)
    assert movielens.feed == MovieLensFeedConfig(path="/data/ml-100k")
    assert movielens.with_feed("synthetic").feed == SyntheticFeedConfig()  # seed 7 is gone


def test_with_feed_refuses_an_option_the_kind_does_not_take():
    with pytest.raises(ConfigError) as err:
        QuantrecConfig().with_feed("movielens", scenario="sudden")
    assert (
        "feed.scenario is not an option of the movielens feed (got 'sudden'); "
        "options: path, min_rows"
    ) in str(err.value)
    with pytest.raises(ConfigError, match=r"feed\.kind: 'tabel' is not a feed"):
        QuantrecConfig().with_feed("tabel")


def test_with_overrides_routes_the_feed_through_with_feed():
    config = QuantrecConfig().with_overrides(
        feed={"kind": "movielens", "min_rows": 20}, training={"window_days": 9}
    )
    assert config.feed == MovieLensFeedConfig(min_rows=20)
    assert config.training.window_days == 9


def test_validation_tolerances_are_config_and_checked(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text("[validation]\nlabel_rate_factors = [0.2, 5.0]\n")
    assert load_config(path).validation.label_rate_factors == (0.2, 5.0)
    path.write_text("[validation]\nlabel_rate_factors = [2.0, 5.0]\n")
    with pytest.raises(ConfigError, match=r"validation.*label_rate_factors.*\[2.0, 5.0\]"):
        load_config(path)


@pytest.mark.parametrize(
    ("toml", "field", "value"),
    [
        ("[gate]\nquantization_ne_budget_rel = inf\n", "gate.quantization_ne_budget_rel", "inf"),
        ("[gate]\nchampion_ne_epsilon_rel = nan\n", "gate.champion_ne_epsilon_rel", "nan"),
        ("[drift]\npsi_severe = inf\n", "drift.psi_severe", "inf"),
        ("[validation]\ncardinality_factor = inf\n", "validation.cardinality_factor", "inf"),
    ],
)
def test_a_non_finite_number_is_refused_naming_the_field(tmp_path, toml, field, value):
    path = tmp_path / "q.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and field in message and value in message, message


def test_window_days_is_bounded(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[training]\nwindow_days = 100000\n")
    with pytest.raises(ConfigError, match=r"training\.window_days: .*366.*\(got 100000\)"):
        load_config(path)
    path.write_text("[training]\nwindow_days = 366\n")
    assert load_config(path).training.window_days == 366


def test_a_gate_without_rules_is_refused(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[gate]\nrules = []\n")
    with pytest.raises(ConfigError, match=r"gate\.rules is empty.*at least one rule"):
        load_config(path)


@pytest.mark.parametrize("name", ["a' or name='b", "x`y", "", "-lead", "a b"])
def test_a_model_name_that_would_change_a_filter_string_is_refused(tmp_path, name):
    path = tmp_path / "q.toml"
    path.write_text(f"[registry]\nmodel_name = {json.dumps(name)}\n")
    with pytest.raises(ConfigError, match=r"registry\.model_name"):
        load_config(path)


def test_the_effective_config_loads_again(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[registry]\nmodel_name = 'ctr.v2_a-1'\n")
    config = load_config(path)
    assert QuantrecConfig.model_validate_json(config.model_dump_json()) == config


def test_quantrec_config_exits_2_on_an_infinite_budget(tmp_path, capsys, restored_environ):
    from quantrec.flows.cli import main

    path = tmp_path / "q.toml"
    path.write_text("[gate]\nquantization_ne_budget_rel = inf\n")
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gate.quantization_ne_budget_rel must be a finite number; got inf" in err
