"""DLRM (Naumov et al. 2019, https://arxiv.org/abs/1906.00091) as four small modules.

Shapes use the notation of ``models.batch``: B samples, N dense features, F categorical
features, D embedding dimension. The layout follows torchrec's ``DenseArch``, ``SparseArch``,
``InteractionArch`` and ``OverArch``, so module names (``sparse_arch.embedding_bags.3``,
``over_arch.mlp.0``) are stable handles for per-layer precision plans.

Two additions to the published model, both outside the quantizable units (every
``nn.Linear`` and ``nn.EmbeddingBag``), so precision plans and recipes are unchanged:

* ``dense_arch.transform`` (``DenseTransform``): log1p and standardisation of the dense
  columns, fitted on the training window and kept as buffers (``log1p``, ``shift``,
  ``scale``), so a saved model scores new rows exactly as it trained. Identity until fitted;
  a state_dict written before it existed loads as the identity.
* ``inter_arch.constant`` (``first_order=True``): a learned D vector joined to the
  interaction's set. ``dot(e_i, constant)`` is a learned scalar per id, the first-order
  effect a logistic regression has, which the dot products of the published DLRM only give
  through the dense vector. Next-day NE on the synthetic feed (3 days of 100k rows,
  benchmarks/quality.py, 2024-01-04 / 01-05): 0.8619 / 0.8622 without, 0.8601 / 0.8603 with.

The dense transform measured the same way: 0.8635 / 0.8624 without (log1p counts straight
into the bottom MLP), 0.8601 / 0.8603 with.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.batch import Batch, KeyedJaggedIds, dense_width
from quantrec.models.representations import (
    RepresentationSpec,
    build_representation,
    representation_specs,
)


def _mlp(in_features: int, layer_sizes: Sequence[int], *, final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out_features in enumerate(layer_sizes):
        layers.append(nn.Linear(in_features, out_features))
        if final_relu or i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
        in_features = out_features
    return nn.Sequential(*layers)


_TRANSFORM_BUFFERS = ("log1p", "shift", "scale")


class DenseTransform(nn.Module):
    """Per dense column: optional ``log1p(max(x, 0))``, then ``(x - shift) * scale``.

    Fitted on the training rows (``fit``): ``shift`` is the column mean and ``scale`` the
    inverse standard deviation (1 for a constant column), after the log1p of the columns
    it applies to. Buffers, so they are saved with the model and never quantized. Until
    fitted it is the identity, bit for bit.

    Args:
        num_dense: N.
        log1p_nonnegative: ``fit`` log-scales every column that is non-negative on the
            training rows. For batches of raw columns (a schema with ``dense_transform =
            "none"``); leave False when ``batch_from_frame`` already applied log1p.
    """

    def __init__(self, num_dense: int, *, log1p_nonnegative: bool = False) -> None:
        super().__init__()
        self.log1p_nonnegative = log1p_nonnegative
        self.register_buffer("log1p", torch.zeros(num_dense, dtype=torch.bool))
        self.register_buffer("shift", torch.zeros(num_dense))
        self.register_buffer("scale", torch.ones(num_dense))

    def forward(self, features: Tensor) -> Tensor:
        """float32 B X N -> float32 B X N."""
        logged = torch.where(self.log1p, torch.log1p(features.clamp(min=0.0)), features)
        return (logged - self.shift) * self.scale

    @torch.no_grad()
    def fit(self, parts: Iterable[Tensor]) -> None:
        """Set log1p, shift and scale from the rows of ``parts`` (each float32 B X N), in
        one pass. Sums run in float64 in the order given: the same parts, the same buffers.
        """
        num_dense = self.shift.shape[0]
        rows = 0
        minimum = torch.full((num_dense,), float("inf"), dtype=torch.float64)
        raw = torch.zeros(2, num_dense, dtype=torch.float64)  # sum, sum of squares
        logged = torch.zeros(2, num_dense, dtype=torch.float64)
        for part in parts:
            if part.dim() != 2 or part.shape[1] != num_dense:
                raise ValueError(
                    f"dense rows must be B X {num_dense} to fit the transform, got "
                    f"{tuple(part.shape)}"
                )
            if not len(part):
                continue
            x = part.double()
            rows += x.shape[0]
            minimum = torch.minimum(minimum, x.min(0).values)
            raw += torch.stack((x.sum(0), x.square().sum(0)))
            if self.log1p_nonnegative:
                y = torch.log1p(x.clamp(min=0.0))
                logged += torch.stack((y.sum(0), y.square().sum(0)))
        if rows == 0:
            raise ValueError("cannot fit the dense transform on 0 rows")
        log1p = (
            (minimum >= 0) if self.log1p_nonnegative else torch.zeros(num_dense, dtype=torch.bool)
        )
        sums = torch.where(log1p, logged, raw)
        mean = sums[0] / rows
        std = (sums[1] / rows - mean.square()).clamp(min=0.0).sqrt()
        # A constant column carries nothing; scale 1 keeps it finite (it becomes 0).
        constant = std <= 1e-6 * mean.abs().clamp(min=1.0)
        self.log1p.copy_(log1p)
        self.shift.copy_(mean.float())
        self.scale.copy_(torch.where(constant, torch.ones_like(std), 1.0 / std).float())

    def reset(self) -> None:
        """Back to the identity."""
        self.log1p.zero_()
        self.shift.zero_()
        self.scale.fill_(1.0)

    def _load_from_state_dict(
        self,
        state_dict,
        prefix,
        local_metadata,
        strict,  # type: ignore[no-untyped-def]
        missing_keys,
        unexpected_keys,
        error_msgs,
    ) -> None:
        if not any(prefix + name in state_dict for name in _TRANSFORM_BUFFERS):
            # Written before dense transforms existed: that model saw untransformed rows.
            self.reset()
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class DenseArch(nn.Module):
    """Bottom MLP: projects dense features into the embedding space (ReLU after every layer).

    The features first pass through ``transform`` (a ``DenseTransform``, identity until
    fitted), so every caller of ``dense_arch`` sees the same transformed inputs.

    Args:
        in_features: N.
        layer_sizes: output size of each layer; the last is D.
        log1p_nonnegative: see ``DenseTransform``.

    Example::

        dense_arch = DenseArch(in_features=13, layer_sizes=[64, 16])
        embedded = dense_arch(torch.rand(20, 13))  # 20 X 16
    """

    def __init__(
        self, *, in_features: int, layer_sizes: Sequence[int], log1p_nonnegative: bool = False
    ) -> None:
        super().__init__()
        self.transform = DenseTransform(in_features, log1p_nonnegative=log1p_nonnegative)
        self.mlp = _mlp(in_features, layer_sizes, final_relu=True)

    def forward(self, features: Tensor) -> Tensor:
        """
        Args:
            features: float32 B X N, as ``batch_from_frame`` gives them.

        Returns:
            float32 B X D.
        """
        return self.mlp(self.transform(features))


class SparseArch(nn.Module):
    """One sum-pooled ``nn.EmbeddingBag`` per categorical feature, with sparse gradients.

    Args:
        table_sizes: rows of each feature's table (its hash size), F entries.
        embedding_dim: D.
        representations: per feature, None (the full table) or a ``RepresentationSpec`` of
            ``models.representations`` (hashed, quotient-remainder, DHE, hybrid), built in
            the table's place after the full tables are initialised.

    Example::

        sparse_arch = SparseArch(table_sizes=[100, 50], embedding_dim=8)
        pooled = sparse_arch(ids)  # ids: KeyedJaggedIds with 2 keys -> B X 2 X 8
    """

    def __init__(
        self,
        *,
        table_sizes: Sequence[int],
        embedding_dim: int,
        representations: Sequence[RepresentationSpec | None] | None = None,
    ) -> None:
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
        # On a forked RNG: the rest of the model starts as the full-table model does, so
        # two models that differ in one table's representation differ only there.
        built = [i for i, spec in enumerate(representations or ()) if spec and spec.kind != "table"]
        with torch.random.fork_rng(devices=[], enabled=bool(built)):
            for i in built:
                self.embedding_bags[i] = build_representation(
                    representations[i], num_embeddings=table_sizes[i], embedding_dim=embedding_dim
                )

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
    """Pairwise dot products of the dense vector, the F pooled embeddings and, with
    ``constant_dim``, a learned constant vector (K = F + 1 vectors, or F + 2).

    Args:
        num_sparse_features: F.
        constant_dim: D of the learned constant vector ``constant`` joined last to the set;
            None (the published DLRM): no constant.

    Example::

        inter_arch = InteractionArch(num_sparse_features=2)
        out = inter_arch(torch.rand(10, 8), torch.rand(10, 2, 8))  # 10 X (8 + 3)
    """

    def __init__(self, *, num_sparse_features: int, constant_dim: int | None = None) -> None:
        super().__init__()
        self.num_sparse_features = num_sparse_features
        self.constant: nn.Parameter | None = None
        if constant_dim is not None:
            # Small, so the first-order scalars start near 0 like the embeddings' products.
            self.constant = nn.Parameter(torch.randn(constant_dim) * 0.1)
        # Not persistent: derived from F, so artifacts do not carry it. The flat form indexes
        # the row-major K^2 products in one index_select (5x faster than 2-D indexing).
        side = num_sparse_features + 1 + (constant_dim is not None)
        triu = torch.triu_indices(side, side, offset=1)
        self.register_buffer("triu_indices", triu, persistent=False)
        self.register_buffer("triu_flat", triu[0] * side + triu[1], persistent=False)

    @staticmethod
    def output_size(
        *, num_sparse_features: int, embedding_dim: int, first_order: bool = False
    ) -> int:
        """D + (K choose 2), K = F + 1, plus 1 with the constant vector (``first_order``)."""
        return embedding_dim + math.comb(num_sparse_features + 1 + first_order, 2)

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
            as ``forward``. The constant vector, when there is one, is the last of the K
            vectors, so the triangle also holds its product with every other vector.
        """
        if self.constant is not None:
            constant = self.constant.expand(combined.shape[0], 1, -1)
            combined = torch.cat((combined, constant), dim=1)
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
        first_order: join a learned constant vector to the interaction (module docstring).
            False by default because architectures recorded before it existed lack the key;
            ``from_schema`` (new models) turns it on.
        log1p_dense: the dense transform log-scales the non-negative columns when fitted
            (``DenseTransform``); what it fitted is in the buffers.
        representations: feature name -> representation spec (``models.representations``:
            a dict such as ``{"kind": "qr", "collisions": 8, "combine": "mult"}``); features
            not named keep the full table. Recorded in the architecture only when given.

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
        first_order: bool = False,
        log1p_dense: bool = False,
        representations: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(num_dense, table_sizes, embedding_dim, bottom_mlp, top_mlp, feature_names)
        specs = representation_specs(representations, feature_names)
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
        # Recorded only when on, so architectures of models without them read as before.
        if first_order:
            self._architecture["first_order"] = True
        if log1p_dense:
            self._architecture["log1p_dense"] = True
        if any(spec is not None for spec in specs):
            self._architecture["representations"] = {
                name: spec.to_dict() for name, spec in zip(feature_names, specs) if spec is not None
            }
        self.feature_names: tuple[str, ...] = tuple(self._architecture["feature_names"])
        # The optimizers' state of the run that last trained these weights (``train_dlrm``
        # sets it; the fp32 artifact keeps it), so continual training resumes it: not a
        # module buffer, so no variant and no size measurement counts it.
        self.optimizer_state: dict | None = None
        self.dense_arch = DenseArch(
            in_features=num_dense, layer_sizes=bottom_mlp, log1p_nonnegative=log1p_dense
        )
        self.sparse_arch = SparseArch(
            table_sizes=table_sizes, embedding_dim=embedding_dim, representations=specs
        )
        self.inter_arch = InteractionArch(
            num_sparse_features=len(table_sizes),
            constant_dim=embedding_dim if first_order else None,
        )
        self.over_arch = OverArch(
            in_features=InteractionArch.output_size(
                num_sparse_features=len(table_sizes),
                embedding_dim=embedding_dim,
                first_order=first_order,
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
        first_order: bool = True,
    ) -> DLRM:
        """A DLRM whose inputs match ``schema``: one table per categorical column.

        With the learned constant vector (``first_order``) unless told otherwise; the dense
        transform log-scales non-negative columns when the schema's batches arrive raw
        (``dense_transform = "none"``), and only standardises them otherwise.
        """
        return cls(
            num_dense=dense_width(schema),
            table_sizes=schema.hash_sizes,
            embedding_dim=embedding_dim,
            bottom_mlp=bottom_mlp,
            top_mlp=top_mlp,
            feature_names=schema.categorical_names,
            first_order=first_order,
            log1p_dense=schema.dense_transform == "none",
        )

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments that rebuild this module (untrained)."""
        return {
            k: list(v) if isinstance(v, list) else copy.deepcopy(v)
            for k, v in self._architecture.items()
        }

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
