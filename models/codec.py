"""Error-bounded lossy compression of embedding tables (after Feng et al., SC 2024).

``encode_table(weight, rel_bound=r, name=...)`` turns a float table into plain bytes such that
``decode_table`` gives back every value within the absolute bound ``b = r x (max - min)`` of
the whole table (its value range), and nothing else needs to be known to decode it:

1. ``b = r x (max - min)``; codes ``c = round(x / s)`` with the step ``s = 2 b`` less a
   margin of one float32 ulp of the table's largest magnitude, so that the decoded value
   ``float32(c x s)`` stays within ``b`` of ``x`` *after* its rounding to float32 (with the
   plain ``s = 2 b``, 4 of 1.6M Gaussian values landed past the bound at r = 0.001);
2. the codes, shifted by their minimum to start at 0, in the narrowest unsigned width that
   holds them (1, 2, 4 or 8 bytes), split into byte planes (all low bytes, then the next):
   the high planes of narrow-range codes are mostly zeros and compress to almost nothing;
3. a lossless entropy coder: one zstandard frame (``zstandard`` from PyPI) of the planes.

A constant table (range 0, e.g. a single row or an untrained zero table) has ``b = 0`` and is
stored exactly as its one value. NaN or inf makes the value range undefined and is refused
with a ``CodecError`` naming the table. The container is a fixed 72-byte little-endian
header then the frame; decoding checks the header and the frame's length.

Decoding is deterministic (the same float64 product, then float32), so a table decoded at
load time is bit-identical to the one the encoder checked and the search scored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch
import zstandard
from torch import Tensor

MAGIC = b"QEBC"
FORMAT_VERSION = 1
# magic, version, code width (bytes; 0: constant table), pad, rows, dim, relative bound,
# absolute bound, step, code offset, constant value, frame bytes.
_HEADER = struct.Struct("<4sBB2xqqdddqdq")
HEADER_BYTES = _HEADER.size
# zstd level 19: decoding speed does not depend on the level; on 1.6M Gaussian values 19
# packs the codes of a 5 %-of-range bound 15 % smaller than levels 1-3 (the same at 1 %), at
# about a second per table, paid once when a version is built.
ZSTD_LEVEL = 19
_WIDTHS = (1, 2, 4, 8)


class CodecError(ValueError):
    """A table cannot be encoded within its bound, or bytes are not a table this codec wrote."""


@dataclass(frozen=True)
class TableHeader:
    """What the fixed header of an encoded table records.

    Attributes:
        rows, dim: the table's shape.
        rel_bound: the relative bound it was encoded with (fraction of the value range).
        bound: the absolute bound: every decoded value is within it of the original.
        step: the quantization step (a little under 2 x bound; 0 for a constant table).
        width: bytes per stored code (0: constant table, no codes).
        offset: the smallest code (stored codes are code - offset, unsigned).
        constant: the value of a constant table (else 0).
        frame_bytes: length of the zstandard frame after the header.
    """

    rows: int
    dim: int
    rel_bound: float
    bound: float
    step: float
    width: int
    offset: int
    constant: float
    frame_bytes: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            self.width,
            self.rows,
            self.dim,
            self.rel_bound,
            self.bound,
            self.step,
            self.offset,
            self.constant,
            self.frame_bytes,
        )

    @classmethod
    def unpack(cls, data: bytes, *, name: str) -> TableHeader:
        if len(data) < HEADER_BYTES:
            raise CodecError(
                f"{table_label(name)}{len(data)} bytes is shorter than the codec's "
                f"{HEADER_BYTES}-byte header; was it written by encode_table?"
            )
        magic, version, width, *fields = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CodecError(f"{table_label(name)}bytes start with {magic!r}, not {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise CodecError(
                f"{table_label(name)}codec format_version {version}; this reader handles "
                f"{FORMAT_VERSION}"
            )
        rows, dim, rel_bound, bound, step, offset, constant, frame_bytes = fields
        return cls(rows, dim, rel_bound, bound, step, width, offset, constant, frame_bytes)


def check_rel_bound(rel_bound: float) -> float:
    """``rel_bound`` as a float, refused unless 0 < rel_bound <= 1."""
    if not (isinstance(rel_bound, int | float) and 0 < rel_bound <= 1):
        raise CodecError(
            f"relative error bound must be in (0, 1] (a fraction of the table's value "
            f"range, e.g. 0.01), got {rel_bound!r}"
        )
    return float(rel_bound)


def bounds_and_steps(low: Tensor, high: Tensor, rel_bound: float | Tensor) -> tuple[Tensor, Tensor]:
    """(absolute bound, step) of value ranges [low, high], elementwise, float64.

    bound = rel_bound x (high - low); step = 2 x (bound - one float32 ulp of the largest
    magnitude a decoded value can have), so that ``float32(round(x / step) x step)`` is
    within ``bound`` of x. A step <= 0 means the bound is below float32 resolution (or the
    range is 0: then the values are stored exactly).
    """
    low, high = low.double(), high.double()
    bound = torch.as_tensor(rel_bound, dtype=torch.float64) * (high - low)
    largest = (torch.maximum(low.abs(), high.abs()) + bound).float()
    margin = (torch.nextafter(largest, torch.full_like(largest, float("inf"))) - largest).double()
    return bound, 2.0 * (bound - margin)


def encode_table(
    weight: Tensor, *, rel_bound: float, name: str = "", level: int = ZSTD_LEVEL
) -> bytes:
    """Encode a float table within ``rel_bound`` of its value range (module docstring).

    Args:
        weight: float (rows, dim); any float dtype, read as float32 values.
        rel_bound: fraction of ``max - min`` every decoded value may differ by, in (0, 1].
        name: the table's name in error messages (e.g. "sparse_arch.embedding_bags.3").
        level: zstandard's level (decoding speed does not depend on it).

    Returns:
        header + zstandard frame; ``decode_table`` of it is float32 (rows, dim) with
        ``|decoded - weight| <= bound`` everywhere (``TableHeader.bound``).

    Raises:
        CodecError: NaN or inf in ``weight``, a shape that is not 2-d, or a bound below
            float32 resolution for the table's magnitudes.
    """
    rel_bound = check_rel_bound(rel_bound)
    if weight.dim() != 2:
        raise CodecError(
            f"{table_label(name)}expected a 2-d (rows, dim) table, got shape {tuple(weight.shape)}"
        )
    values = weight.detach().to(torch.float32).contiguous()
    rows, dim = values.shape
    _check_finite(values, name)
    if values.numel() == 0 or bool(values.amin() == values.amax()):
        constant = float(values.reshape(-1)[0]) if values.numel() else 0.0
        return TableHeader(rows, dim, rel_bound, 0.0, 0.0, 0, 0, constant, 0).pack()
    exact = values.double()
    low, high = exact.amin(), exact.amax()
    bound_t, step_t = bounds_and_steps(low, high, rel_bound)
    bound, step = float(bound_t), float(step_t)
    if step <= 0:
        raise CodecError(
            f"{table_label(name)}relative bound {rel_bound} gives an absolute bound {bound:.3g}, "
            f"below float32 resolution of values up to "
            f"{max(abs(float(low)), abs(float(high))):.3g}; use a larger bound or keep the "
            "table fp32"
        )
    codes = torch.round(exact / step).to(torch.int64)
    decoded = decode_codes(codes, step)
    error = float((decoded.double() - exact).abs().max())
    if error > bound:  # the margin above makes this unreachable; never ship a broken table
        raise CodecError(
            f"{table_label(name)}decoded error {error:.3g} exceeds the bound {bound:.3g}"
        )
    offset = int(codes.min())
    shifted = (codes - offset).numpy()
    span = int(shifted.max())
    width = next(w for w in _WIDTHS if span < 256**w)
    symbols = shifted.astype(f"<u{width}")
    planes = symbols.view(np.uint8).reshape(-1, width).T.copy()  # width X values
    frame = zstandard.ZstdCompressor(level=level).compress(planes.tobytes())
    header = TableHeader(rows, dim, rel_bound, bound, step, width, offset, 0.0, len(frame))
    return header.pack() + frame


def decode_table(data: bytes, *, name: str = "") -> Tensor:
    """float32 (rows, dim): the table ``encode_table`` wrote into ``data``.

    Raises:
        CodecError: bytes that are not an encoded table, or whose frame is cut or corrupt.
    """
    header = TableHeader.unpack(data, name=name)
    shape = (header.rows, header.dim)
    if header.width == 0:
        return torch.full(shape, header.constant, dtype=torch.float32)
    if header.width not in _WIDTHS:
        raise CodecError(f"{table_label(name)}code width {header.width} is not one of {_WIDTHS}")
    frame = data[HEADER_BYTES:]
    if len(frame) != header.frame_bytes:
        raise CodecError(
            f"{table_label(name)}frame has {len(frame)} bytes, the header says "
            f"{header.frame_bytes}; the artifact is cut or was edited"
        )
    count = header.rows * header.dim
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=count * header.width)
    except zstandard.ZstdError as err:
        raise CodecError(f"{table_label(name)}zstandard frame does not decode: {err}") from err
    if len(raw) != count * header.width:
        raise CodecError(
            f"{table_label(name)}frame holds {len(raw)} bytes, expected {count * header.width}"
        )
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(header.width, count)
    symbols = planes.T.copy().view(f"<u{header.width}").reshape(count)
    codes = torch.from_numpy(symbols.astype(np.int64)) + header.offset
    return decode_codes(codes, header.step).reshape(shape)


def read_header(data: bytes, *, name: str = "") -> TableHeader:
    """The header of an encoded table, without decoding its codes."""
    return TableHeader.unpack(data, name=name)


def table_label(name: str) -> str:
    """The message prefix naming a table, empty without a name."""
    return f"table {name}: " if name else ""


def decode_codes(codes: Tensor, step: float | Tensor) -> Tensor:
    """float32 values of int64 ``codes``: float64 ``code x step``, rounded to float32."""
    return (codes.double() * step).to(torch.float32)


def _check_finite(values: Tensor, name: str) -> None:
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        row, column = (int(i) for i in bad.nonzero()[0])
        raise CodecError(
            f"{table_label(name)}{int(bad.sum())} NaN or inf values (first at row {row}, column "
            f"{column}: {float(values[row, column])}); the error bound is relative to the "
            "value range, which they leave undefined: fix or retrain the table first"
        )
