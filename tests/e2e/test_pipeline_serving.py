"""End to end: a run with [pipeline] on registers a two-stage pipeline, and
``mlflow models serve`` on 127.0.0.1 answers a query for it (a user of the run date
against the window's items) with the list the pipeline serves in process.

    python -m pytest -q -m e2e tests/e2e/test_pipeline_serving.py
"""

from __future__ import annotations

import json
import urllib.request
from datetime import date, timedelta

import mlflow
import pandas as pd
import pytest

from quantrec.models.pipeline_plan import day_catalogue
from quantrec.models.queries import candidate_frame, day_queries

from .conftest import BIN, TINY_TOML, free_port, http_ok, spawn, stop_group, wait_until

RUN_DATE = date(2026, 3, 3)
# 20k rows a day, a generous gate: a low-precision variant passes, so a filter exists.
PIPELINE_TOML = (
    TINY_TOML.replace("rows_per_day = 3000", "rows_per_day = 20000")
    + """
[gate]
quantization_ne_budget_rel = 0.05
champion_ne_epsilon_rel = 0.05
baseline_ne_margin_rel = 0.1

[pipeline]
enabled = true
queries = 30
timing_queries = 8
load_queries = 8
load_seconds = 1.0
keeps = [50, 200]
"""
)


@pytest.mark.e2e
def test_mlflow_models_serve_answers_a_query_for_the_registered_pipeline(quantrec, tmp_path):
    quantrec.config.write_text(PIPELINE_TOML)
    finished = quantrec.run("run", "--date", RUN_DATE.isoformat(), "--json", timeout_s=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    pipeline = finished.record()["pipeline"]
    assert pipeline and pipeline["passed"], pipeline
    print(f"pipeline plan: {pipeline['reason']}; checks {pipeline['checks']}")
    uri = f"models:/{pipeline['model']}/{pipeline['version']}"

    lake = quantrec.home / "lake"
    day = pd.read_parquet(lake / f"day={RUN_DATE}")
    window = [pd.read_parquet(lake / f"day={RUN_DATE - timedelta(days=d)}") for d in (2, 1)]
    item, user = "cat_2", "cat_3"  # the synthetic feed's item and user roles
    query = day_queries(day, day="d", user_column=user, item_column=item, label_column="label")[0]
    request = candidate_frame(query.context, day_catalogue(window, item_column=item))
    request = request.drop(columns=["label"])

    port = free_port()
    env = quantrec.env(MLFLOW_TRACKING_URI=f"sqlite:///{quantrec.home / 'mlflow.db'}")
    server = spawn(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        log=tmp_path / "serve.log",
    )
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/ping"),
            timeout_s=180,
            what="mlflow models serve",
            alive=server,
        )
        body = json.dumps({"dataframe_split": request.to_dict(orient="split")}).encode()
        asked = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(asked, timeout=60) as response:
            answer = json.loads(response.read())["predictions"]
    finally:
        stop_group(server)
    served = pd.DataFrame(answer)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "m"))
    finally:
        mlflow.set_tracking_uri(None)
    expected = mlflow.pyfunc.load_model(local).predict(request)  # the same model, in process
    print(f"served {len(served)} items for user {query.user}: {served.head(3).to_dict('records')}")
    assert served.columns.tolist() == ["item", "score", "rank"]
    assert served["item"].tolist() == expected["item"].tolist()
    assert served["rank"].tolist() == list(range(1, len(served) + 1))
    pd.testing.assert_series_equal(served["score"], expected["score"], rtol=1e-12)
