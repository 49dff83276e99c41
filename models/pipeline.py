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
All stages must read the same contract (equal feature names and table sizes), so one
candidate batch serves every stage; a narrow filter DLRM trained on the same schema does.

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

from quantrec.models.batch import Batch
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
        spec = self.stages[stage]
        batch, index = candidates.batch, candidates.index
        rows = batch if len(index) == len(batch) else batch.take(torch.from_numpy(index))
        model = spec.model
        if model.training:
            model.eval()
        with torch.inference_mode():
            logits = model(rows).float().numpy()
        best = top_k(logits, spec.keep)
        kept = np.sort(best)  # candidate order for the next stage (module docstring)
        return Candidates(
            batch=batch, items=candidates.items, index=index[kept], logits=logits[kept]
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


def _check_same_contract(stages: Sequence[Stage]) -> None:
    """Every stage reads the same features with the same table sizes (when it says)."""
    seen = None
    for stage in stages:
        architecture = getattr(stage.model, "architecture", None)
        if architecture is None:
            continue
        arch = architecture()
        contract = (tuple(arch["feature_names"]), tuple(arch["table_sizes"]), arch["num_dense"])
        if seen is None:
            seen = (stage.name, contract)
        elif contract != seen[1]:
            raise PipelineError(
                f"stages {seen[0]!r} and {stage.name!r} read different contracts (features, "
                f"table sizes, dense width): {seen[1]} vs {contract}; train the filter on the "
                "ranker's schema so one candidate batch serves both"
            )
