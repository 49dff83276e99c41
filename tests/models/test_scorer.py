"""Scoring: float64 probabilities with fixed batching, metrics that match compute_metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantrec.models.metrics import compute_metrics
from quantrec.models.quantize import quantize_int8
from quantrec.models.scorer import predict_proba, score


def test_predict_proba_is_float64_deterministic_and_restores_mode(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=300)
    model.train()
    probs = predict_proba(model, batch, batch_size=128)
    assert probs.dtype == np.float64 and probs.shape == (300,)
    assert ((probs > 0) & (probs < 1)).all()
    assert model.training
    np.testing.assert_array_equal(probs, predict_proba(model, batch, batch_size=128))
    with torch.inference_mode():
        expected = torch.sigmoid(model.eval()(batch).double()).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_int8_probabilities_depend_only_on_the_fixed_slicing(make_model, make_batch) -> None:
    quantized, batch = quantize_int8(make_model()), make_batch(rows=300)
    first = predict_proba(quantized, batch, batch_size=100)
    np.testing.assert_array_equal(first, predict_proba(quantized, batch, batch_size=100))
    # Another slicing changes activation scales: close, but not promised to be identical.
    np.testing.assert_allclose(first, predict_proba(quantized, batch, batch_size=7), atol=0.02)


def test_score_matches_compute_metrics(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=400)
    metrics = score(model, batch, batch_size=64)
    expected = compute_metrics(batch.labels.numpy(), predict_proba(model, batch, batch_size=64))
    assert metrics == expected
    assert metrics.rows == 400


def test_empty_batch_gives_no_probabilities_and_bad_batch_size_raises(
    make_model, make_batch
) -> None:
    model, batch = make_model(), make_batch(rows=4)
    assert predict_proba(model, batch.slice(0, 0)).shape == (0,)
    with pytest.raises(ValueError, match="got 0"):
        predict_proba(model, batch, batch_size=0)
