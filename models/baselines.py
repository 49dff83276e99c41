"""Baselines scored beside the DLRM on the run date: is the model worth serving at all?

Two reference models are fitted on the same training rows as the fp32 DLRM and scored on
the same day:

* ``baseline.constant``: the training rows' click rate for every row. Its NE on the run date
  is about 1 (exactly 1 when the day's click rate equals the window's).
* ``baseline.logistic``: a scikit-learn ``LogisticRegression`` (L2) on one-hot ids plus
  standardized dense features. A DLRM that loses to it has learned less than a linear model.

The logistic regression, step by step:

1. Design matrix, built block by block from a ``Batch`` or a ``BatchSource`` (e.g. a
   ``WindowStream``: one pass over its epoch), as a sparse CSR matrix (float32):
   per categorical feature one column per id seen in the training rows. Ids at or above
   ``max_buckets`` fold into ``id mod max_buckets`` (the ids are hashed already, so this is a
   coarser hash: huge vocabularies stay bounded). A bag of ids (a multi-valued feature)
   counts each id once per occurrence, the sum pooling of the DLRM's ``EmbeddingBag``. An id
   never seen in training adds nothing when scoring. Dense columns: ``log1p`` for columns
   non-negative and heavy-tailed on the training rows (skewness > 3), then standardized
   (``StandardScaler`` fitted on the training rows) and clipped to +-5 standard deviations,
   so one wild value on the run date cannot dominate a row's logit.
2. Training rows beyond ``max_rows`` are a seeded uniform subsample (the click rate of the
   constant baseline still uses every row).
3. Regularisation and solver chosen on the held-out rows (the fp32 model's: a seeded share
   of the window's last day). The ``grid`` of C (inverse L2 strength: about the prior
   variance of one weight, so it does not scale with the rows) is walked from its middle
   towards the better neighbour (smaller C first: fewer iterations) while held-out log loss
   improves (3-4 fits, not 7), at a loose tolerance; every other solver is then fitted at
   the chosen C, the lowest held-out log loss wins, and that fit continues (warm start) to
   ``refine_tol``. Log loss ranks exactly as NE on one set of rows (NE divides it by that
   set's click-rate entropy) and stays defined when the held-out rows hold one class.

Measured on the synthetic feed (290k training rows, 26 features, 139k ids seen, 13 dense;
one core): C = 0.1, newton-cg, NE 0.848 on the next day (ground truth 0.709); 23 s for the
whole fit from a ``WindowStream`` (reading included; the 4 selection fits and the refinement
take 18 s), 0.6 s to score 100k rows. ``Baselines.seconds`` records every run's time.

Pure numpy / scipy / scikit-learn: nothing here imports Prefect or MLflow.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.stats import skew
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.metrics import (
    PROB_CLIP,
    MetricError,
    Metrics,
    compute_metrics,
    log_loss,
    normalized_entropy,
    undefined_reason,
)
from quantrec.models.names import Baseline
from quantrec.models.stream import BatchSource, batches_of

_BLOCK_ROWS = 65_536  # rows encoded at a time: bounds the memory of one block
_CLIP_STD = 5.0
_HEAVY_TAIL_SKEW = 3.0


class BaselineError(ValueError):
    """Baselines cannot be fitted on these rows (none at all)."""


class BaselineSettings(BaseModel):
    """How the logistic baseline is fitted; every default says where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: tuple[float, ...] = Field(
        (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        description="C values tried (inverse L2 "
        "strength), walked from the middle. Measured on the synthetic feed, held-out NE: "
        "0.838 at 0.03, 0.834 at 0.1, 0.853 at 0.3, 0.893 at 1; few ids with large effects "
        "want 3 or more.",
    )
    solvers: tuple[Literal["newton-cg", "lbfgs", "liblinear", "sag", "saga"], ...] = Field(
        ("newton-cg", "lbfgs"),
        description="The first walks the C grid; the others are "
        "fitted at the chosen C. Measured at 290k rows, C=0.1: held-out NE 0.834 with "
        "newton-cg in 4.6 s, 0.851 with lbfgs in 1.0 s (it stops early at this tolerance).",
    )
    max_rows: int = Field(
        500_000,
        ge=1,
        description="Training rows at most (a seeded subsample beyond): keeps "
        "the fit of a long window within a daily stage (about linear in rows).",
    )
    max_buckets: int = Field(
        262_144,
        ge=1,
        description="Columns per categorical feature at most: ids at or above "
        "fold into id mod max_buckets (vocabularies up to 2^18 stay one-hot).",
    )
    max_iter: int = Field(100, ge=1, description="Solver iterations per fit at most.")
    tol: float = Field(
        1e-3,
        gt=0,
        description="Solver tolerance (scikit-learn's tol) of the selection fits: "
        "it ranks C as tighter fits do, at 0.6x their time (measured at 300k rows).",
    )
    refine_tol: float | None = Field(
        1e-4,
        gt=0,
        description="The chosen fit continues (warm start) to this tolerance and "
        "is kept if its held-out log loss is lower; None: no refinement. Measured at 300k "
        "rows: NE 0.8483 vs 0.8504 on the next day, for 2 more iterations.",
    )
    seed: int = Field(0, description="Seeds the subsample and a stream's epoch order.")

    @field_validator("grid", "solvers")
    @classmethod
    def _not_empty(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError("needs at least one value")
        if any(isinstance(c, float) and not c > 0 for c in value):
            raise ValueError(f"every C must be positive, got {list(value)}")
        return value


@dataclass(frozen=True)
class GridPoint:
    """One fit of the selection: held-out log loss (nats) and NE (None when undefined);
    ``refined``: the chosen fit continued to ``refine_tol``."""

    solver: str
    C: float
    held_out_log_loss: float | None
    held_out_ne: float | None
    iterations: int
    converged: bool
    seconds: float
    refined: bool = False


@dataclass(frozen=True)
class _Encoder:
    """Columns of the design matrix: the bucket ids seen in training, the dense transform."""

    keys: tuple[str, ...]
    max_buckets: int
    columns: np.ndarray  # sorted int64 bucket ids (key index * max_buckets + id bucket)
    log1p: np.ndarray  # bool (N,): dense columns log-transformed before scaling
    scaler: StandardScaler | None  # None when there is no dense column

    def design(self, batch: Batch) -> sp.csr_matrix:
        """float32 (B, columns + N) CSR rows of ``batch``; unseen ids add nothing."""
        _check_keys(self.keys, batch.sparse)
        blocks = []
        for part in batches_of(batch, batch_size=_BLOCK_ROWS):
            ids = _bucket_ids(part.sparse, self.max_buckets)
            pos = np.searchsorted(self.columns, ids.indices)
            pos = np.minimum(pos, self.columns.size - 1)
            hit = self.columns[pos] == ids.indices
            rows = np.repeat(np.arange(len(part)), np.diff(ids.indptr))[hit]
            indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=len(part)))]
            ids = sp.csr_matrix(
                (np.ones(rows.size, np.float32), pos[hit].astype(np.int32), indptr),
                shape=(len(part), self.columns.size),
            )
            blocks.append(sp.hstack([ids, self.dense(part.dense.numpy())], format="csr"))
        if not blocks:
            return sp.csr_matrix((0, self.columns.size + self.log1p.size), dtype=np.float32)
        return sp.vstack(blocks, format="csr")

    def dense(self, values: np.ndarray) -> sp.csr_matrix:
        if self.scaler is None:
            return sp.csr_matrix((values.shape[0], 0), dtype=np.float32)
        x = values.astype(np.float64)
        x[:, self.log1p] = np.log1p(np.maximum(x[:, self.log1p], 0.0))
        z = np.clip(self.scaler.transform(x), -_CLIP_STD, _CLIP_STD)
        return sp.csr_matrix(z.astype(np.float32))


