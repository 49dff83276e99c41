"""Scoring on the run date: every variant and the champion on the same rows, overall and per
slice.

The run date is the freshest day none of the models trained on, so it is where they are
compared (and the gate decides). Slices (``models.slices``): new vs returning users, head vs
tail items, and one slice per value of each configured column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.batch import Batch
from quantrec.models.metrics import MetricError, Metrics, compute_metrics, normalized_entropy
from quantrec.models.names import CHAMPION_KEY
from quantrec.models.scorer import predict_proba
from quantrec.models.slices import head_ids, slice_masks
from quantrec.models.train import torch_threads



@dataclass
class Evaluation:
    """Every variant's (and the champion's) scores on the run date's rows."""

    metrics: dict[str, Metrics]
    predictions: dict[str, np.ndarray]  # name -> click probabilities, float64 (B,)
    labels: np.ndarray  # float64 (B,) 0/1
    slices: dict[str, np.ndarray]  # slice name -> bool (B,)

    @property
    def candidates(self) -> list[str]:
        """The run's own variants (every scored model but the champion)."""
        return [n for n in self.predictions if n != CHAMPION_KEY]

    def slice_table(self) -> pd.DataFrame:
        """NE of each model on each slice: columns slice, variant, rows, ne (NaN where a
        slice holds one class only)."""
        rows = []
        for name, mask in self.slices.items():
            for variant, probs in self.predictions.items():
                try:
                    ne = normalized_entropy(self.labels[mask], probs[mask])
                except MetricError:
                    ne = float("nan")
                rows.append((name, variant, int(mask.sum()), ne))
        return pd.DataFrame(rows, columns=["slice", "variant", "rows", "ne"])


def slice_roles(schema: FeatureSchema, user_column: str | None,
                item_column: str | None) -> tuple[str | None, str | None]:
    """(user column, item column): the gate policy's, else the feed's schema's."""
    return user_column or schema.user, item_column or schema.item


def run_date_slices(frame: pd.DataFrame, window: Iterable[pd.DataFrame], *, user: str | None,
                    item: str | None, head_traffic_share: float,
                    slice_columns: tuple[str, ...], max_values: int) -> dict[str, np.ndarray]:
    """The run date's slice masks; ``window`` gives the training days' user and item
    columns (who is returning, which items are head)."""
    user = user if user in frame.columns else None
    item = item if item in frame.columns else None
    window = pd.concat(list(window), ignore_index=True) if (user or item) else pd.DataFrame()
    return slice_masks(
        frame, user_column=user, item_column=item,
        seen_users=window[user].explode().dropna().unique() if user else None,
        head_items=head_ids(window[item], head_traffic_share) if item else None,
        slice_columns=slice_columns, max_values=max_values,
    )


def evaluate(batch: Batch, variants: Mapping[str, object], *, slices: dict[str, np.ndarray],
             champion: tuple[object, Batch] | None, batch_size: int,
             threads: int) -> Evaluation:
    """NE, AUC, log loss and calibration of each variant and of the champion (its model and
    the run date as its own schema reads it) on the same rows."""
    labels = batch.labels.double().numpy()
    with torch_threads(threads):
        predictions = {name: predict_proba(model, batch, batch_size=batch_size)
                       for name, model in variants.items()}
        if champion is not None:
            model, champion_batch = champion
            predictions[CHAMPION_KEY] = predict_proba(model, champion_batch,
                                                      batch_size=batch_size)
    return Evaluation(metrics={n: compute_metrics(labels, p) for n, p in predictions.items()},
                      predictions=predictions, labels=labels, slices=slices)
