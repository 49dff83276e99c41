"""The Criteo-shaped data contract, shared by the synthetic feed and the Criteo files.

Both feeds produce ``label``, 13 count columns ``dense_0`` .. ``dense_12`` and 26 id columns
``cat_0`` .. ``cat_25``, so a model trained on one reads the other. The contract lives
here, beside neither feed, so each imports it without importing the other.
"""

from __future__ import annotations

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema

N_DENSE = 13
# Criteo Kaggle cardinalities, the large ones capped (2k..50k) so a demo trains on 2 cores.
HASH_SIZES: tuple[int, ...] = (
    1460,
    583,
    50_000,
    40_000,
    305,
    24,
    12_517,
    633,
    3,
    20_000,
    5683,
    45_000,
    3194,
    27,
    14_992,
    35_000,
    10,
    5652,
    2173,
    4,
    30_000,
    18,
    15,
    25_000,
    105,
    22_000,
)
N_CATEGORICAL = len(HASH_SIZES)
LABEL = "label"
DENSE: tuple[str, ...] = tuple(f"dense_{j}" for j in range(N_DENSE))
CATEGORICAL: tuple[str, ...] = tuple(f"cat_{f}" for f in range(N_CATEGORICAL))


def criteo_schema() -> FeatureSchema:
    """13 dense count columns (log1p-transformed) and 26 hashed id columns."""
    return FeatureSchema(
        label=LABEL,
        dense=DENSE,
        categorical=tuple(
            CategoricalFeature(name=name, hash_size=size)
            for name, size in zip(CATEGORICAL, HASH_SIZES)
        ),
    )
