"""Scoring: click probabilities and quality metrics of a model on a labelled Batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.metrics import Metrics, compute_metrics


def predict_proba(model: nn.Module, batch: Batch, *, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities, float64 shape (B,).

    Rows are scored in fixed consecutive slices of ``batch_size`` so the result depends
    only on the weights, the rows and ``batch_size``: int8 dynamic quantization picks its
    activation scale per slice, so a different slicing would change the numbers. A model
    reloaded from its artifact therefore reproduces the same probabilities and NE exactly.
    The model's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [
                torch.sigmoid(model(batch.slice(start, start + batch_size)).double())
                for start in range(0, len(batch), batch_size)
            ]
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).numpy()


def score(model: nn.Module, batch: Batch, *, batch_size: int = 8192) -> Metrics:
    """NE, AUC, log loss and calibration of ``model`` on ``batch`` (see ``predict_proba``)."""
    probs = predict_proba(model, batch, batch_size=batch_size)
    return compute_metrics(batch.labels.double().numpy(), probs)
