"""Embedding representations (MP-Rec, Hsia et al. 2023, arXiv 2302.10872): how one
categorical feature's ids become its pooled D vector.

One interface, the one ``nn.EmbeddingBag`` already has: ``module(values, offsets)`` takes
the concatenated int64 ids of B bags and their B start offsets and returns float32 B X D,
the sum over each bag (zeros for an empty bag). So a representation replaces any table of
``SparseArch`` (``DLRM(representations={"item_id": {...}})``), multi-valued bags included.

Kinds (``RepresentationSpec.kind``):

* ``table``: today's full table, ids x D (the plain ``nn.EmbeddingBag``, unchanged).
* ``hashed``: a table of ``rows`` < ids rows, the id hashed into it (a universal hash,
  ``((a x + b) mod p) mod rows``): colliding ids share a row.
* ``qr``: quotient-remainder compositional embedding (Shi et al. 2020; facebookresearch/dlrm
  ``qr_embedding_bag``): a quotient table of ceil(ids / collisions) rows and a remainder
  table of ``collisions`` rows, id -> (id // collisions, id % collisions), the two rows
  combined by ``mult`` (elementwise), ``add`` or ``concat`` (D/2 each). Every id gets a
  distinct pair of rows, so no two ids are forced to share a vector. The combine happens
  per id, before pooling: sum-pooling first and multiplying the two sums is only right for
  one-id bags (for ``add`` and ``concat`` the two orders agree, so those pool first).
* ``dhe``: deep hash embedding (Kang et al., KDD 2021): ``hashes`` universal hash functions
  give each id a dense code in [-1, 1]^k (``buckets`` levels), an MLP decodes it to D; no
  table, so the bytes do not grow with the ids. Decoded per id, then pooled.
* ``hybrid``: a full table and a DHE together (MP-Rec's), ``add`` (both D wide) or
  ``concat`` (table D - D/2, DHE D/2).

Every learned part is an ``nn.EmbeddingBag`` (sparse gradients) or an ``nn.Linear``, so the
precision plans of ``models.quantize`` reach inside a representation: row-wise quantization
of the QR, hashed and hybrid tables, int8 of the DHE decoder (units such as
``sparse_arch.embedding_bags.3.quotient`` or ``sparse_arch.embedding_bags.3.decoder.0``).
The hash constants are derived from ``hash_seed`` with splitmix64 in integer arithmetic
(never Python's ``hash`` nor torch's RNG): the same id gets the same code in every process,
so they are not saved (non-persistent buffers) and an artifact holds weights only.

Training: ``models.fused`` looks plain tables up in one fused storage; a model with any
other representation trains on the per-table path of ``models.train`` (sparse gradients
from autograd, row-wise Adagrad on every inner table, Adam on the decoders), which
``train_dlrm`` falls back to by itself.

Pure torch: no Prefect, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

KINDS = ("table", "hashed", "qr", "dhe", "hybrid")
QR_COMBINES = ("mult", "add", "concat")
HYBRID_COMBINES = ("add", "concat")
_PRIME = 2**31 - 1  # Mersenne prime of the universal hashes: a * id < 2^62 fits int64
# DHE defaults, scaled down from the paper's k=1024 codes and 1800-unit MLP for one CPU
# core: at these sizes a decoder costs about 25k multiply-adds per id.
DEFAULT_DHE_HASHES = 64
DEFAULT_DHE_BUCKETS = 1_000_000  # the paper's m
DEFAULT_DHE_HIDDEN = (128, 128)


class RepresentationError(ValueError):
    """A representation spec that names an unknown kind or holds an impossible value."""


@dataclass(frozen=True)
class RepresentationSpec:
    """How one feature's ids are represented: what the model config records per table.

    Attributes:
        kind: one of ``KINDS``.
        rows: ``hashed``: rows of the smaller table, at least 1.
        collisions: ``qr``: ids per quotient row (the remainder table's rows), at least 2.
        combine: ``qr``: mult | add | concat; ``hybrid``: add | concat.
        hashes: ``dhe`` / ``hybrid``: k, the code's width.
        buckets: ``dhe`` / ``hybrid``: levels of each hash before it is scaled to [-1, 1].
        hidden: ``dhe`` / ``hybrid``: the decoder's hidden layer sizes.
        hash_seed: seed of the hash constants (``hashed``, ``dhe``, ``hybrid``).
    """

    kind: str = "table"
    rows: int | None = None
    collisions: int | None = None
    combine: str | None = None
    hashes: int = DEFAULT_DHE_HASHES
    buckets: int = DEFAULT_DHE_BUCKETS
    hidden: tuple[int, ...] = field(default=DEFAULT_DHE_HIDDEN)
    hash_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kind not in KINDS:
            raise RepresentationError(f"representation kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "hashed" and (self.rows is None or self.rows < 1):
            raise RepresentationError(f"a hashed representation needs rows >= 1, got {self.rows}")
        if self.kind == "qr":
            if self.collisions is None or self.collisions < 2:
                raise RepresentationError(
                    f"a qr representation needs collisions >= 2, got {self.collisions}"
                )
            if self.combine not in QR_COMBINES:
                raise RepresentationError(
                    f"qr combine {self.combine!r}; expected one of {QR_COMBINES}"
                )
        if self.kind == "hybrid" and self.combine not in HYBRID_COMBINES:
            raise RepresentationError(
                f"hybrid combine {self.combine!r}; expected one of {HYBRID_COMBINES}"
            )
        if self.hashes < 1 or self.buckets < 2 or any(h < 1 for h in self.hidden):
            raise RepresentationError(
                f"DHE needs hashes >= 1, buckets >= 2 and positive hidden sizes; got hashes="
                f"{self.hashes}, buckets={self.buckets}, hidden={list(self.hidden)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields this kind uses, JSON-ready (what ``DLRM.architecture`` records)."""
        used = {"kind"} | _FIELDS[self.kind]
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if k in used
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepresentationSpec:
        """Read ``to_dict``'s output (or a config's table); unknown keys are refused."""
        if isinstance(data, RepresentationSpec):
            return data
        kind = data.get("kind", "table")
        allowed = {"kind"} | _FIELDS.get(kind, set())
        extra = sorted(set(data) - allowed)
        if extra:
            raise RepresentationError(
                f"representation {kind!r} takes {sorted(allowed)}; got unknown {extra}"
            )
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)

    def label(self) -> str:
        """A short name for tables and reports, e.g. ``qr-mult-c8`` or ``hashed-r4096``."""
        if self.kind == "hashed":
            return f"hashed-r{self.rows}"
        if self.kind == "qr":
            return f"qr-{self.combine}-c{self.collisions}"
        if self.kind == "dhe":
            return f"dhe-k{self.hashes}"
        if self.kind == "hybrid":
            return f"hybrid-{self.combine}-k{self.hashes}"
        return "table"


