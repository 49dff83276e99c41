"""feeds/ and data_checks/ must import without Prefect, MLflow or torch (layout rule)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("prefect", "mlflow", "torch")


def test_feeds_and_data_checks_import_no_orchestration_or_model_code() -> None:
    code = (
        "import sys\n"
        "import feeds.synthetic, feeds.lake, feeds.base, feeds.movielens, feeds.criteo\n"
        "import feeds.table, feeds.table_example, data_checks.contract, data_checks.drift\n"
        "import data_checks.reference, data_checks.partition, data_checks.render\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
