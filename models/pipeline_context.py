"""Scoring one query's candidates with the user-side work done once.

Every candidate row of a query carries the user's columns (``models.queries``): the ids of
the user-side features are the same on every row, and so, usually, are the dense values.
A DLRM then computes the same vectors N times: the user-side lookups, the dense arch, and
every dot product between two user-side vectors. ``SharedContext`` wraps a DLRM (fp32 or
any variant, per-table or fused lookups) and, per batch:

1. finds the *shared* vectors: a single-valued feature whose id is equal on every row, the
   dense vector when every row's dense values are equal, and the learned constant vector;
   the others *vary* (the item and item-side features);
2. looks the shared features up for one row, the varying ones for every row (the shared
   ones as empty bags, which read no table);
3. computes the dot products among shared vectors once (1 row), those of each varying
   vector with every vector per row (B X V X K, V varying of K vectors), and gathers them
   into the interaction's upper triangle, in the model's order;
4. runs the top MLP on every row.

The logits equal the model's up to float rounding (sums in another order, the dense arch
on one row); a batch with nothing shared (or one row) goes through the model unchanged.
For a query against the synthetic feed's items, 25 of 26 lookups and 300 of 378 dot
products are done once instead of N times; the top MLP still runs per candidate.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM


class SharedContext(nn.Module):
    """``model`` scoring a query's candidates with its shared vectors computed once.

    Args:
        model: an eval-mode DLRM or a variant of one (``models.quantize``, ``models.fused``).
    """

    def __init__(self, model: DLRM) -> None:
        super().__init__()
        self.model = model
        self.feature_names = model.feature_names

    def architecture(self) -> dict:
        return self.model.architecture()

    def forward(self, batch: Batch) -> Tensor:
        """dense B X N and F bags per row -> float32 logits (B,)."""
        rows = len(batch)
        features = batch.sparse
        shared = [_constant(v, o, rows) for v, o in zip(features.values, features.offsets)]
        dense_shared = rows > 1 and bool((batch.dense == batch.dense[:1]).all())
        if rows < 2 or not any(shared):
            return self.model(batch)
        m = self.model
        start, empty = torch.zeros(1, dtype=torch.int64), torch.zeros(rows, dtype=torch.int64)
        # One row of the shared features' ids (the varying ones as empty bags: no reads),
        # then every row of the varying ones (the shared ones empty).
        one = m.sparse_arch.pooled(
            KeyedJaggedIds(
                keys=features.keys,
                values=tuple(v[:1] if s else v[:0] for v, s in zip(features.values, shared)),
                offsets=(start,) * len(shared),
            )
        )
        emptied = KeyedJaggedIds(
            keys=features.keys,
            values=tuple(v[:0] if s else v for v, s in zip(features.values, shared)),
            offsets=tuple(empty if s else o for o, s in zip(features.offsets, shared)),
        )
        full = m.sparse_arch.pooled(emptied) if not all(shared) else one
        dense = m.dense_arch(batch.dense[:1] if dense_shared else batch.dense)
        vectors = [dense, *(one[i] if s else full[i] for i, s in enumerate(shared))]
        is_shared = [dense_shared, *shared]
        constant = m.inter_arch.constant
        if constant is not None:
            vectors.append(constant.unsqueeze(0))
            is_shared.append(True)
        return m.over_arch(_interact(vectors, is_shared, rows)).squeeze(1)


def _constant(values: Tensor, offsets: Tensor, rows: int) -> bool:
    """Single-valued bags (one id per row) holding one id on every row."""
    if rows < 2 or values.shape[0] != rows:
        return False
    if not torch.equal(offsets, torch.arange(rows, dtype=offsets.dtype)):
        return False
    return bool((values == values[0]).all())


def _interact(vectors: list[Tensor], is_shared: list[bool], rows: int) -> Tensor:
    """The interaction's output (B X (D + K choose 2)) from K vectors, each 1 X D (shared)
    or B X D (varying), as ``InteractionArch.interact`` orders it."""
    k = len(vectors)
    first = torch.cat([v[:1] for v in vectors], dim=0)  # K X D: row 0 of every vector
    shared_at, shared_from, varying_at, varying_from = _triangle(tuple(is_shared))
    flat = first.new_empty(rows, k * (k - 1) // 2)
    flat[:, shared_at] = (first @ first.T).flatten()[shared_from]  # equal on every row
    varying = [i for i in range(k) if not is_shared[i]]
    if varying:
        moving = torch.stack([vectors[i] for i in varying], dim=1)  # B X V X D
        # With every vector (row 0 stands for a shared one), then varying x varying per row.
        with_first = torch.matmul(moving, first.T)  # B X V X K
        among = torch.bmm(moving, moving.transpose(1, 2))  # B X V X V
        per_row = torch.cat((with_first.flatten(1), among.flatten(1)), dim=1)
        flat[:, varying_at] = per_row.index_select(1, varying_from)
    return torch.cat((vectors[0].expand(rows, -1), flat), dim=1)


@functools.lru_cache(maxsize=64)
def _triangle(is_shared: tuple[bool, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For the upper triangle's pairs (row-major): where the shared pairs sit and their
    place in the K X K products, where the others sit and their place in the per-row
    products (B X V X K with every vector, then B X V X V among the varying). Cached: a
    query's pattern of shared features repeats query after query."""
    k = len(is_shared)
    varying = [i for i in range(k) if not is_shared[i]]
    v = len(varying)
    shared_at, shared_from, varying_at, varying_from = [], [], [], []
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    for position, (a, b) in enumerate(pairs):
        if is_shared[a] and is_shared[b]:
            shared_at.append(position)
            shared_from.append(a * k + b)
            continue
        moving, other = (a, b) if not is_shared[a] else (b, a)
        r = varying.index(moving)
        varying_at.append(position)
        if is_shared[other]:
            varying_from.append(r * k + other)
        else:
            varying_from.append(v * k + r * v + varying.index(other))
    return tuple(
        torch.tensor(x, dtype=torch.int64)
        for x in (shared_at, shared_from, varying_at, varying_from)
    )
