"""Sizes from the data: the model's width and the training steps follow the rows.

Pure functions of the schema, the number of training rows and, when known, the vocabulary
(distinct ids per feature): a 2,000-row window and a 1M-row one both get sizes they can
learn, without a per-feed config. Every value a user sets is kept as given.

Training steps (``auto_training_size``):

* batch size: the power of two nearest ``2 * sqrt(rows)``, within [32, 8192]. Batch and
  steps per epoch both grow as sqrt(rows): 2,000 rows train in 31 steps of 64, 280k in
  273 steps of 1024, 1M in 488 steps of 2048 (a fixed 1024 gives 2 steps to a 2,000-row
  window; a fixed rows / 1000 gives 1000 tiny steps to a 1M one).
* MLP learning rate (Adam): ``3e-3 * sqrt(batch / 1024)``, the square-root rule for Adam
  (Malladi et al. 2022). Synthetic feed, next-day NE (2024-01-04 / 01-05): 0.8610 / 0.8631
  at 1e-3, 0.8601 / 0.8603 at 3e-3; MovieLens replayed continually: a fixed 3e-3 at
  batches of 32-128 gave mean NE 1.009 against 0.981 with the rule.
* row-wise Adagrad's initial accumulator: ``0.01 / batch**2``. The mean loss gives a row
  a gradient of order 1 / batch per sample, so this is the same damping at every batch
  size: about one sample's squared gradient of 0.1 per element. Without it a row's first
  step is ``lr`` whatever its evidence, and an id seen once moves as far as a frequent
  one: synthetic next-day NE 0.8771 / 0.8710 without, 0.8601 / 0.8603 with.

Model size (``auto_model_size``):

* embedding width: the power of two nearest ``1.6 * rows ** 0.2``, within [4, 32], and
  at most the Google rule of thumb ``6 * vocabulary ** 0.25`` of the largest table: 8 for
  2,000 rows, 16 for 280k, 32 from about 1M rows. One width for all tables, as the
  dot-product interaction requires.
* hash sizes: the power of two at or above four times the feature's vocabulary when it is
  known (about 12 % of ids then share a row), else four times the rows (a window of R rows
  holds at most R distinct single-valued ids); never above the schema's size, which is the
  feed's own bound. A 100k-row default table of a 2,000-row window shrinks to 8192 rows.

All outputs are powers of two, so they change rarely as the window grows: a model can be
warm-started from yesterday's (``models.train.warm_start`` needs equal shapes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema

MIN_BATCH, MAX_BATCH = 32, 8192
REFERENCE_BATCH = 1024
REFERENCE_LEARNING_RATE = 3e-3  # Adam, MLPs, at REFERENCE_BATCH
INITIAL_ACCUMULATOR_PER_SAMPLE = 0.01  # row-wise Adagrad's, times 1 / batch**2
MIN_EMBEDDING_DIM, MAX_EMBEDDING_DIM = 4, 32
HASH_SIZE_PER_ID = 4  # table rows per distinct id when the vocabulary is known


def _nearest_power_of_two(value: float, low: int, high: int) -> int:
    exponent = round(math.log2(max(value, 1.0)))
    return int(min(max(2**exponent, low), high))


def _power_of_two_at_least(value: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(value, 1.0))))


@dataclass(frozen=True)
class TrainingSize:
    """Steps of one training run.

    Attributes:
        batch_size: samples per optimizer step.
        learning_rate: Adam's for the MLPs.
        initial_accumulator: row-wise Adagrad's start value for every table row.
    """

    batch_size: int
    learning_rate: float
    initial_accumulator: float


def auto_batch_size(rows: int) -> int:
    """Samples per step for ``rows`` training rows (module docstring)."""
    if rows < 1:
        raise ValueError(f"need at least 1 training row to size the batch, got {rows}")
    return _nearest_power_of_two(2.0 * math.sqrt(rows), MIN_BATCH, MAX_BATCH)


def auto_learning_rate(batch_size: int) -> float:
    """Adam's learning rate for the MLPs at ``batch_size`` (square-root rule)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return REFERENCE_LEARNING_RATE * math.sqrt(batch_size / REFERENCE_BATCH)


