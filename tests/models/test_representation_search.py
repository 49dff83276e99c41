"""The representation search: candidates sized to the budget, the pick per table, a tiny
search end to end and its record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantrec.models.dlrm import DLRM
from quantrec.models.representation_candidates import candidate_specs
from quantrec.models.representation_search import (
    CandidateResult,
    RepresentationBudget,
    RepresentationSearch,
    largest_tables,
    ne_change_interval,
    pick,
    search_representations,
)
from quantrec.models.representations import build_representation, representation_bytes


@pytest.mark.parametrize("ratio", [0.25, 0.1])
def test_every_candidate_fits_its_byte_budget(ratio) -> None:
    n, d = 50_000, 16
    specs = candidate_specs(
        n, d, bytes_ratio=ratio, kinds=("hashed", "qr-mult", "qr-concat", "dhe")
    )
    assert [s.kind for s in specs] == ["hashed", "qr", "qr", "dhe"]
    for spec in specs:
        module = build_representation(spec, num_embeddings=n, embedding_dim=d)
        assert representation_bytes(module) <= ratio * n * d * 4, spec
    qr = specs[1]
    # The fewest collisions that fit: one fewer would not.
    assert np.ceil(n / (qr.collisions - 1)) + qr.collisions - 1 > ratio * n


def test_a_hybrid_is_a_candidate_only_above_the_full_tables_bytes() -> None:
    assert candidate_specs(4096, 8, bytes_ratio=0.25, kinds=("hybrid-add",)) == []
    (hybrid,) = candidate_specs(4096, 8, bytes_ratio=1.25, kinds=("hybrid-add",))
    module = build_representation(hybrid, num_embeddings=4096, embedding_dim=8)
    assert 4096 * 8 * 4 < representation_bytes(module) <= 1.25 * 4096 * 8 * 4


def _result(feature: str, label: str, ratio: float, change: float) -> CandidateResult:
    return CandidateResult(
        feature=feature,
        label=label,
        spec={"kind": "hashed", "rows": int(ratio * 100)},
        bytes=int(ratio * 1000),
        table_bytes=1000,
        ne=0.8 * (1 + change),
        ne_change_rel=change,
        train_seconds=1.0,
    )


def test_the_fewest_bytes_within_the_ne_budget_win_else_the_full_table() -> None:
    results = [
        _result("a", "small-but-bad", 0.05, 0.01),
        _result("a", "small-and-good", 0.1, 0.0005),
        _result("a", "big-and-good", 0.2, -0.001),
        _result("b", "bad", 0.1, 0.004),
        _result("c", "too-big", 0.5, -0.01),
    ]
    chosen, reasons = pick(results, RepresentationBudget(), searched=["a", "b", "c"])
    assert chosen == {"a": {"kind": "hashed", "rows": 10}}
    assert reasons["a"].startswith("small-and-good")
    assert reasons["b"].startswith("full table: no candidate within NE 0.10%")
    assert "closest bad" in reasons["b"]
    assert reasons["c"] == "full table: no candidate fits 0.25x bytes"

    # Backed off, a table takes its next candidate by bytes, then the full table.
    chosen, _ = pick(
        results, RepresentationBudget(), searched=["a"], excluded={("a", "small-and-good")}
    )
    assert chosen == {"a": {"kind": "hashed", "rows": 20}}
    excluded = {("a", "small-and-good"), ("a", "big-and-good")}
    chosen, reasons = pick(results, RepresentationBudget(), searched=["a"], excluded=excluded)
    assert chosen == {} and reasons["a"].startswith("full table")

    quality = RepresentationBudget(bytes_ratio=1.25, objective="quality")
    chosen, _ = pick(results, quality, searched=["a", "b", "c"])
    assert chosen == {"a": {"kind": "hashed", "rows": 20}, "c": {"kind": "hashed", "rows": 50}}


def test_ne_change_interval_is_zero_for_equal_predictions_and_positive_for_worse() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.6, 4000)
    labels = (rng.random(4000) < truth).astype(np.float64)
    assert ne_change_interval(labels, truth, truth) == (0.0, 0.0)
    low, high = ne_change_interval(labels, np.full(4000, labels.mean()), truth)
    assert 0 < low < high


def _model(schema, representations=None) -> DLRM:
    torch.manual_seed(0)
    return DLRM(
        num_dense=len(schema.dense),
        table_sizes=schema.hash_sizes,
        embedding_dim=4,
        bottom_mlp=[8, 4],
        top_mlp=[8],
        feature_names=schema.categorical_names,
        first_order=True,
        representations=representations,
    )


def test_a_tiny_search_records_its_candidates_and_keeps_the_budget(tiny_schema, make_batch):
    lines = []
    search = search_representations(
        lambda reps: _model(tiny_schema, reps),
        make_batch(rows=2048, seed=0),
        make_batch(rows=1024, seed=1),
        seed=0,
        tables=2,
        budget=RepresentationBudget(ne_rel=0.01, bytes_ratio=0.5),
        kinds=("hashed", "qr-mult"),
        train_options={"epochs": 1, "batch_size": 64, "learning_rate": 0.01},
        progress=lines.append,
    )
    assert largest_tables(_model(tiny_schema), 2) == ["user", "item"]
    assert {c.feature for c in search.candidates} == {"user", "item"}
    assert set(search.reasons) == {"user", "item"}
    assert len(lines) == 1 + len(search.candidates) + bool(search.chosen) + len(search.backed_off)
    assert search.epochs == 1  # the reference's kept epochs, used by every later run
    if search.chosen:  # the confirmation bounds the choice as a whole
        assert search.confirmed_change_rel <= 0.01
    assert all(c.ne_change_low <= c.ne_change_rel <= c.ne_change_high for c in search.candidates)
    for feature, spec in search.chosen.items():
        result = next(c for c in search.candidates if c.feature == feature and c.spec == spec)
        assert result.ne_change_rel <= 0.01 and result.bytes_ratio <= 0.5
    assert search.searched_bytes <= search.searched_table_bytes
    assert RepresentationSearch.from_json(search.to_json()) == search
    _model(tiny_schema, search.representations())  # the record builds a model


def test_a_record_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format 7"):
        RepresentationSearch.from_json('{"format_version": 7}')
