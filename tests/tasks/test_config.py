from datetime import date

import pytest

from quantrec.tasks.config import ConfigError, QuantrecConfig, load_config


def test_defaults_without_a_file():
    config = load_config(None)
    assert config.gate.quantization_ne_budget_rel == pytest.approx(0.0005)
    assert config.model.bottom_mlp[-1] == config.model.embedding_dim


def test_file_overrides_only_what_it_lists(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[training]\nwindow_days = 5\n[feed]\nscenario = "sudden"\nshift_date = 2026-01-05\n')
    config = load_config(path)
    assert config.training.window_days == 5
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