@dataclass(frozen=True)
class LogisticBaseline:
    """The fitted logistic regression, its columns and how its C and solver were chosen."""

    model: LogisticRegression
    encoder: _Encoder
    C: float
    solver: str
    grid: tuple[GridPoint, ...]
    reason: str

    def predict(self, batch: Batch) -> np.ndarray:
        """float64 (B,) click probabilities."""
        if not len(batch):
            return np.zeros(0)
        return self.model.predict_proba(self.encoder.design(batch))[:, 1].astype(np.float64)


@dataclass(frozen=True)
class Baselines:
    """The fitted baselines of one run.

    Attributes:
        base_rate: click rate of every training row (the constant baseline's prediction).
        logistic: the logistic regression, or None when the training rows hold one class
            (``note`` says so).
        rows: training rows read; fitted_rows: rows the logistic regression fitted on.
        seconds: wall time of the whole fit.
    """

    base_rate: float
    logistic: LogisticBaseline | None
    rows: int
    fitted_rows: int
    seconds: float
    note: str = ""

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """Baseline name (``Baseline``) -> float64 (B,) click probabilities of ``batch``: the
        ``baselines`` argument of ``models.gate.decide``."""
        rate = float(np.clip(self.base_rate, PROB_CLIP, 1.0 - PROB_CLIP))
        out = {str(Baseline.CONSTANT): np.full(len(batch), rate)}
        if self.logistic is not None:
            out[str(Baseline.LOGISTIC)] = self.logistic.predict(batch)
        return out

    def to_dict(self) -> dict:
        """JSON-ready: what was fitted and how (for run parameters and the report)."""
        logistic = (
            None
            if self.logistic is None
            else {
                "C": self.logistic.C,
                "solver": self.logistic.solver,
                "reason": self.logistic.reason,
                "columns": int(self.logistic.encoder.columns.size),
                "log1p_dense": int(self.logistic.encoder.log1p.sum()),
                "grid": [asdict(p) for p in self.logistic.grid],
            }
        )
        return {
            "base_rate": self.base_rate,
            "rows": self.rows,
            "fitted_rows": self.fitted_rows,
            "seconds": self.seconds,
            "note": self.note,
            "logistic": logistic,
        }


