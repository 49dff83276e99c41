"""Multi-stage ranking (RecPipe, Gupta et al. 2021, arXiv 2105.08820): cheap models score
many candidates and pass the best to an accurate ranker.

A ``RankingPipeline`` is a sequence of ``Stage``s. For one query (its N candidate rows as a
``Batch`` and their item ids):

1. stage 1 scores all N candidates and keeps its ``keep`` best (``top_k``: highest logit
   first, ties to the lower candidate position);
2. each next stage scores only the candidates the previous one kept and keeps its own
   ``keep`` best; the last stage's ``keep`` is k, the length of the served list;
3. the response is the last stage's top k: item ids, best first, with that stage's click
   probabilities.

The survivors of a stage go to the next one in *candidate order* (ascending position), not
in the filter's order, and a stage that keeps every candidate passes the batch on
unchanged: a two-stage pipeline whose filter keeps all N therefore feeds its ranker the very
rows single-stage ranking does, and serves the same list, bit for bit. Every stage scores
its candidates in one forward pass (a query is one request-sized batch), so int8 dynamic
activations are scaled per query.

Single-stage ranking (the baseline) is the pipeline of one stage, the fp32 model keeping k.
One candidate batch serves every stage: a stage whose model reads fewer categorical
features (``feature_names``, e.g. a RecPipe-style small filter on the user and item columns
only) scores the batch's columns of those features, so every feature a stage reads must
have one table size across the stages, and every stage the same dense width (checked when
the pipeline is built; a filter trained on a subset of the ranker's sized schema passes).

Serving: ``rank`` takes one request (a user's candidate rows and their item ids) and
returns a ``Ranked`` response, whose ``to_frame`` is the table a model server answers with
(item, score, rank). ``stage_steps`` gives the same work split per stage, for a load
generator that runs each stage in its own thread (``models.loadgen``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.ranking_metrics import top_k


class PipelineError(ValueError):
    """A pipeline is ill-formed (stage sizes, contracts) or a request does not fit it."""


@dataclass(frozen=True)
class Stage:
    """One model of a pipeline and how many candidates it passes on.

    Attributes:
        name: e.g. "int8", "narrow-d4", "fp32".
        model: scores a ``Batch`` with logits of shape (B,), e.g. a ``DLRM`` or a variant
            from ``models.quantize``; used in eval mode under ``torch.inference_mode``.
        keep: candidates it keeps (the last stage: k).
    """

    name: str
    model: nn.Module
    keep: int


@dataclass(frozen=True)
class Candidates:
    """A query in flight between stages.

    Attributes:
        batch: the query's N candidate rows.
        items: (N,) raw item ids, candidate order.
        index: int64 (M,) positions still in play, ascending (M = N before stage 1).
        logits: float32 (M,) the last stage's scores of ``index``; None before stage 1.
    """

    batch: Batch
    items: np.ndarray
    index: np.ndarray
    logits: np.ndarray | None = None


@dataclass(frozen=True)
class Ranked:
    """A pipeline's response to one query.

    Attributes:
        items: (k,) raw item ids, best first (fewer when the query has fewer candidates).
        scores: float64 (k,) the last stage's click probabilities of ``items``.
        positions: int64 (k,) the items' candidate positions.
    """

    items: np.ndarray
    scores: np.ndarray
    positions: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Columns item, score, rank (1-based): the served list as a table."""
        return pd.DataFrame(
            {"item": self.items, "score": self.scores, "rank": np.arange(1, len(self.items) + 1)}
        )