_DHE_FIELDS = {"hashes", "buckets", "hidden", "hash_seed"}
_FIELDS = {
    "table": set(),
    "hashed": {"rows", "hash_seed"},
    "qr": {"collisions", "combine"},
    "dhe": _DHE_FIELDS,
    "hybrid": _DHE_FIELDS | {"combine"},
}


def build_representation(
    spec: RepresentationSpec | Mapping[str, Any], *, num_embeddings: int, embedding_dim: int
) -> nn.Module:
    """The module of ``spec`` for a feature of ``num_embeddings`` ids and width D.

    ``table`` is the plain sum-pooled ``nn.EmbeddingBag`` with sparse gradients, initialised
    as ``SparseArch`` does; every other kind its own module below.
    """
    spec = RepresentationSpec.from_dict(spec)
    n, d = int(num_embeddings), int(embedding_dim)
    if n < 1 or d < 1:
        raise RepresentationError(f"need num_embeddings >= 1 and embedding_dim >= 1; got {n}, {d}")
    if spec.kind == "table":
        return _table(n, d, bound_rows=n)
    if spec.kind == "hashed":
        return HashedEmbeddingBag(num_embeddings=n, embedding_dim=d, spec=spec)
    if spec.kind == "qr":
        return QREmbeddingBag(num_embeddings=n, embedding_dim=d, spec=spec)
    if spec.kind == "dhe":
        return DeepHashEmbedding(num_embeddings=n, embedding_dim=d, spec=spec)
    return HybridEmbeddingBag(num_embeddings=n, embedding_dim=d, spec=spec)


def representation_bytes(module: nn.Module) -> int:
    """Bytes a representation holds to serve: its state plus the derived hash constants."""
    tensors = list(module.state_dict().values())
    persistent = {id(t) for t in tensors}
    tensors += [b for b in module.buffers() if id(b) not in persistent]
    return sum(t.numel() * t.element_size() for t in tensors)


def _table(rows: int, dim: int, *, bound_rows: int) -> nn.EmbeddingBag:
    bag = nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)
    # SparseArch's init: Uniform(+-1/sqrt(ids)) (torchrec, the DLRM reference).
    bound = 1.0 / math.sqrt(bound_rows)
    nn.init.uniform_(bag.weight, -bound, bound)
    return bag


def _splitmix64(state: int) -> tuple[int, int]:
    """(next state, 64-bit output) of splitmix64 (Steele et al. 2014), in Python ints."""
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return state, z ^ (z >> 31)