def fit_baselines(
    training: Batch | BatchSource, held_out: Batch, *, settings: BaselineSettings | None = None
) -> Baselines:
    """Fit the constant and logistic baselines on the fp32 model's training rows.

    Args:
        training: the training rows, in memory or as a stream (read in one pass).
        held_out: the fp32 model's held-out rows; choose C and the solver.
        settings: see ``BaselineSettings`` (default ``BaselineSettings()``).

    Raises:
        BaselineError: no training rows.
    """
    settings = settings or BaselineSettings()
    started = time.perf_counter()
    read = _read(training, settings)
    if read.rows == 0:
        raise BaselineError("cannot fit baselines on 0 training rows; the window is empty")
    base_rate, fitted = read.clicks / read.rows, len(read.labels)
    one_class = undefined_reason(read.labels)
    if one_class is not None:
        note = f"no logistic baseline: the training rows hold one class ({one_class})"
        return Baselines(base_rate, None, read.rows, fitted, time.perf_counter() - started, note)
    encoder, x = _encode(read.keys, read.ids, read.dense, settings.max_buckets)
    logistic = _select(encoder, x, read.labels, held_out, settings)
    return Baselines(base_rate, logistic, read.rows, fitted, time.perf_counter() - started)


def score_baselines(baselines: Baselines, batch: Batch) -> dict[str, Metrics]:
    """Baseline name -> its ``Metrics`` on ``batch`` (the run date's rows).

    Raises:
        MetricError: as ``compute_metrics``: the rows are empty or single-class
            (``models.metrics.undefined_reason`` says so beforehand).
    """
    labels = batch.labels.double().numpy()
    return {name: compute_metrics(labels, p) for name, p in baselines.predict(batch).items()}


def ground_truth_ne(labels: np.ndarray, click_probability: np.ndarray) -> float:
    """NE of the true click probabilities on the labels they generated: log loss under the
    true p divided by the entropy of the rows' click rate. No model can expect a lower NE
    on those rows (``feeds.synthetic.SyntheticFeed.click_probability`` gives the true p of
    a synthetic day, row for row).

    Raises:
        MetricError: lengths differ, or the rows are empty or single-class.
    """
    return normalized_entropy(labels, click_probability)


