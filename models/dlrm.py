"""DLRM (Naumov et al. 2019, https://arxiv.org/abs/1906.00091) as four small modules.

Shapes use the notation of ``models.batch``: B samples, N dense features, F categorical
features, D embedding dimension. The layout follows torchrec's ``DenseArch``, ``SparseArch``,
``InteractionArch`` and ``OverArch``, so module names (``sparse_arch.embedding_bags.3``,
``over_arch.mlp.0``) are stable handles for per-layer precision plans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.batch import Batch, KeyedJaggedIds


def _mlp(in_features: int, layer_sizes: Sequence[int], *, final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out_features in enumerate(layer_sizes):
        layers.append(nn.Linear(in_features, out_features))
        if final_relu or i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
        in_features = out_features
    return nn.Sequential(*layers)


class DenseArch(nn.Module):
    """Bottom MLP: projects dense features into the embedding space (ReLU after every layer).

    Args:
        in_features: N.
        layer_sizes: output size of each layer; the last is D.

    Example::

        dense_arch = DenseArch(in_features=13, layer_sizes=[64, 16])
        embedded = dense_arch(torch.rand(20, 13))  # 20 X 16
    """

    def __init__(self, *, in_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        self.mlp = _mlp(in_features, layer_sizes, final_relu=True)

    def forward(self, features: Tensor) -> Tensor:
        """
        Args:
            features: float32 B X N.

        Returns:
            float32 B X D.
        """
        return self.mlp(features)


class SparseArch(nn.Module):
    """One sum-pooled ``nn.EmbeddingBag`` per categorical feature, with sparse gradients.

    Args:
        table_sizes: rows of each feature's table (its hash size), F entries.
        embedding_dim: D.

    Example::

        sparse_arch = SparseArch(table_sizes=[100, 50], embedding_dim=8)
        pooled = sparse_arch(ids)  # ids: KeyedJaggedIds with 2 keys -> B X 2 X 8
    """

    def __init__(self, *, table_sizes: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        # A ModuleList, not a ModuleDict keyed by feature name: a feature called "type" or
        # "train" would collide with nn.Module attributes.
        self.embedding_bags = nn.ModuleList(
            nn.EmbeddingBag(rows, embedding_dim, mode="sum", sparse=True) for rows in table_sizes
        )
        for bag, rows in zip(self.embedding_bags, table_sizes):
            # Uniform(+-1/sqrt(rows)) as in torchrec and the DLRM reference; N(0, 1) makes the
            # initial dot products large enough to saturate the first logits.
            bound = 1.0 / math.sqrt(rows)
            nn.init.uniform_(bag.weight, -bound, bound)

    def forward(self, features: KeyedJaggedIds) -> Tensor:
        """
        Args:
            features: F keys, B bags each, ids within each table.

        Returns:
            float32 B X F X D: the sum of each bag's embeddings (zeros for an empty bag).
        """
        return torch.stack(self.pooled(features), dim=1)

    def pooled(self, features: KeyedJaggedIds) -> list[Tensor]:
        """The F pooled embeddings, each float32 B X D, not yet stacked."""
        return [
            bag(values, offsets)
            for bag, values, offsets in zip(self.embedding_bags, features.values, features.offsets)
        ]


class InteractionArch(nn.Module):
    """Pairwise dot products of the dense vector and the F pooled embeddings.

    Args:
        num_sparse_features: F.

    Example::

        inter_arch = InteractionArch(num_sparse_features=2)
        out = inter_arch(torch.rand(10, 8), torch.rand(10, 2, 8))  # 10 X (8 + 3)
    """

    def __init__(self, *, num_sparse_features: int) -> None:
        super().__init__()
        self.num_sparse_features = num_sparse_features
        # Not persistent: derived from F, so artifacts do not carry it. The flat form indexes
        # the row-major (F + 1)^2 products in one index_select (5x faster than 2-D indexing).
        side = num_sparse_features + 1
        triu = torch.triu_indices(side, side, offset=1)
        self.register_buffer("triu_indices", triu, persistent=False)
        self.register_buffer("triu_flat", triu[0] * side + triu[1], persistent=False)

    @staticmethod
    def output_size(*, num_sparse_features: int, embedding_dim: int) -> int:
        """D + (F + 1 choose 2)."""
        return embedding_dim + math.comb(num_sparse_features + 1, 2)

    def forward(self, dense_features: Tensor, sparse_features: Tensor) -> Tensor:
        """
        Args:
            dense_features: B X D.
            sparse_features: B X F X D.

        Returns:
            B X (D + (F + 1 choose 2)): the dense vector, then the upper triangle of the
            (F + 1) X (F + 1) dot-product matrix, row-major.
        """
        combined = torch.cat((dense_features.unsqueeze(1), sparse_features), dim=1)
        return self.interact(combined)

    def interact(self, combined: Tensor) -> Tensor:
        """
        Args:
            combined: B X (F + 1) X D, the dense vector first.

        Returns:
            as ``forward``.
        """
        interactions = torch.bmm(combined, combined.transpose(1, 2))
        flat = interactions.flatten(1).index_select(1, self.triu_flat)
        return torch.cat((combined[:, 0], flat), dim=1)


class OverArch(nn.Module):
    """Top MLP: ReLU between layers, the last layer a single logit without activation.

    Args:
        in_features: output size of ``InteractionArch``.
        layer_sizes: output size of each layer; the last is 1.

    Example::

        over_arch = OverArch(in_features=11, layer_sizes=[5, 1])
        logits = over_arch(torch.rand(10, 11))  # 10 X 1
    """

    def __init__(self, *, in_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        if not layer_sizes or layer_sizes[-1] != 1:
            raise ValueError(
                f"OverArch's last layer must have 1 output, got layer_sizes {list(layer_sizes)}"
            )
        self.mlp = _mlp(in_features, layer_sizes, final_relu=False)

    def forward(self, features: Tensor) -> Tensor:
        """
        Args:
            features: B X in_features.

        Returns:
            B X 1 logits.
        """
        return self.mlp(features)


class DLRM(nn.Module):
    """Click-through-rate model: logits from dense features and hashed categorical ids.

    Initialisation draws from torch's global generator; call ``torch.manual_seed`` first
    for a reproducible model.

    Args:
        num_dense: N, at least 1.
        table_sizes: hash size of each categorical feature, F entries.
        embedding_dim: D.
        bottom_mlp: ``DenseArch`` layer sizes; the last must equal ``embedding_dim``.
        top_mlp: ``OverArch`` layer sizes; a final 1-unit layer is appended unless the
            last size is already 1.
        feature_names: the F categorical feature names, in the order of ``table_sizes``.

    Example::

        model = DLRM(num_dense=13, table_sizes=[1000, 500], embedding_dim=16,
                     bottom_mlp=[64, 16], top_mlp=[64, 32, 1], feature_names=["C1", "C2"])
        logits = model(batch)  # B
    """

    def __init__(
        self,
        *,
        num_dense: int,
        table_sizes: Sequence[int],
        embedding_dim: int,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
        feature_names: Sequence[str],
    ) -> None:
        super().__init__()
        _check_arguments(num_dense, table_sizes, embedding_dim, bottom_mlp, top_mlp, feature_names)
        top = [int(s) for s in top_mlp]
        if not top or top[-1] != 1:
            top.append(1)
        self._architecture: dict[str, Any] = {
            "num_dense": int(num_dense),
            "table_sizes": [int(s) for s in table_sizes],
            "embedding_dim": int(embedding_dim),
            "bottom_mlp": [int(s) for s in bottom_mlp],
            "top_mlp": top,
            "feature_names": [str(n) for n in feature_names],
        }
        self.feature_names: tuple[str, ...] = tuple(self._architecture["feature_names"])
        self.dense_arch = DenseArch(in_features=num_dense, layer_sizes=bottom_mlp)
        self.sparse_arch = SparseArch(table_sizes=table_sizes, embedding_dim=embedding_dim)
        self.inter_arch = InteractionArch(num_sparse_features=len(table_sizes))
        self.over_arch = OverArch(
            in_features=InteractionArch.output_size(
                num_sparse_features=len(table_sizes), embedding_dim=embedding_dim
            ),
            layer_sizes=top,
        )

    @classmethod
    def from_schema(
        cls,
        schema: FeatureSchema,
        *,
        embedding_dim: int,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
    ) -> DLRM:
        """A DLRM whose inputs match ``schema``: one table per categorical column."""
        return cls(
            num_dense=len(schema.dense),
            table_sizes=schema.hash_sizes,
            embedding_dim=embedding_dim,
            bottom_mlp=bottom_mlp,
            top_mlp=top_mlp,
            feature_names=schema.categorical_names,
        )

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments that rebuild this module (untrained)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._architecture.items()}

    def forward(self, batch: Batch) -> Tensor:
        """
        Args:
            batch: dense B X N, sparse ids keyed by ``feature_names``.

        Returns:
            float32 logits of shape (B,).
        """
        if batch.sparse.keys != self.feature_names:
            raise ValueError(
                f"batch sparse keys {list(batch.sparse.keys)} differ from the model's "
                f"feature_names {list(self.feature_names)}"
            )
        if batch.dense.shape[1] != self._architecture["num_dense"]:
            raise ValueError(
                f"batch has {batch.dense.shape[1]} dense features, the model expects "
                f"{self._architecture['num_dense']}"
            )
        dense = self.dense_arch(batch.dense)
        # One stack of the dense vector and the pooled embeddings: the same values as
        # inter_arch(dense, sparse_arch(...)) without an extra B X F X D copy.
        combined = torch.stack([dense, *self.sparse_arch.pooled(batch.sparse)], dim=1)
        return self.over_arch(self.inter_arch.interact(combined)).squeeze(1)


def _check_arguments(
    num_dense: int,
    table_sizes: Sequence[int],
    embedding_dim: int,
    bottom_mlp: Sequence[int],
    top_mlp: Sequence[int],
    feature_names: Sequence[str],
) -> None:
    if num_dense < 1:
        # A zero-width bottom MLP would project nothing; quantized kernels also reject it.
        raise ValueError(
            f"num_dense must be at least 1, got {num_dense}; add a constant dense column "
            "if the feed has none"
        )
    if not table_sizes:
        raise ValueError("DLRM needs at least one categorical feature (table_sizes is empty)")
    if len(table_sizes) != len(feature_names):
        raise ValueError(
            f"table_sizes has {len(table_sizes)} entries but feature_names has "
            f"{len(feature_names)}; give one table size per feature"
        )
    if len(set(feature_names)) != len(feature_names):
        raise ValueError(f"feature_names must be unique, got {list(feature_names)}")
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
    sized = {"table_sizes": table_sizes, "bottom_mlp": bottom_mlp, "top_mlp": top_mlp}
    for name, sizes in sized.items():
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"{name} must hold positive sizes, got {list(sizes)}")
    if not bottom_mlp or bottom_mlp[-1] != embedding_dim:
        last = bottom_mlp[-1] if bottom_mlp else None
        raise ValueError(
            f"bottom_mlp's last size ({last}) must equal embedding_dim ({embedding_dim}): "
            "the dense vector is dotted with every embedding"
        )
