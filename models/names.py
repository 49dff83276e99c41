"""The lifecycle's vocabulary, defined once: variants, registry aliases, drift levels,
decision outcomes and the MLflow tag keys every stage reads or writes.

Pure constants (no MLflow or Prefect import), so the core, the tasks, the CLI and the tests
all spell a name the same way.
"""

from __future__ import annotations

from enum import StrEnum


class Variant(StrEnum):
    """The models a run date scores; ``FP32`` is the parent the others are quantized from."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    SEARCHED = "searched"


# The current champion's key among the scored models (it is not a variant of today's run).
CHAMPION_KEY = "champion"


class Alias(StrEnum):
    """Registered-model aliases: the one serving, the one it replaced, the one in review."""

    CHAMPION = "champion"
    PREVIOUS = "previous"
    CHALLENGER = "challenger"


class DriftLevel(StrEnum):
    OK = "ok"
    WARN = "warn"
    SEVERE = "severe"


class Outcome(StrEnum):
    """A run date's decision, as the run's ``quantrec.decision`` tag records it."""

    PROMOTED = "promoted"
    CHALLENGER = "challenger"
    REJECTED = "rejected"
    REUSED = "reused"
    FAILED = "failed"
    CRASHED = "crashed"


class Tag(StrEnum):
    """MLflow tag keys of runs and model versions."""

    RUN_DATE = "quantrec.run_date"
    RUN_KEY = "quantrec.run_key"
    FLOW = "quantrec.flow"
    CONFIG_HASH = "quantrec.config_hash"
    CODE_VERSION = "quantrec.code_version"
    DECISION = "quantrec.decision"
    DECISION_REASON = "quantrec.decision_reason"
    PROMOTED_VARIANT = "quantrec.promoted_variant"
    CHALLENGER_VARIANT = "quantrec.challenger_variant"
    CHALLENGER_VERSION = "quantrec.challenger_version"
    CHALLENGER_REASON = "quantrec.challenger_reason"
    CHAMPION_VERSION = "quantrec.champion_version"
    WITHIN_NOISE = "quantrec.within_noise"
    DRIFT_LEVEL = "quantrec.drift_level"
    QUARANTINED = "quantrec.quarantined"
    REUSED_FROM = "quantrec.reused_from"
    RESUMED_TRAIN = "quantrec.resumed.train"
    RESUMED_SEARCH = "quantrec.resumed.search"
    PLAN_SOURCE = "quantrec.plan_source"
    PLAN_REASON = "quantrec.plan_reason"
    SEARCHED_VERDICT = "quantrec.searched_verdict"
    TRAINING_MODE = "quantrec.training_mode"
    TRAINING_REASON = "quantrec.training_reason"
    TRAINED_THROUGH = "quantrec.trained_through"
    FULL_RETRAIN_DATE = "quantrec.full_retrain_date"
    # model versions
    VARIANT = "quantrec.variant"
    NE = "quantrec.ne"
    BYTES = "quantrec.bytes"
    MLFLOW_RUN_ID = "quantrec.mlflow_run_id"
    REVIEW = "quantrec.review"
    REVIEWED_BY = "quantrec.reviewed_by"
    REVIEWED_AT = "quantrec.reviewed_at"
    REVIEW_REASON = "quantrec.review_reason"
    OVERRIDE_REASON = "quantrec.override_reason"
    OVERRIDE_BY = "quantrec.override_by"
    OVERRIDE_AT = "quantrec.override_at"
    OVERRIDE_OF_DECISION = "quantrec.override_of_decision"
    ROLLED_BACK_BY = "quantrec.rolled_back_by"
    ROLLED_BACK_AT = "quantrec.rolled_back_at"
    ROLLED_BACK_REASON = "quantrec.rolled_back_reason"
    # The registered files' manifest (models.manifest): where it is and its SHA-256.
    MANIFEST = "quantrec.manifest"
    MANIFEST_SHA256 = "quantrec.manifest_sha256"


class Baseline(StrEnum):
    """Reference models scored beside the DLRM on the run date (``models.baselines``)."""

    CONSTANT = "baseline.constant"  # the training window's click rate for every row
    LOGISTIC = "baseline.logistic"  # logistic regression on one-hot ids and dense features


# The key of the ground truth's scores (the synthetic feed's true click probabilities).
GROUND_TRUTH_KEY = "ground_truth"