class RankingPipeline:
    """Stages in order, each keeping fewer candidates (module docstring).

    Args:
        stages: at least one; ``keep`` must not grow from one stage to the next.

    Example::

        single = RankingPipeline([Stage("fp32", fp32, keep=10)])
        two = RankingPipeline([Stage("int8", int8, keep=200), Stage("fp32", fp32, keep=10)])
        response = two.rank(batch, items)  # Ranked: the fp32 top 10 among int8's top 200
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        stages = tuple(stages)
        if not stages:
            raise PipelineError("a pipeline needs at least one stage")
        keeps = [s.keep for s in stages]
        if any(k < 1 for k in keeps) or any(a < b for a, b in zip(keeps, keeps[1:])):
            raise PipelineError(
                f"every stage keeps at least 1 candidate and no more than the stage before "
                f"it; got keeps {keeps} for stages {[s.name for s in stages]}"
            )
        _check_same_contract(stages)
        self.stages = stages

    @property
    def k(self) -> int:
        """Length of the served list."""
        return self.stages[-1].keep

    @property
    def name(self) -> str:
        """E.g. "int8@200>fp32" (a stage's keep is shown when it is not the served k)."""
        parts = [f"{s.name}@{s.keep}" for s in self.stages[:-1]]
        return ">".join([*parts, self.stages[-1].name])

    def start(self, batch: Batch, items: np.ndarray) -> Candidates:
        """A query before stage 1: every candidate in play."""
        items = np.asarray(items)
        if len(items) != len(batch):
            raise PipelineError(
                f"the request has {len(batch)} candidate rows but {len(items)} item ids"
            )
        if len(batch) == 0:
            raise PipelineError("the request has no candidates to rank")
        return Candidates(batch=batch, items=items, index=np.arange(len(batch), dtype=np.int64))

    def step(self, stage: int, candidates: Candidates) -> Candidates:
        """Stage ``stage`` (0-based): score the candidates in play, keep its best."""
        return self.keep(stage, candidates, self.score(stage, candidates))

    def score(self, stage: int, candidates: Candidates) -> np.ndarray:
        """float32 (M,) logits of stage ``stage``'s model for the candidates in play."""
        batch, index = candidates.batch, candidates.index
        rows = batch if len(index) == len(batch) else batch.take(torch.from_numpy(index))
        model = self.stages[stage].model
        rows = _features_of(rows, model)
        if model.training:
            model.eval()
        with torch.inference_mode():
            return model(rows).float().numpy()

    def keep(self, stage: int, candidates: Candidates, logits: np.ndarray) -> Candidates:
        """The ``keep`` best of the candidates in play by ``logits`` (as from ``score``),
        passed on in candidate order (module docstring)."""
        kept = np.sort(top_k(logits, self.stages[stage].keep))
        return Candidates(
            batch=candidates.batch,
            items=candidates.items,
            index=candidates.index[kept],
            logits=logits[kept],
        )

    def finish(self, candidates: Candidates) -> Ranked:
        """The response: the last stage's kept candidates, best first."""
        if candidates.logits is None:
            raise PipelineError("finish needs a query that went through the stages")
        order = top_k(candidates.logits, self.k)
        positions = candidates.index[order]
        scores = torch.sigmoid(torch.from_numpy(candidates.logits[order]).double()).numpy()
        return Ranked(items=candidates.items[positions], scores=scores, positions=positions)

    def rank(self, batch: Batch, items: np.ndarray) -> Ranked:
        """Serve one query: every stage in turn, in this thread."""
        candidates = self.start(batch, items)
        for stage in range(len(self.stages)):
            candidates = self.step(stage, candidates)
        return self.finish(candidates)

    def stage_steps(self) -> list[Callable]:
        """One callable per stage for a threaded server: the first takes a (batch, items)
        request, the last returns the ``Ranked`` response; between them ``Candidates``."""
        last = len(self.stages) - 1

        def make(stage: int) -> Callable:
            def run(work):
                candidates = self.start(*work) if stage == 0 else work
                candidates = self.step(stage, candidates)
                return self.finish(candidates) if stage == last else candidates

            return run

        return [make(stage) for stage in range(len(self.stages))]


def single_stage(model: nn.Module, *, k: int, name: str = "fp32") -> RankingPipeline:
    """The baseline: ``model`` ranks every candidate."""
    return RankingPipeline([Stage(name, model, keep=k)])


def two_stage(
    filter_model: nn.Module,
    ranker: nn.Module,
    *,
    keep: int,
    k: int,
    filter_name: str,
    ranker_name: str = "fp32",
) -> RankingPipeline:
    """``filter_model`` scores every candidate and passes its ``keep`` best to ``ranker``."""
    return RankingPipeline([Stage(filter_name, filter_model, keep), Stage(ranker_name, ranker, k)])


def _features_of(batch: Batch, model: nn.Module) -> Batch:
    """``batch`` with only the categorical features ``model`` reads, in its order."""
    names = tuple(getattr(model, "feature_names", batch.sparse.keys))
    keys = batch.sparse.keys
    if names == keys:
        return batch
    missing = [n for n in names if n not in keys]
    if missing:
        raise PipelineError(
            f"the model reads features {missing} that the candidate rows lack; they hold "
            f"{list(keys)}"
        )
    at = [keys.index(n) for n in names]
    sparse = KeyedJaggedIds(
        keys=names,
        values=tuple(batch.sparse.values[i] for i in at),
        offsets=tuple(batch.sparse.offsets[i] for i in at),
    )
    return Batch(dense=batch.dense, sparse=sparse, labels=batch.labels)


def _check_same_contract(stages: Sequence[Stage]) -> None:
    """Every feature any stage reads has one table size; every stage one dense width."""
    sizes: dict[str, tuple[str, int]] = {}
    dense: tuple[str, int] | None = None
    for stage in stages:
        architecture = getattr(stage.model, "architecture", None)
        if architecture is None:
            continue
        arch = architecture()
        if dense is not None and arch["num_dense"] != dense[1]:
            raise PipelineError(
                f"stages {dense[0]!r} and {stage.name!r} read different contracts: "
                f"{dense[1]} vs {arch['num_dense']} dense features"
            )
        dense = dense or (stage.name, arch["num_dense"])
        for feature, rows in zip(arch["feature_names"], arch["table_sizes"]):
            seen = sizes.setdefault(feature, (stage.name, rows))
            if seen[1] != rows:
                raise PipelineError(
                    f"stages {seen[0]!r} and {stage.name!r} read different contracts: "
                    f"feature {feature!r} hashes into {seen[1]} vs {rows} rows; train the "
                    "filter on the ranker's sized schema so one candidate batch serves both"
                )
