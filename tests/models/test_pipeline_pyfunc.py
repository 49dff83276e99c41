"""The pipeline model: saved as weights and JSON, loaded by MLflow's pyfunc flavour, it
serves the same top k with the same scores as the in-process pipeline."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from quantrec.models.artifact import ArtifactError
from quantrec.models.pipeline import PipelineError, Stage, two_stage
from quantrec.models.pipeline_pyfunc import (
    LOADER_MODULE,
    PIPELINE_FILE,
    QUERY_COLUMN,
    PipelineScorer,
    SavedStage,
    load_pipeline,
    save_pipeline,
    serving_model,
)
from quantrec.models.quantize import build_variant
from quantrec.models.queries import CandidateBatcher, candidate_frame, day_queries

ITEMS = [f"item-{i}" for i in range(30)]
KEEP, K = 12, 5


@pytest.fixture
def day(make_frame) -> pd.DataFrame:
    return make_frame(rows=300, seed=5)


@pytest.fixture
def catalogue() -> pd.DataFrame:
    return pd.DataFrame({"item": ITEMS, "price": np.linspace(5.0, 20.0, len(ITEMS))})


@pytest.fixture
def models(make_model, make_batch):
    ranker = make_model(seed=0)
    # Trained weights would be fitted; any fixed weights serve for a round trip, but the
    # dense transform must not be the identity, or a lost buffer would go unnoticed.
    ranker.dense_arch.transform.fit([make_batch(rows=256, seed=1).dense])
    return ranker, build_variant(ranker, "int8")


def _saved(models, tiny_schema, tmp_path):
    ranker, int8 = models
    stages = [
        SavedStage(Stage("int8", int8, KEEP), "int8", tiny_schema),
        SavedStage(Stage("fp32", ranker, K), "fp32", tiny_schema),
    ]
    return save_pipeline(stages, tmp_path / "pipeline", schema=tiny_schema, item_column="item")


def _request(day, catalogue, count):
    queries = day_queries(
        day, day="d", user_column="user", item_column="item", label_column="label"
    )
    frames = [
        candidate_frame(q.context, catalogue).drop(columns=["label"]).assign(query=str(q.user))
        for q in queries[:count]
    ]
    return queries[:count], pd.concat(frames, ignore_index=True)


def _expected(models, day, catalogue, queries, tiny_schema):
    ranker, int8 = models
    pipeline = two_stage(int8, ranker, keep=KEEP, k=K, filter_name="int8")
    batcher = CandidateBatcher(catalogue, tiny_schema, item_column="item", template=day.iloc[[0]])
    return [pipeline.rank(batcher.batch(q), batcher.items) for q in queries]


def test_mlflow_pyfunc_round_trip_serves_the_in_process_pipelines_lists(
    models, day, catalogue, tiny_schema, tmp_path
) -> None:
    directory = _saved(models, tiny_schema, tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # Artifacts in tmp_path too: the default root is ./mlruns of the working directory.
        experiment = mlflow.create_experiment("pipeline", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(
                name="pipeline", loader_module=LOADER_MODULE, data_path=str(directory)
            )
        served = mlflow.pyfunc.load_model(info.model_uri).predict(_request(day, catalogue, 4)[1])
    finally:
        mlflow.set_tracking_uri(None)
    queries, _ = _request(day, catalogue, 4)
    expected = _expected(models, day, catalogue, queries, tiny_schema)
    assert served.columns.tolist() == [QUERY_COLUMN, "item", "score", "rank"]
    assert served[QUERY_COLUMN].unique().tolist() == [str(q.user) for q in queries]
    for query, want in zip(queries, expected):
        got = served[served[QUERY_COLUMN] == str(query.user)]
        assert got["item"].tolist() == want.items.tolist()
        assert got["rank"].tolist() == list(range(1, K + 1))
        np.testing.assert_array_equal(got["score"].to_numpy(), want.scores)


def test_saved_pipeline_holds_weights_and_json_only(models, tiny_schema, tmp_path) -> None:
    directory = _saved(models, tiny_schema, tmp_path)
    recipe = json.loads((directory / PIPELINE_FILE).read_text())
    assert [s["name"] for s in recipe["stages"]] == ["int8", "fp32"]
    assert [s["keep"] for s in recipe["stages"]] == [KEEP, K] and recipe["k"] == K
    for entry in recipe["stages"]:
        weights = torch.load(directory / entry["folder"] / "weights.pt", weights_only=True)
        assert all(isinstance(t, torch.Tensor) for t in weights.values())
    suffixes = {p.suffix for p in directory.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".pt"}


def test_unfused_and_fused_loads_serve_the_same(models, day, catalogue, tiny_schema, tmp_path):
    directory = _saved(models, tiny_schema, tmp_path)
    _, request = _request(day, catalogue, 3)
    fused = PipelineScorer(load_pipeline(directory)).predict(request)
    plain = PipelineScorer(load_pipeline(directory, fused=False)).predict(request)
    pd.testing.assert_frame_equal(fused, plain, check_exact=True)


def test_a_single_query_needs_no_query_column(models, day, catalogue, tiny_schema, tmp_path):
    directory = _saved(models, tiny_schema, tmp_path)
    queries, request = _request(day, catalogue, 1)
    served = PipelineScorer(load_pipeline(directory)).predict(request.drop(columns=[QUERY_COLUMN]))
    want = _expected(models, day, catalogue, queries, tiny_schema)[0]
    assert served.columns.tolist() == ["item", "score", "rank"]
    assert served["item"].tolist() == want.items.tolist()


def test_bad_pipelines_and_requests_are_refused(models, day, catalogue, tiny_schema, tmp_path):
    ranker, int8 = models
    growing = [
        SavedStage(Stage("int8", int8, 3), "int8", tiny_schema),
        SavedStage(Stage("fp32", ranker, 5), "fp32", tiny_schema),
    ]
    with pytest.raises(PipelineError, match="no more than the stage before"):
        save_pipeline(growing, tmp_path / "bad", schema=tiny_schema, item_column="item")
    with pytest.raises(PipelineError, match="not a categorical feature"):
        save_pipeline(growing[1:], tmp_path / "bad", schema=tiny_schema, item_column="price")
    directory = _saved(models, tiny_schema, tmp_path)
    _, request = _request(day, catalogue, 1)
    with pytest.raises(PipelineError, match="lacks the item column 'item'"):
        PipelineScorer(load_pipeline(directory)).predict(request.drop(columns=["item"]))
    with pytest.raises(ArtifactError, match="was it written by save_pipeline"):
        load_pipeline(tmp_path)


def test_a_shared_context_pipeline_serves_what_its_serving_stages_serve(
    models, day, catalogue, tiny_schema, tmp_path
) -> None:
    ranker, int8 = models
    stages = [
        SavedStage(Stage("int8", int8, KEEP), "int8", tiny_schema),
        SavedStage(Stage("fp32", ranker, K), "fp32", tiny_schema),
    ]
    directory = save_pipeline(
        stages, tmp_path / "shared", schema=tiny_schema, item_column="item", shared_context=True
    )
    queries, request = _request(day, catalogue, 3)
    served = PipelineScorer(load_pipeline(directory)).predict(request)
    in_process = two_stage(
        serving_model(int8, shared_context=True),
        serving_model(ranker, shared_context=True),
        keep=KEEP,
        k=K,
        filter_name="int8",
    )
    batcher = CandidateBatcher(catalogue, tiny_schema, item_column="item", template=day.iloc[[0]])
    plain = _expected(models, day, catalogue, queries, tiny_schema)
    for query, want in zip(queries, plain):
        got = served[served[QUERY_COLUMN] == str(query.user)]
        exact = in_process.rank(batcher.batch(query), batcher.items)
        assert got["item"].tolist() == exact.items.tolist() == want.items.tolist()
        np.testing.assert_array_equal(got["score"].to_numpy(), exact.scores)
        np.testing.assert_allclose(exact.scores, want.scores, rtol=1e-5)
