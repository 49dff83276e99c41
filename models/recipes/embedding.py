"""Low-precision replacements for sum-pooled ``nn.EmbeddingBag`` tables.

Row-wise layouts are FBGEMM's, read by torch's own ``quantized::embedding_bag_*`` kernels:

* 8-bit: D uint8 codes, then float32 scale and float32 bias (the row minimum): D + 8 bytes;
* 4-bit: D / 2 bytes of two codes each, then float16 scale and bias: D / 2 + 4 bytes;
* 2-bit: D / 4 bytes of four codes each, then float16 scale and bias: D / 4 + 4 bytes.

The ``_greedy`` recipes first search each row's range to minimise its squared error (the
greedy method of Guan et al. 2019, "Post-training 4-bit quantization on embedding tables"),
clip the row to it, and pack with the same kernel, so they share the layout and lookup.
fp16 rows are looked up with ``F.embedding_bag`` on half weights and upcast after pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

# bits -> (prepack, lookup, unpack, codes per byte)
_KERNELS = {
    8: (
        "embedding_bag_byte_prepack",
        "embedding_bag_byte_rowwise_offsets",
        "embedding_bag_byte_unpack",
        1,
    ),
    4: (
        "embedding_bag_4bit_prepack",
        "embedding_bag_4bit_rowwise_offsets",
        "embedding_bag_4bit_unpack",
        2,
    ),
    2: (
        "embedding_bag_2bit_prepack",
        "embedding_bag_2bit_rowwise_offsets",
        "embedding_bag_2bit_unpack",
        4,
    ),
}
_TAIL_BYTES = {8: 8, 4: 4, 2: 4}  # scale + bias per row
# Greedy search: the range shrinks in steps of (max - min) / bins, by at most ratio of it.
GREEDY_BINS = {4: 200, 2: 100}
GREEDY_RATIO = {4: 0.16, 2: 0.5}
_GREEDY_CHUNK = 8192  # rows per vectorised search step (bounds memory to ~ chunk * D * 8 B)


def _check_sum_bag(bag: nn.EmbeddingBag) -> None:
    if bag.mode != "sum":
        raise ValueError(f"only mode='sum' embedding bags can be quantized, got mode={bag.mode!r}")


class RowwiseEmbeddingBag(nn.Module):
    """Sum-pooled embedding bag stored as FBGEMM row-wise ``bits``-bit rows.

    Per element the dequantized value is within half a step, (row max - row min) /
    (2 (2^bits - 1)), of the (clipped) float value; 4- and 2-bit rows store scale and bias
    in float16, which adds their rounding.

    Args:
        num_embeddings, embedding_dim: as for ``nn.EmbeddingBag``; embedding_dim must be a
            multiple of the codes per byte (2 for 4-bit, 4 for 2-bit).
        bits: 8, 4 or 2.
        greedy: the rows' ranges were searched (recorded in ``precision`` only).

    State: ``packed_weight`` uint8 (num_embeddings, row bytes).
    """

    def __init__(
        self, *, num_embeddings: int, embedding_dim: int, bits: int = 8, greedy: bool = False
    ) -> None:
        super().__init__()
        if bits not in _KERNELS:
            raise ValueError(f"bits must be one of {sorted(_KERNELS)}, got {bits}")
        per_byte = _KERNELS[bits][3]
        if embedding_dim % per_byte:
            raise ValueError(
                f"{bits}-bit rows need embedding_dim divisible by {per_byte}, got {embedding_dim}"
            )
        self.bits = bits
        self.precision = ("int8" if bits == 8 else f"int{bits}") + ("_greedy" if greedy else "")
        row_bytes = embedding_dim // per_byte + _TAIL_BYTES[bits]
        self.register_buffer(
            "packed_weight", torch.zeros(num_embeddings, row_bytes, dtype=torch.uint8)
        )
        self._embedding_dim = embedding_dim

    @classmethod
    def from_float(
        cls, bag: nn.EmbeddingBag, *, bits: int = 8, greedy: bool = False
    ) -> RowwiseEmbeddingBag:
        _check_sum_bag(bag)
        module = cls(
            num_embeddings=bag.num_embeddings,
            embedding_dim=bag.embedding_dim,
            bits=bits,
            greedy=greedy,
        )
        weight = bag.weight.detach().float().contiguous()
        prepack_name, _, unpack_name, _ = _KERNELS[bits]
        prepack = getattr(torch.ops.quantized, prepack_name)
        unpack = getattr(torch.ops.quantized, unpack_name)
        packed = prepack(weight)
        if greedy:
            searched = prepack(greedy_clip_rows(weight, bits=bits))
            # The search scores ranges in float32; the packed float16 scale and bias can undo
            # a tiny gain, so keep per row whichever packing is actually closer.
            closer = _row_error(unpack(searched), weight) < _row_error(unpack(packed), weight)
            packed = torch.where(closer[:, None], searched, packed)
        module.packed_weight = packed
        return module

    @property
    def num_embeddings(self) -> int:
        return int(self.packed_weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    def dequantized_weight(self) -> Tensor:
        """float32 (num_embeddings, embedding_dim)."""
        return getattr(torch.ops.quantized, _KERNELS[self.bits][2])(self.packed_weight)

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """
        Args:
            values: int64 ids of all bags, concatenated.
            offsets: int64 B, start of each bag in ``values``.

        Returns:
            float32 B X embedding_dim (zeros for an empty bag).
        """
        lookup = getattr(torch.ops.quantized, _KERNELS[self.bits][1])
        return lookup(self.packed_weight, values, offsets, False, 0, False, None, None, False)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, mode='sum', rowwise {self.precision}"


class Fp16EmbeddingBag(nn.Module):
    """Sum-pooled bag with float16 rows (2 D bytes); pooled in fp16, returned as float32.

    State: ``weight_fp16`` float16 (num_embeddings, embedding_dim).
    """

    precision = "fp16"

    def __init__(self, *, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.register_buffer("weight_fp16", torch.zeros(num_embeddings, embedding_dim).half())

    @classmethod
    def from_float(cls, bag: nn.EmbeddingBag) -> Fp16EmbeddingBag:
        _check_sum_bag(bag)
        module = cls(num_embeddings=bag.num_embeddings, embedding_dim=bag.embedding_dim)
        module.weight_fp16.copy_(bag.weight.detach().half())
        return module

    def dequantized_weight(self) -> Tensor:
        """float32 (num_embeddings, embedding_dim)."""
        return self.weight_fp16.float()

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """int64 ids and B offsets -> float32 B X embedding_dim."""
        return functional.embedding_bag(values, self.weight_fp16, offsets, mode="sum").float()


def _row_error(approx: Tensor, weight: Tensor) -> Tensor:
    """Squared error of each row, float32 (rows,)."""
    return ((approx - weight) ** 2).sum(dim=1)


def greedy_clip_rows(weight: Tensor, *, bits: int) -> Tensor:
    """Each row clipped to the range that the greedy search found for it.

    Starting from the row's (min, max), every step tries moving the low end up or the high
    end down by (max - min) / bins and keeps the better move; after bins * ratio steps the
    range with the smallest squared error of ``bits``-bit round-to-nearest quantization wins.
    The search never returns a range worse than (min, max), which it evaluates first. 4-bit
    uses FBGEMM's settings (200 bins, 16 %, the same result as its ``optimized_qparams``
    prepack at 2.5x its speed); 2-bit searches half the range, which halves its error.

    Args:
        weight: float32 (rows, D).

    Returns:
        float32 (rows, D), every row clipped to its searched [low, high].
    """
    out = torch.empty_like(weight)
    for start in range(0, weight.shape[0], _GREEDY_CHUNK):
        rows = weight[start : start + _GREEDY_CHUNK]
        low, high = _greedy_range(rows, bits=bits)
        out[start : start + _GREEDY_CHUNK] = torch.minimum(torch.maximum(rows, low), high)
    return out


def _greedy_range(rows: Tensor, *, bits: int) -> tuple[Tensor, Tensor]:
    """(low, high), each float32 (rows, 1), vectorised over rows."""
    levels = 2**bits - 1
    low, high = rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True)
    step = (high - low) / GREEDY_BINS[bits]

    def error(lo: Tensor, hi: Tensor) -> Tensor:
        scale = ((hi - lo) / levels).clamp_min(1e-12)
        codes = torch.round((rows - lo) / scale).clamp(0, levels)
        return ((codes * scale + lo - rows) ** 2).sum(dim=1, keepdim=True)

    best_low, best_high, best_error = low.clone(), high.clone(), error(low, high)
    for _ in range(int(GREEDY_BINS[bits] * GREEDY_RATIO[bits])):
        error_up, error_down = error(low + step, high), error(low, high - step)
        move_low = error_up < error_down
        low = torch.where(move_low, low + step, low)
        high = torch.where(move_low, high, high - step)
        current = torch.minimum(error_up, error_down)
        better = current < best_error
        best_low = torch.where(better, low, best_low)
        best_high = torch.where(better, high, best_high)
        best_error = torch.minimum(current, best_error)
    return best_low, best_high