def hash_constants(count: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """int64 (count,) multipliers a in [1, p) and offsets b in [0, p), p = 2^31 - 1: the
    same values for the same seed in every process (no RNG, no ``hash()``)."""
    state, a, b = int(seed), [], []
    for _ in range(count):
        state, x = _splitmix64(state)
        state, y = _splitmix64(state)
        a.append(1 + x % (_PRIME - 1))
        b.append(y % _PRIME)
    return torch.tensor(a, dtype=torch.int64), torch.tensor(b, dtype=torch.int64)


def universal_hash(ids: Tensor, a: Tensor, b: Tensor, buckets: int) -> Tensor:
    """int64 (N, k) ``((a_j id + b_j) mod p) mod buckets`` for ids (N,) in [0, p)."""
    return ((ids.unsqueeze(1) * a + b) % _PRIME) % buckets


def _check_ids(num_embeddings: int) -> None:
    if num_embeddings >= _PRIME:
        raise RepresentationError(
            f"hashed representations take ids below {_PRIME}, got a table of {num_embeddings}"
        )


def _per_id(bag: nn.Module, ids: Tensor) -> Tensor:
    """float32 N X D: each id's own row, through the bag's lookup (plain or quantized)."""
    return bag(ids, torch.arange(ids.shape[0], dtype=torch.int64, device=ids.device))


def sum_pool(per_id: Tensor, offsets: Tensor) -> Tensor:
    """Sum the N X D per-id vectors into B X D bags (offsets (B,), zeros for empty bags)."""
    batch, total = offsets.shape[0], per_id.shape[0]
    if total == batch and torch.equal(offsets, torch.arange(batch, device=offsets.device)):
        return per_id  # one id per bag: nothing to sum
    lengths = torch.diff(offsets, append=offsets.new_tensor([total]))
    bag_of_id = torch.repeat_interleave(torch.arange(batch, device=offsets.device), lengths)
    return per_id.new_zeros(batch, per_id.shape[1]).index_add(0, bag_of_id, per_id)


class HashedEmbeddingBag(nn.Module):
    """``spec.rows`` x D table; id -> ``((a id + b) mod p) mod rows``.

    State: ``table.weight`` float32 (rows, D).
    """

    def __init__(
        self, *, num_embeddings: int, embedding_dim: int, spec: RepresentationSpec
    ) -> None:
        super().__init__()
        _check_ids(num_embeddings)
        self.num_embeddings, self.embedding_dim, self.spec = num_embeddings, embedding_dim, spec
        self.table = _table(int(spec.rows), embedding_dim, bound_rows=int(spec.rows))
        a, b = hash_constants(1, seed=spec.hash_seed)
        self.register_buffer("hash_a", a, persistent=False)
        self.register_buffer("hash_b", b, persistent=False)

    def rows_of(self, ids: Tensor) -> Tensor:
        """int64 (N,): the table row of each id."""
        return universal_hash(ids, self.hash_a, self.hash_b, int(self.spec.rows)).squeeze(1)

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids (N,), offsets (B,) -> float32 B X D."""
        return self.table(self.rows_of(values), offsets)


class QREmbeddingBag(nn.Module):
    """Quotient-remainder embedding: id -> combine(quotient[id // c], remainder[id % c]).

    State: ``quotient.weight`` float32 (ceil(ids / c), Dq), ``remainder.weight`` float32
    (c, Dr); Dq = Dr = D for mult and add, D - D/2 and D/2 for concat.
    """

    def __init__(
        self, *, num_embeddings: int, embedding_dim: int, spec: RepresentationSpec
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.spec = num_embeddings, embedding_dim, spec
        self.collisions, self.combine = int(spec.collisions), str(spec.combine)
        if self.combine == "concat" and embedding_dim < 2:
            raise RepresentationError(f"qr concat needs embedding_dim >= 2, got {embedding_dim}")
        dq, dr = (
            (embedding_dim - embedding_dim // 2, embedding_dim // 2)
            if self.combine == "concat"
            else (embedding_dim, embedding_dim)
        )
        rows_q = math.ceil(num_embeddings / self.collisions)
        self.quotient = _table(rows_q, dq, bound_rows=num_embeddings)
        if self.combine == "mult":
            # Remainder rows near 1: the products start at a full table's scale and the
            # ids of one quotient row already differ (a row of zeros would never move).
            self.remainder = nn.EmbeddingBag(self.collisions, dr, mode="sum", sparse=True)
            nn.init.uniform_(self.remainder.weight, 0.5, 1.5)
        else:
            self.remainder = _table(self.collisions, dr, bound_rows=num_embeddings)

    def split(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(quotient rows, remainder rows) of ids (N,): a distinct pair for every id."""
        return torch.div(ids, self.collisions, rounding_mode="floor"), ids % self.collisions

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids (N,), offsets (B,) -> float32 B X D."""
        q, r = self.split(values)
        if self.combine == "mult":  # not linear: combine per id, then pool
            return sum_pool(_per_id(self.quotient, q) * _per_id(self.remainder, r), offsets)
        pooled_q, pooled_r = self.quotient(q, offsets), self.remainder(r, offsets)
        if self.combine == "add":
            return pooled_q + pooled_r
        return torch.cat((pooled_q, pooled_r), dim=1)


class DeepHashEmbedding(nn.Module):
    """DHE: id -> k hashes -> code in [-1, 1]^k -> MLP (ReLU between layers) -> D.

    State: ``decoder`` (nn.Linear layers) only; the hash constants are derived.
    """

    def __init__(
        self, *, num_embeddings: int, embedding_dim: int, spec: RepresentationSpec
    ) -> None:
        super().__init__()
        _check_ids(num_embeddings)
        self.num_embeddings, self.embedding_dim, self.spec = num_embeddings, embedding_dim, spec
        a, b = hash_constants(spec.hashes, seed=spec.hash_seed)
        self.register_buffer("hash_a", a, persistent=False)
        self.register_buffer("hash_b", b, persistent=False)
        layers: list[nn.Module] = []
        width = spec.hashes
        for size in (*spec.hidden, embedding_dim):
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.decoder = nn.Sequential(*layers[:-1])  # no ReLU after the output layer

    def encode(self, ids: Tensor) -> Tensor:
        """float32 N X k: the dense code of each id (uniform levels in [-1, 1])."""
        levels = universal_hash(ids, self.hash_a, self.hash_b, self.spec.buckets)
        return levels.to(torch.float32).mul_(2.0 / (self.spec.buckets - 1)).sub_(1.0)

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids (N,), offsets (B,) -> float32 B X D (decoded per id, then summed)."""
        return sum_pool(self.decoder(self.encode(values)), offsets)


class HybridEmbeddingBag(nn.Module):
    """A full table and a DHE, added (both D) or concatenated (table D - D/2, DHE D/2).

    State: ``table.weight`` float32 (ids, Dt) and ``dhe.decoder``.
    """

    def __init__(
        self, *, num_embeddings: int, embedding_dim: int, spec: RepresentationSpec
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.spec = num_embeddings, embedding_dim, spec
        self.combine = str(spec.combine)
        if self.combine == "concat" and embedding_dim < 2:
            raise RepresentationError(
                f"hybrid concat needs embedding_dim >= 2, got {embedding_dim}"
            )
        dt, dd = (
            (embedding_dim - embedding_dim // 2, embedding_dim // 2)
            if self.combine == "concat"
            else (embedding_dim, embedding_dim)
        )
        self.table = _table(num_embeddings, dt, bound_rows=num_embeddings)
        self.dhe = DeepHashEmbedding(num_embeddings=num_embeddings, embedding_dim=dd, spec=spec)

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids (N,), offsets (B,) -> float32 B X D."""
        table, dhe = self.table(values, offsets), self.dhe(values, offsets)
        return table + dhe if self.combine == "add" else torch.cat((table, dhe), dim=1)


def representation_specs(
    representations: Mapping[str, Any] | None, feature_names: Sequence[str]
) -> list[RepresentationSpec | None]:
    """Per feature, in order, its spec (None: the default full table).

    Raises:
        RepresentationError: a name that is not a feature, or a bad spec (named).
    """
    representations = dict(representations or {})
    unknown = sorted(set(representations) - set(feature_names))
    if unknown:
        raise RepresentationError(
            f"representations name features {unknown} the model lacks; it has {list(feature_names)}"
        )
    specs: list[RepresentationSpec | None] = []
    for name in feature_names:
        if name not in representations:
            specs.append(None)
            continue
        try:
            specs.append(RepresentationSpec.from_dict(representations[name]))
        except (RepresentationError, TypeError) as err:
            raise RepresentationError(f"feature {name!r}: {err}") from err
    return specs


REPRESENTATION_TYPES = (HashedEmbeddingBag, QREmbeddingBag, DeepHashEmbedding, HybridEmbeddingBag)


def uses_representations(model: nn.Module) -> bool:
    """Whether any table of ``model`` is a representation other than a full table (such a
    model trains on ``train_dlrm``'s per-table path, not the fused one)."""
    return any(isinstance(m, REPRESENTATION_TYPES) for m in model.modules())
