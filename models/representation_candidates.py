"""The candidates of the representation search for one table: each kind sized to the
largest that fits a byte budget (``models.representation_search``'s step 3).

Pure: builds modules only to count their bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from quantrec.models.representations import (
    RepresentationSpec,
    build_representation,
    representation_bytes,
)

SEARCHED_KINDS = ("hashed", "qr-mult", "qr-concat", "dhe")
# DHE sizes tried largest first: (hashes k, hidden layers); the first within the budget.
DHE_LADDER = ((64, (128, 128)), (64, (128,)), (32, (64,)), (16, (32,)))


def candidate_specs(
    num_embeddings: int,
    embedding_dim: int,
    *,
    bytes_ratio: float,
    kinds: Sequence[str] = SEARCHED_KINDS,
) -> list[RepresentationSpec]:
    """The candidates for one table of ``num_embeddings`` x D, each sized to the largest
    that fits ``bytes_ratio`` x its fp32 bytes (a kind that cannot fit is left out).

    Kinds: "hashed" (about ratio x ids rows), "qr-mult" / "qr-add" / "qr-concat" (the fewest
    collisions that fit), "dhe" (the largest of ``DHE_LADDER`` that fits), "hybrid-add" (a
    full table plus the DHE that fits in ``bytes_ratio - 1``, so only for ratios above 1).
    """
    n, d = int(num_embeddings), int(embedding_dim)
    limit = bytes_ratio * n * d * 4
    specs: list[RepresentationSpec] = []
    for kind in kinds:
        spec: RepresentationSpec | None = None
        if kind == "hashed" and int(bytes_ratio * n) < n:
            # The rows that fit beside the hash constants (16 bytes).
            rows = max(1, int((limit - 16) // (d * 4)))
            spec = RepresentationSpec(kind="hashed", rows=rows)
        elif kind.startswith("qr-"):
            spec = _qr_spec(n, d, kind.removeprefix("qr-"), limit)
        elif kind == "dhe":
            spec = _dhe_spec(n, d, limit, kind="dhe")
        elif kind == "hybrid-add" and bytes_ratio > 1:
            spec = _dhe_spec(n, d, limit - n * d * 4, kind="hybrid", combine="add")
        if spec is not None:
            specs.append(spec)
    return specs


def _spec_bytes(spec: RepresentationSpec, n: int, d: int) -> int:
    return representation_bytes(build_representation(spec, num_embeddings=n, embedding_dim=d))


def _qr_spec(n: int, d: int, combine: str, limit: float) -> RepresentationSpec | None:
    width = 0.5 if combine == "concat" else 1.0  # concat: each table D/2 wide
    rows_allowed = limit / (d * 4 * width)
    for collisions in range(2, int(math.isqrt(n)) + 2):
        if math.ceil(n / collisions) + collisions <= rows_allowed:
            return RepresentationSpec(kind="qr", collisions=collisions, combine=combine)
    return None


def _dhe_spec(
    n: int, d: int, limit: float, *, kind: str, combine: str | None = None
) -> RepresentationSpec | None:
    for hashes, hidden in DHE_LADDER:
        spec = RepresentationSpec(kind=kind, hashes=hashes, hidden=hidden, combine=combine)
        extra = n * d * 4 if kind == "hybrid" else 0
        if _spec_bytes(spec, n, d) - extra <= limit:
            return spec
    return None
