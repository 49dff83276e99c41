"""Session-scoped inputs shared by the data-check tests: the schema and one small day.

Great Expectations costs ~5 s to import; ``data_checks.contract`` keeps one ephemeral
context per process, so only the first validation of the session pays it.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from quantrec.data_checks.schema import FeatureSchema
from quantrec.feeds.synthetic import SyntheticFeed

DAY = date(2024, 2, 1)


@pytest.fixture(scope="session")
def schema() -> FeatureSchema:
    return SyntheticFeed().schema()


@pytest.fixture(scope="session")
def good_day() -> pd.DataFrame:
    return SyntheticFeed(seed=11, rows_per_day=600).day(DAY)
