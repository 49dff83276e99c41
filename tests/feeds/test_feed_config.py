"""The [feed] section: one config class per feed, chosen by kind, each building its feed."""

from __future__ import annotations

import ast
import inspect
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError

import quantrec.feeds
from quantrec.feeds import FEED_CONFIGS, FEED_KINDS, FeedConfig
from quantrec.feeds.criteo import CriteoFeed, CriteoFeedConfig
from quantrec.feeds.criteo_schema import criteo_schema
from quantrec.feeds.movielens import MovieLensFeed, MovieLensFeedConfig
from quantrec.feeds.synthetic import SyntheticFeed, SyntheticFeedConfig
from quantrec.feeds.table import TableFeed, TableFeedConfig

DAY = date(2024, 3, 1)
FEEDS = {
    "synthetic": SyntheticFeed,
    "movielens": MovieLensFeed,
    "criteo": CriteoFeed,
    "table": TableFeed,
}
SECTION = TypeAdapter(FeedConfig)


def test_every_kind_has_a_config_class_tagged_with_its_kind() -> None:
    assert FEED_KINDS == ("synthetic", "movielens", "criteo", "table")
    for kind, config in FEED_CONFIGS.items():
        assert config.model_fields["kind"].default == kind
        assert "kind" not in config.option_names()


@pytest.mark.parametrize("kind", FEED_KINDS)
def test_options_are_the_feeds_own_parameters_with_the_feeds_defaults(kind: str) -> None:
    """Each option reaches the feed's constructor, and a default set in both places agrees."""
    parameters = inspect.signature(FEEDS[kind]).parameters
    config = FEED_CONFIGS[kind]
    for name in config.option_names():
        assert name in parameters, f"{kind}: option {name} is not a parameter of the feed"
        field, parameter = config.model_fields[name], parameters[name]
        assert field.description, f"{kind}: option {name} is undocumented"
        if field.is_required() or parameter.default is inspect.Parameter.empty:
            continue
        if not (kind == "criteo" and name == "rows_per_day"):  # the config caps Criteo days
            assert field.default == parameter.default, f"{kind}.{name}"


def test_a_section_without_kind_is_the_synthetic_feed_with_its_defaults() -> None:
    feed = SECTION.validate_python({"seed": 3})
    assert feed == SyntheticFeedConfig(seed=3)
    assert (feed.rows_per_day, feed.scenario, feed.seed) == (100_000, "stable", 3)
    assert SECTION.validate_python({"kind": "movielens"}) == MovieLensFeedConfig()


def test_a_misspelt_or_misplaced_option_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError, match="rows_per_dya"):
        SECTION.validate_python({"kind": "synthetic", "rows_per_dya": 5})
    with pytest.raises(ValidationError, match="scenario"):
        SECTION.validate_python({"kind": "movielens", "scenario": "sudden"})


def test_what_a_feed_needs_is_checked_by_its_class() -> None:
    with pytest.raises(ValidationError, match="needs shift_date"):
        SyntheticFeedConfig(scenario="sudden")
    assert SyntheticFeedConfig(scenario="gradual", shift_date=DAY).shift_date == DAY
    with pytest.raises(ValidationError, match="spec"):
        TableFeedConfig()
    with pytest.raises(ValidationError, match="path"):
        CriteoFeedConfig()


def test_the_synthetic_config_builds_the_same_days_as_the_feed() -> None:
    config = SyntheticFeedConfig(seed=5, rows_per_day=500, scenario="sudden", shift_date=DAY)
    built = config.build(DAY)
    direct = SyntheticFeed(seed=5, rows_per_day=500, scenario="sudden", shift_date=DAY)
    pd.testing.assert_frame_equal(built.day(DAY), direct.day(DAY))


def _criteo_line() -> str:
    return "\t".join(["1", *["3"] * 13, *["0a1b2c3d"] * 26])


def test_a_criteo_file_holds_the_run_date_unless_start_date_dates_day_files(tmp_path: Path) -> None:
    (tmp_path / "day_0").write_text(_criteo_line() + "\n")
    (tmp_path / "day_1").write_text(_criteo_line() + "\n")
    one = CriteoFeedConfig(path=str(tmp_path / "day_1")).build(DAY)
    assert one.available_days() == [DAY]
    days = CriteoFeedConfig(path=str(tmp_path / "day_*"), start_date=DAY).build(date(2030, 1, 1))
    assert days.available_days() == [DAY, date(2024, 3, 2)]
    assert days.rows_per_day == 100_000  # the config's row cap
    assert days.schema() == criteo_schema()


def test_configs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SyntheticFeedConfig().seed = 3  # type: ignore[misc]


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found


def test_feed_modules_share_the_criteo_schema_without_importing_each_other() -> None:
    """Only the registry (the package) imports the feed modules: no import cycle."""
    folder = Path(quantrec.feeds.__file__).parent
    modules = {kind: folder / f"{kind}.py" for kind in FEED_KINDS}
    for kind, module in modules.items():
        imported = _imports(module)
        assert "quantrec.feeds" not in imported, f"{kind}.py imports the registry"
        others = {f"quantrec.feeds.{other}" for other in FEED_KINDS if other != kind}
        assert not imported & others, f"{kind}.py imports {imported & others}"
    # The same contract; only the synthetic feed names two ids as its users and items.
    synthetic = SyntheticFeed().schema()
    assert (synthetic.user, synthetic.item) == ("cat_3", "cat_2")
    assert synthetic.model_copy(update={"user": None, "item": None}) == criteo_schema()