# --- reading the training rows ----------------------------------------------------------------


class _Rows(NamedTuple):
    """One pass over the training rows: every row's count and clicks, the kept rows' parts."""

    rows: int
    clicks: float
    ids: sp.csr_matrix | None  # (kept, F * max_buckets) id counts (``_bucket_ids``)
    dense: np.ndarray | None  # float32 (kept, N)
    labels: np.ndarray  # float64 (kept,)
    keys: tuple[str, ...]


def _read(training: Batch | BatchSource, settings: BaselineSettings) -> _Rows:
    if not isinstance(training, (Batch, BatchSource)):
        raise TypeError(f"training must be a Batch or a BatchSource, got {type(training)}")
    total = len(training) if isinstance(training, Batch) else training.rows
    keep = np.ones(total, bool)
    if total > settings.max_rows:
        keep[:] = False
        keep[
            np.random.default_rng(settings.seed).choice(total, settings.max_rows, replace=False)
        ] = True
    ids, dense, labels = [], [], []
    rows = clicks = 0
    keys: tuple[str, ...] | None = None
    for block in _blocks(training, settings.seed):
        keys = keys or block.sparse.keys
        _check_keys(keys, block.sparse)
        y = block.labels.double().numpy()
        chosen = keep[rows : rows + len(block)]
        chosen = np.r_[chosen, np.zeros(len(block) - chosen.size, bool)]  # rows beyond .rows
        rows, clicks = rows + len(block), clicks + float(y.sum())
        ids.append(_bucket_ids(block.sparse, settings.max_buckets)[chosen])
        dense.append(block.dense.numpy()[chosen])
        labels.append(y[chosen])
    if keys is None:
        return _Rows(0, 0.0, None, None, np.zeros(0), ())
    return _Rows(
        rows,
        clicks,
        sp.vstack(ids, format="csr"),
        np.concatenate(dense),
        np.concatenate(labels),
        keys,
    )


def _blocks(training: Batch | BatchSource, seed: int) -> Iterator[Batch]:
    if isinstance(training, Batch):
        return batches_of(training, batch_size=_BLOCK_ROWS)
    return training.epoch(batch_size=_BLOCK_ROWS, generator=torch.Generator().manual_seed(seed))


def _check_keys(keys: tuple[str, ...], sparse: KeyedJaggedIds) -> None:
    if sparse.keys != keys:
        raise BaselineError(
            f"categorical features differ from the training rows': "
            f"{list(sparse.keys)} vs {list(keys)}"
        )


def _bucket_ids(sparse: KeyedJaggedIds, max_buckets: int) -> sp.csr_matrix:
    """(B, F * max_buckets) CSR of id counts: key k's id lands in column
    ``k * max_buckets + id mod max_buckets``; a bag gives one entry per id."""
    parts = []
    for values, offsets in zip(sparse.values, sparse.offsets):
        v = values.numpy()
        parts.append(
            sp.csr_matrix(  # a key's offsets are its bags' CSR row pointers
                (np.ones(v.size, np.float32), v % max_buckets, np.r_[offsets.numpy(), v.size]),
                shape=(sparse.batch_size, max_buckets),
            )
        )
    return sp.hstack(parts, format="csr")


def _encode(
    keys, ids: sp.csr_matrix, dense: np.ndarray, max_buckets: int
) -> tuple[_Encoder, sp.csr_matrix]:
    """The encoder fitted on the training rows and their design matrix."""
    ids.sum_duplicates()
    columns = np.unique(ids.indices).astype(np.int64)
    ids = sp.csr_matrix(
        (ids.data, np.searchsorted(columns, ids.indices).astype(np.int32), ids.indptr),
        shape=(ids.shape[0], columns.size),
    )
    x = dense.astype(np.float64)
    scaler, log1p = None, np.zeros(x.shape[1], bool)
    if x.shape[1]:
        with np.errstate(all="ignore"):
            tails = skew(x, axis=0)
        log1p = (x.min(axis=0) >= 0) & (tails > _HEAVY_TAIL_SKEW)  # NaN: a constant column
        x[:, log1p] = np.log1p(x[:, log1p])
        scaler = StandardScaler().fit(x)
    encoder = _Encoder(tuple(keys), max_buckets, columns, log1p, scaler)
    return encoder, sp.hstack([ids, encoder.dense(dense)], format="csr")