def auto_initial_accumulator(batch_size: int) -> float:
    """Row-wise Adagrad's initial accumulator at ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return INITIAL_ACCUMULATOR_PER_SAMPLE / batch_size**2


def auto_training_size(
    rows: int, *, batch_size: int | None = None, learning_rate: float | None = None
) -> TrainingSize:
    """Batch size, learning rate and initial accumulator for ``rows`` training rows.

    A given ``batch_size`` or ``learning_rate`` is kept; the learning rate and the
    accumulator follow the batch size actually used.
    """
    batch = auto_batch_size(rows) if batch_size is None else int(batch_size)
    rate = auto_learning_rate(batch) if learning_rate is None else float(learning_rate)
    return TrainingSize(batch, rate, auto_initial_accumulator(batch))


@dataclass(frozen=True)
class ModelSize:
    """The model's width and each feature's table rows.

    Attributes:
        embedding_dim: D, the width of every embedding row.
        hash_sizes: feature name -> table rows.
        reasons: one line per value saying which rule set it (for ``quantrec config``).
    """

    embedding_dim: int
    hash_sizes: dict[str, int]
    reasons: tuple[str, ...] = ()

    def apply(self, schema: FeatureSchema) -> FeatureSchema:
        """``schema`` with these hash sizes (the contract a model of this size scores)."""
        features = tuple(
            CategoricalFeature(
                name=f.name, hash_size=self.hash_sizes[f.name], multi_valued=f.multi_valued
            )
            for f in schema.categorical
        )
        return schema.model_copy(update={"categorical": features})

    def bottom_mlp(self, hidden: tuple[int, ...] = (64,)) -> tuple[int, ...]:
        """A bottom MLP of ``hidden`` layers ending at ``embedding_dim``."""
        return (*hidden, self.embedding_dim)


def auto_model_size(
    schema: FeatureSchema,
    rows: int,
    *,
    vocabulary: Mapping[str, int] | None = None,
    embedding_dim: int | None = None,
    hash_sizes: Mapping[str, int] | None = None,
) -> ModelSize:
    """Embedding width and hash sizes for ``rows`` training rows (module docstring).

    Args:
        schema: the feed's contract; its hash sizes are the upper bounds.
        rows: training rows of the window.
        vocabulary: feature name -> distinct ids seen, for the features where it is known.
        embedding_dim: the user's width; kept when given.
        hash_sizes: the user's table rows per feature; kept when given.
    """
    if rows < 1:
        raise ValueError(f"need at least 1 training row to size the model, got {rows}")
    vocabulary, chosen = dict(vocabulary or {}), dict(hash_sizes or {})
    unknown = sorted((set(vocabulary) | set(chosen)) - set(schema.categorical_names))
    if unknown:
        raise ValueError(
            f"vocabulary / hash_sizes name features {unknown} that the schema lacks; it has "
            f"{schema.categorical_names}"
        )
    reasons: list[str] = []
    if embedding_dim is None:
        largest = max(vocabulary.get(f.name, f.hash_size) for f in schema.categorical)
        by_rows = 1.6 * rows**0.2
        by_vocabulary = 6.0 * largest**0.25
        embedding_dim = _nearest_power_of_two(
            min(by_rows, by_vocabulary), MIN_EMBEDDING_DIM, MAX_EMBEDDING_DIM
        )
        reasons.append(
            f"embedding_dim {embedding_dim}: nearest power of two to min(1.6 * {rows} rows "
            f"** 0.2 = {by_rows:.1f}, 6 * {largest} ids ** 0.25 = {by_vocabulary:.1f}) in "
            f"[{MIN_EMBEDDING_DIM}, {MAX_EMBEDDING_DIM}]"
        )
    else:
        reasons.append(f"embedding_dim {embedding_dim}: set by the user")
    by_rows = _power_of_two_at_least(HASH_SIZE_PER_ID * rows)
    sizes = {}
    for feature in schema.categorical:
        name = feature.name
        if name in chosen:
            sizes[name] = int(chosen[name])
            reasons.append(f"{name}: {sizes[name]} rows, set by the user")
            continue
        if name in vocabulary:
            wanted = _power_of_two_at_least(HASH_SIZE_PER_ID * max(vocabulary[name], 1))
            why = f"{HASH_SIZE_PER_ID} x {vocabulary[name]} ids"
        else:
            wanted, why = by_rows, f"{HASH_SIZE_PER_ID} x {rows} rows"
        size = min(wanted, feature.hash_size)
        if size == feature.hash_size:
            why = "the schema's"
        sizes[name] = size
        reasons.append(f"{name}: {size} rows ({why})")
    return ModelSize(embedding_dim=int(embedding_dim), hash_sizes=sizes, reasons=tuple(reasons))
