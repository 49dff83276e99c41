"""Embedding tables stored error-bounded-compressed (``models.codec``), served as fp32.

``ErrorBoundedEmbeddingBag`` is a table precision like row-wise int4, with one difference
that matters for byte accounting: what it *stores* and what it *serves* differ.

* stored (state_dict, artifact file, wire): the encoded table, buffer ``encoded`` uint8
  (n,), header + zstandard frame; this is what ``models.quantize.model_bytes`` and so the
  precision search count for it, as for every other recipe (state_dict bytes);
* served (memory): the decoded float32 table, non-persistent buffer ``weight`` (rows, D),
  looked up with ``F.embedding_bag``; ``serving_bytes`` = rows x D x 4.

Loading a state_dict decodes ``encoded`` into ``weight``, so an artifact holds only the
compressed bytes (read back with ``torch.load(weights_only=True)``) and a reloaded table is
bit-identical to the one that was saved (decoding is deterministic).

Precision names: ``ebc_<relative bound>``, e.g. "ebc_0.01": every value within 1 % of the
table's value range (max - min) of its fp32 value.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from quantrec.models.codec import (
    CodecError,
    check_rel_bound,
    decode_table,
    encode_table,
    read_header,
    table_label,
)

# The candidate ladder: the paper's 0.01 (tight) to 0.05 (loose) on Criteo Kaggle, with two
# tighter rungs for tables whose NE is more sensitive than the search budget allows.
EBC_BOUNDS = (0.002, 0.005, 0.01, 0.02, 0.05)


def ebc_precision(rel_bound: float) -> str:
    """The precision name of a relative bound: 0.01 -> "ebc_0.01"."""
    return f"ebc_{check_rel_bound(rel_bound):g}"


class ErrorBoundedEmbeddingBag(nn.Module):
    """Sum-pooled bag whose table is stored encoded within ``rel_bound`` of its value range.

    Args:
        num_embeddings, embedding_dim: as for ``nn.EmbeddingBag``.
        rel_bound: fraction of the table's (max - min) each served value may be off by.

    State: ``encoded`` uint8 (n,) (persistent); ``weight`` float32 (num_embeddings,
    embedding_dim), decoded from it (not persistent).
    """

    def __init__(self, *, num_embeddings: int, embedding_dim: int, rel_bound: float) -> None:
        super().__init__()
        self.rel_bound = check_rel_bound(rel_bound)
        self.precision = ebc_precision(rel_bound)
        self.register_buffer("encoded", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim), persistent=False)

    @classmethod
    def from_float(
        cls, bag: nn.EmbeddingBag, *, rel_bound: float, name: str = ""
    ) -> ErrorBoundedEmbeddingBag:
        if bag.mode != "sum":
            raise ValueError(
                f"only mode='sum' embedding bags can be compressed, got mode={bag.mode!r}"
            )
        module = cls(
            num_embeddings=bag.num_embeddings,
            embedding_dim=bag.embedding_dim,
            rel_bound=rel_bound,
        )
        data = encode_table(bag.weight.detach(), rel_bound=rel_bound, name=name)
        module._set(torch.frombuffer(bytearray(data), dtype=torch.uint8), name=name)
        return module

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    def stored_bytes(self) -> int:
        """Bytes of the encoded table: what an artifact stores and the wire carries."""
        return int(self.encoded.numel())

    def serving_bytes(self) -> int:
        """Bytes of the decoded float32 table held in memory to serve lookups."""
        return self.weight.numel() * self.weight.element_size()

    def dequantized_weight(self) -> Tensor:
        """float32 (num_embeddings, embedding_dim): the decoded table."""
        return self.weight

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids and B offsets -> float32 B X embedding_dim (zeros for an empty bag)."""
        return functional.embedding_bag(values, self.weight, offsets, mode="sum")

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, mode='sum', {self.precision} "
            f"({self.stored_bytes():,} bytes stored)"
        )

    def _set(self, encoded: Tensor, *, name: str) -> None:
        """Decode ``encoded`` into ``weight``; refuse a table of another shape or bound."""
        data = encoded.numpy().tobytes()
        weight = decode_table(data, name=name)
        if tuple(weight.shape) != tuple(self.weight.shape):
            raise CodecError(
                f"{table_label(name)}encoded table is {tuple(weight.shape)}, the module is "
                f"{tuple(self.weight.shape)}"
            )
        stored = read_header(data, name=name).rel_bound
        if stored != self.rel_bound:
            raise CodecError(
                f"{table_label(name)}encoded with relative bound {stored}, the recipe says "
                f"{self.rel_bound} ({self.precision})"
            )
        self.encoded = encoded.clone()
        self.weight = weight

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        # The encoded length varies with the data, so the default same-shape copy cannot
        # load it: decode here instead.
        key = prefix + "encoded"
        if strict:
            unexpected_keys.extend(
                k
                for k in state_dict
                if k.startswith(prefix) and k != key and "." not in k[len(prefix) :]
            )
        if key not in state_dict:
            missing_keys.append(key)
            return
        tensor = state_dict[key]
        if tensor.dtype != torch.uint8 or tensor.dim() != 1:
            errors.append(f"{key}: expected uint8 (n,), got {tensor.dtype} {tuple(tensor.shape)}")
            return
        try:
            self._set(tensor.detach().cpu(), name=prefix.rstrip("."))
        except CodecError as err:
            errors.append(str(err))
