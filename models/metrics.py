"""Click-prediction quality: normalized entropy, log loss, AUC, calibration.

All functions take ``labels`` (shape (B,), 0/1) and ``probs`` (shape (B,), click
probabilities in [0, 1]) and compute in float64.

Single-class labels: NE, AUC and calibration are undefined when every label is the same
(the click-rate entropy and the observed click rate can be 0, and no positive/negative pair
exists). They raise ``MetricError`` instead of returning NaN, because a NaN would compare
False against any gate threshold and silently pass or fail a promotion. A caller that must
not stop on such a set (a small slice, a day or a held-out half without clicks) asks
``undefined_reason`` first and records the measurement as skipped, with that reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

# Keeps log(p) finite for confident mistakes; the value used in DLRM reference evaluations.
PROB_CLIP = 1e-7


class MetricError(ValueError):
    """Labels or probabilities cannot be scored (empty, mismatched, single-class, out of range)."""


def _checked(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if labels.shape != probs.shape:
        raise MetricError(
            f"labels and probs differ in length: {labels.shape[0]} vs {probs.shape[0]}"
        )
    if labels.size == 0:
        raise MetricError("cannot score an empty set: labels and probs have 0 rows")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise MetricError(f"labels must be 0/1, found {np.unique(labels)[:5].tolist()}")
    if not ((probs >= 0.0) & (probs <= 1.0)).all():
        bad = probs[~((probs >= 0.0) & (probs <= 1.0))][:5]
        raise MetricError(f"probs must lie in [0, 1] (NaN is not allowed), found {bad.tolist()}")
    return labels, probs


def undefined_reason(labels: np.ndarray) -> str | None:
    """None when NE, AUC and calibration are defined on ``labels`` (shape (B,), 0/1), else
    why not: no rows, or a single class (every label 0, or every label 1)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if labels.size == 0:
        return "there are no rows"
    clicks = int(labels.sum())
    if clicks == 0 or clicks == labels.size:
        return (
            f"every label is {int(labels[0])} ({labels.size} rows, {clicks} clicks); "
            "they need clicks and non-clicks"
        )
    return None


def _require_both_classes(labels: np.ndarray, what: str) -> None:
    reason = undefined_reason(labels)
    if reason is not None:
        raise MetricError(f"{what} is undefined: {reason}")


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to [1e-7, 1 - 1e-7].

    Hand-written rather than ``sklearn.metrics.log_loss`` so that the clip matches
    ``normalized_entropy`` exactly (sklearn clips at the dtype's epsilon).
    """
    labels, probs = _checked(labels, probs)
    p = np.clip(probs, PROB_CLIP, 1.0 - PROB_CLIP)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log1p(-p)))


def normalized_entropy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Log loss divided by the entropy of the observed click rate (He et al. 2014).

    1.0 means no better than always predicting the click rate; lower is better. Unlike
    log loss it is comparable across days whose click rates differ.
    """
    labels, probs = _checked(labels, probs)
    _require_both_classes(labels, "normalized entropy")
    rate = labels.mean()
    rate_entropy = -(rate * np.log(rate) + (1.0 - rate) * np.log1p(-rate))
    return log_loss(labels, probs) / float(rate_entropy)


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``)."""
    labels, probs = _checked(labels, probs)
    _require_both_classes(labels, "AUC")
    return float(roc_auc_score(labels, probs))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted probability over the observed click rate; 1.0 is calibrated."""
    labels, probs = _checked(labels, probs)
    _require_both_classes(labels, "calibration")
    return float(probs.mean() / labels.mean())


@dataclass(frozen=True)
class Metrics:
    """Quality of one model on one labelled set.

    Attributes:
        ne: normalized entropy (lower is better).
        auc: ROC AUC.
        log_loss: mean log loss in nats.
        calibration: mean prediction / click rate.
        rows: number of scored samples.
        click_rate: mean label.
    """

    ne: float
    auc: float
    log_loss: float
    calibration: float
    rows: int
    click_rate: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain Python numbers, ready for JSON or an experiment tracker."""
        return asdict(self)


def compute_metrics(labels: np.ndarray, probs: np.ndarray) -> Metrics:
    """All metrics of ``probs`` (shape (B,)) against ``labels`` (shape (B,)).

    Raises:
        MetricError: empty input, mismatched lengths, single-class labels, labels not
            0/1, or probabilities outside [0, 1].
    """
    labels, probs = _checked(labels, probs)
    return Metrics(
        ne=normalized_entropy(labels, probs),
        auc=roc_auc(labels, probs),
        log_loss=log_loss(labels, probs),
        calibration=calibration(labels, probs),
        rows=int(labels.size),
        click_rate=float(labels.mean()),
    )
