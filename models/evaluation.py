"""Scoring on the run date: every variant and the champion on the same rows, overall and per
slice.

The run date is the freshest day none of the models trained on, so it is where they are
compared (and the gate decides). Slices (``models.slices``): new vs returning users, head vs
tail items, and one slice per value of each configured column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.baselines import Baselines
from quantrec.models.batch import Batch
from quantrec.models.metrics import (
    MetricError,
    Metrics,
    compute_metrics,
    normalized_entropy,
    undefined_reason,
)
from quantrec.models.names import CHAMPION_KEY, GROUND_TRUTH_KEY
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
    # baseline name -> click probabilities (B,): the yardsticks, never candidates
    baselines: dict[str, np.ndarray] = field(default_factory=dict)

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


def slice_roles(
    schema: FeatureSchema, user_column: str | None, item_column: str | None
) -> tuple[str | None, str | None]:
    """(user column, item column): the gate policy's, else the feed's schema's."""
    return user_column or schema.user, item_column or schema.item


def run_date_slices(
    frame: pd.DataFrame,
    window: Iterable[pd.DataFrame],
    *,
    user: str | None,
    item: str | None,
    head_traffic_share: float,
    slice_columns: tuple[str, ...],
    max_values: int,
) -> dict[str, np.ndarray]:
    """The run date's slice masks; ``window`` gives the training days' user and item
    columns (who is returning, which items are head)."""
    user = user if user in frame.columns else None
    item = item if item in frame.columns else None
    window = pd.concat(list(window), ignore_index=True) if (user or item) else pd.DataFrame()
    return slice_masks(
        frame,
        user_column=user,
        item_column=item,
        seen_users=window[user].explode().dropna().unique() if user else None,
        head_items=head_ids(window[item], head_traffic_share) if item else None,
        slice_columns=slice_columns,
        max_values=max_values,
    )


def evaluate(
    batch: Batch,
    variants: Mapping[str, object],
    *,
    slices: dict[str, np.ndarray],
    champion: tuple[object, Batch] | None,
    batch_size: int,
    threads: int,
    baselines: Baselines | None = None,
    truth: np.ndarray | None = None,
) -> Evaluation:
    """NE, AUC, log loss and calibration of each variant and of the champion (its model and
    the run date as its own schema reads it) on the same rows, beside the baselines' and,
    when the feed knows them (synthetic), the true click probabilities' (``ground_truth``:
    the best any model can reach). A metric undefined on these rows (one class) leaves
    that model out of ``metrics``."""
    labels = batch.labels.double().numpy()
    with torch_threads(threads):
        predictions = {
            name: predict_proba(model, batch, batch_size=batch_size)
            for name, model in variants.items()
        }
        if champion is not None:
            model, champion_batch = champion
            predictions[CHAMPION_KEY] = predict_proba(model, champion_batch, batch_size=batch_size)
    yardsticks = baselines.predict(batch) if baselines is not None else {}
    scored = {**predictions, **yardsticks}
    if truth is not None:
        if len(truth) != len(labels):
            raise ValueError(f"ground truth has {len(truth)} probabilities for {len(labels)} rows")
        scored[GROUND_TRUTH_KEY] = np.asarray(truth, dtype=np.float64)
    defined = undefined_reason(labels) is None
    return Evaluation(
        metrics={n: compute_metrics(labels, p) for n, p in scored.items()} if defined else {},
        predictions=predictions,
        labels=labels,
        slices=slices,
        baselines=yardsticks,
    )