# --- choosing C and the solver ----------------------------------------------------------------


def _select(
    encoder: _Encoder, x, y, held_out: Batch, settings: BaselineSettings
) -> LogisticBaseline:
    """Walk the C grid with the first solver, then try the others at the chosen C."""
    grid = sorted(settings.grid)
    x_held = encoder.design(held_out)
    y_held = held_out.labels.double().numpy()
    fits: dict[tuple, tuple[LogisticRegression, GridPoint]] = {}

    def loss(solver: str, c: float) -> float:
        if (solver, c) not in fits:
            fits[(solver, c)] = _fit(x, y, x_held, y_held, solver, c, settings)
        found = fits[(solver, c)][1].held_out_log_loss
        return np.inf if found is None else found

    first, middle = settings.solvers[0], len(grid) // 2
    best = middle
    for step in (-1, 1):  # the cheaper, smaller C first; on while it keeps improving
        while (
            0 <= best + step < len(grid)
            and len(y_held)
            and (loss(first, grid[best + step]) < loss(first, grid[best]))
        ):
            best += step
        if best != middle:
            break
    c = grid[best]
    loss(first, c)
    solver = min(settings.solvers, key=lambda s: loss(s, c) if len(y_held) else 0.0)
    model, point = fits[(solver, c)]
    if (
        settings.refine_tol is not None
        and settings.refine_tol < settings.tol
        and len(y_held)
        and solver != "liblinear"
    ):  # liblinear cannot warm start
        refined, refined_point = _fit(x, y, x_held, y_held, solver, c, settings, warm=model)
        fits[(solver, c, "refined")] = refined, refined_point
        if refined_point.held_out_log_loss <= point.held_out_log_loss:
            model, point = refined, refined_point
    undefined = undefined_reason(y_held)
    reason = (
        f"no held-out rows: C={c:g} (the grid's middle) and {solver}, unselected"
        if not len(y_held)
        else f"lowest held-out log loss {point.held_out_log_loss:.6g} of "
        f"{len(fits)} fits"
        + (f" (NE undefined there: {undefined})" if undefined else f", NE {point.held_out_ne:.6g}")
    )
    return LogisticBaseline(model, encoder, c, solver, tuple(p for _, p in fits.values()), reason)


def _fit(
    x,
    y,
    x_held,
    y_held,
    solver: str,
    c: float,
    settings: BaselineSettings,
    *,
    warm: LogisticRegression | None = None,
) -> tuple[LogisticRegression, GridPoint]:
    """One fit and its held-out scores; ``warm``: continue that fit to ``refine_tol``."""
    started = time.perf_counter()
    model = LogisticRegression(
        C=c, solver=solver, max_iter=settings.max_iter, tol=settings.tol, intercept_scaling=10.0
    )  # liblinear: barely penalise the bias
    if warm is not None:
        model.set_params(tol=settings.refine_tol, warm_start=True)
        model.coef_, model.intercept_ = warm.coef_.copy(), warm.intercept_.copy()
    # One BLAS thread: sparse products dominate, and it keeps fits reproducible.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as converged=False
        model.fit(x, y)
    iterations = int(np.max(model.n_iter_))
    held_loss = held_ne = None
    if len(y_held):
        p = model.predict_proba(x_held)[:, 1].astype(np.float64)
        held_loss = log_loss(y_held, p)
        try:
            held_ne = normalized_entropy(y_held, p)
        except MetricError:
            held_ne = None
    return model, GridPoint(
        solver,
        c,
        held_loss,
        held_ne,
        iterations,
        iterations < settings.max_iter,
        time.perf_counter() - started,
        refined=warm is not None,
    )


__all__ = [
    "BaselineError",
    "BaselineSettings",
    "Baselines",
    "GridPoint",
    "LogisticBaseline",
    "fit_baselines",
    "ground_truth_ne",
    "score_baselines",
]
