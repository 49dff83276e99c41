"""The precision search with its per-unit sensitivity measurements on a Dask task runner
(``[scale] task_runner = "dask"``: a LocalCluster of 2 worker processes x 1 thread) finds
the byte-identical plan of the sequential search; only the job folder's path reaches the
workers.

Run in a fresh interpreter with its own temporary Prefect server, as a flow run would: the
workers are spawned processes that report their task runs to it (about two minutes on two
busy cores, hence ``slow``).

    python -m pytest -q -m slow tests/flows/test_dask_search.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("prefect_dask", reason="prefect-dask is in the [scale] extra (make setup)")

SCRIPT = """
import json, os, sys

import numpy as np
import pandas as pd
import torch
from prefect import flow
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.search import search_precision_plan
from quantrec.models.search_evaluate import Evaluator
from quantrec.models.train import torch_threads, train_dlrm
from quantrec.tasks.config import ScaleConfig
from quantrec.tasks.fanout import sensitivity_measure

SCHEMA = FeatureSchema(
    dense=("x",),
    categorical=tuple(CategoricalFeature(name=f"c{k}", hash_size=50 + 7 * k) for k in range(4)),
)


def batch(rows, seed):
    rng = np.random.default_rng(seed)
    ids = {f"c{k}": rng.integers(0, 40, rows) for k in range(4)}
    logit = 0.8 * np.sin(ids["c0"]) + 0.5 * np.cos(ids["c1"]) - 1.0
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({"label": label, "x": rng.normal(0, 1, rows), **ids})
    return batch_from_frame(frame, SCHEMA)


@flow(name="search-test")
def search(model, scale):
    with torch_threads(1):
        return search_precision_plan(
            model,
            batch(1024, 1),
            calibration=batch(512, 2),
            confirmation=batch(1024, 3),
            linear_candidates=("fp16", "int8", "int8_static_minmax"),
            table_candidates=("int8", "int4", "int2"),
            measure=sensitivity_measure(scale, threads=1),
        )


def main():
    # Finalists within 1 % of bytes are told apart by wall-clock latency (measured in the
    # flow's process either way); one latency for all leaves only the measurements.
    Evaluator.latency_ms = lambda *_args, **_kw: 1.0
    torch.manual_seed(0)
    model = DLRM.from_schema(SCHEMA, embedding_dim=8, bottom_mlp=[8, 8], top_mlp=[8])
    train_dlrm(model, batch(2048, 0), epochs=2, batch_size=64, learning_rate=0.02, seed=0)
    with prefect_test_harness(server_startup_timeout=180):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the workers' too
        runs = {
            name: search(model, scale)
            for name, scale in (
                ("sequential", ScaleConfig()),
                ("dask", ScaleConfig(task_runner="dask", dask_workers=2)),
            )
        }
    out = {
        name: {"plan": r.chosen.to_json(), "record": json.dumps(r.to_dict())}
        for name, r in runs.items()
    }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_the_dask_search_finds_the_sequential_plan(tmp_path):
    script = tmp_path / "dask_search.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    runs = json.loads(line.removeprefix("RESULT "))
    sequential, dask = runs["sequential"], runs["dask"]
    record = json.loads(dask["record"])
    assert (
        record["sensitivity"]
        and record["sensitivity"] == json.loads(sequential["record"])["sensitivity"]
    )
    assert dask["plan"] == sequential["plan"]  # byte for byte
    assert dask["record"] == sequential["record"]
