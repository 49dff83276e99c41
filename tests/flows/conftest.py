import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test (starting one costs ~15 s)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield
