"""Typed model input: dense features, jagged categorical ids and labels.

Notation used in shapes throughout ``models``:

* B: batch size (samples)
* F: number of categorical (sparse) features
* N: number of dense features
* D: embedding dimension
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from quantrec.data_checks.schema import FeatureSchema, SchemaError


@dataclass(frozen=True)
class KeyedJaggedIds:
    """Hashed categorical ids of one batch, one jagged bag per sample and key.

    For key ``k`` the ids of sample ``i`` are ``values[k][offsets[k][i]:offsets[k][i + 1]]``
    (the last bag ends at ``len(values[k])``). A single-valued feature has bags of one id;
    a multi-valued one (``CategoricalFeature.multi_valued``) bags of any length, even 0.

    Args:
        keys: feature names, in the order of the model's embedding tables.
        values: per key, int64 ids in ``[0, hash_size)``, shape (total ids of that key,).
        offsets: per key, int64 start of each sample's bag, shape (B,), non-decreasing and
            starting at 0 (not checked here: it would cost a read per key and batch).

    Example::

        #          sample 0   sample 1   sample 2
        # "user"   [7]        [3]        [5]
        # "genre"  [1, 2]     []         [4]
        ids = KeyedJaggedIds(
            keys=("user", "genre"),
            values=(torch.tensor([7, 3, 5]), torch.tensor([1, 2, 4])),
            offsets=(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])),
        )
    """

    keys: tuple[str, ...]
    values: tuple[Tensor, ...]
    offsets: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.values) == len(self.offsets):
            raise ValueError(
                f"KeyedJaggedIds needs one values and one offsets tensor per key: got "
                f"{len(self.keys)} keys, {len(self.values)} values, {len(self.offsets)} offsets"
            )
        sizes = {key: int(o.shape[0]) for key, o in zip(self.keys, self.offsets)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every key needs one bag per sample; bags per key: {sizes}")
        for key, v, o in zip(self.keys, self.values, self.offsets):
            if v.dtype != torch.int64 or o.dtype != torch.int64 or v.dim() != 1 or o.dim() != 1:
                raise ValueError(
                    f"key {key!r}: values and offsets must be 1-D int64; got values "
                    f"{v.dtype} {tuple(v.shape)}, offsets {o.dtype} {tuple(o.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return int(self.offsets[0].shape[0]) if self.offsets else 0

    def lengths(self) -> tuple[Tensor, ...]:
        """Per key, the number of ids in each sample's bag, int64 shape (B,)."""
        return tuple(_lengths(v, o) for v, o in zip(self.values, self.offsets))

    def slice(self, start: int, stop: int) -> KeyedJaggedIds:
        """Samples ``start:stop`` (clamped like Python slicing), ids and offsets rebased."""
        start, stop, _ = slice(start, stop).indices(self.batch_size)
        stop = max(start, stop)
        values, offsets = [], []
        for v, o in zip(self.values, self.offsets):
            ends = torch.cat((o, o.new_tensor([v.shape[0]])))
            lo, hi = int(ends[start]), int(ends[stop])
            values.append(v[lo:hi])
            offsets.append(o[start:stop] - lo)
        return KeyedJaggedIds(keys=self.keys, values=tuple(values), offsets=tuple(offsets))

    def take(self, index: Tensor) -> KeyedJaggedIds:
        """Samples in the order of ``index`` (int64 shape (B',)), gathered without a Python loop."""
        values, offsets = [], []
        for v, o in zip(self.values, self.offsets):
            lengths = _lengths(v, o)[index]
            new_offsets = torch.cumsum(lengths, 0) - lengths
            # Position of every kept id in ``v``: its bag's old start plus its rank in the bag.
            total = int(lengths.sum())
            rank = torch.arange(total) - torch.repeat_interleave(new_offsets, lengths)
            values.append(v[torch.repeat_interleave(o[index], lengths) + rank])
            offsets.append(new_offsets)
        return KeyedJaggedIds(keys=self.keys, values=tuple(values), offsets=tuple(offsets))


def _lengths(values: Tensor, offsets: Tensor) -> Tensor:
    return torch.diff(offsets, append=offsets.new_tensor([values.shape[0]]))


@dataclass(frozen=True)
class Batch:
    """One batch of model input.

    Args:
        dense: float32 shape (B, N), already transformed per ``FeatureSchema.dense_transform``.
        sparse: hashed categorical ids, B bags per key.
        labels: float32 shape (B,), 0.0 or 1.0.
    """

    dense: Tensor
    sparse: KeyedJaggedIds
    labels: Tensor

    def __post_init__(self) -> None:
        b_dense, b_sparse = self.dense.shape[0], self.sparse.batch_size
        b_labels = self.labels.shape[0]
        if not b_dense == b_sparse == b_labels:
            raise ValueError(
                f"Batch parts disagree on the batch size: dense {b_dense}, "
                f"sparse {b_sparse}, labels {b_labels}"
            )
        if self.dense.dim() != 2 or self.labels.dim() != 1:
            raise ValueError(
                f"Batch needs dense of shape (B, N) and labels of shape (B,); got "
                f"{tuple(self.dense.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def slice(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop``; jagged bags are cut at sample boundaries."""
        return Batch(
            dense=self.dense[start:stop],
            sparse=self.sparse.slice(start, stop),
            labels=self.labels[start:stop],
        )

    def take(self, index: Tensor) -> Batch:
        """Samples in the order of ``index`` (int64 shape (B',)), e.g. a shuffle."""
        return Batch(
            dense=self.dense[index], sparse=self.sparse.take(index), labels=self.labels[index]
        )


def hash_ids(values: np.ndarray, hash_size: int) -> np.ndarray:
    """Hash raw ids into ``[0, hash_size)``, identically in every process.

    ``pd.util.hash_array`` uses a fixed key, unlike Python's salted ``hash``. Integer ids are
    widened to int64 first so an id hashes the same whether a day stored it as int32 or
    int64. Missing string ids (None) all land in one fixed bucket.

    Args:
        values: shape (B,), integer or string (object / unicode) ids.
        hash_size: rows of the embedding table.

    Returns:
        int64 shape (B,).
    """
    if hash_size <= 0:
        raise ValueError(f"hash_size must be positive, got {hash_size}")
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        values = values.astype(np.int64, copy=False)
    elif values.dtype.kind == "f":
        raise ValueError(
            f"ids must be integers or strings, got {values.dtype}; a float id column usually "
            "means missing integers became NaN: fill or cast them before hashing"
        )
    hashed = pd.util.hash_array(values) % np.uint64(hash_size)
    return hashed.astype(np.int64)


def batch_from_frame(frame: pd.DataFrame, schema: FeatureSchema) -> Batch:
    """Build a Batch from one partition's frame: transform dense columns, hash ids.

    Only the schema's fixed transform happens here (log1p or none); what depends on the
    training rows (standardisation, log1p of raw non-negative columns) is fitted by the
    model's ``models.dlrm.DenseTransform`` and saved with it, so every reader of a frame
    (training, scoring, drift, serving) keeps calling this function unchanged.

    One id per sample and single-valued column (bags of length 1); a ``multi_valued``
    column holds a sequence of ids per row (a list / array per cell, or a pyarrow list
    column) and gives bags of any length, a missing bag (None) an empty one.

    Raises:
        SchemaError (a ValueError): a schema column is missing, labels are not 0/1,
            a dense value is NaN or infinite, or an id column holds floats.
    """
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"frame lacks column(s) {missing} required by the feature schema; "
            f"it has {list(frame.columns)}"
        )
    try:
        labels = frame[schema.label].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise SchemaError(f"label column {schema.label!r} must be numeric 0/1: {err}") from err
    if not np.isin(labels, (0.0, 1.0)).all():
        bad = np.unique(labels[~np.isin(labels, (0.0, 1.0))])[:5]
        raise SchemaError(f"label column {schema.label!r} must hold 0/1; found {bad.tolist()}")
    bags = [_bags(frame, c.name, c.hash_size, c.multi_valued) for c in schema.categorical]
    sparse = KeyedJaggedIds(
        keys=tuple(schema.categorical_names),
        values=tuple(values for values, _ in bags),
        offsets=tuple(offsets for _, offsets in bags),
    )
    return Batch(
        dense=torch.from_numpy(_dense_matrix(frame, schema)),
        sparse=sparse,
        labels=torch.from_numpy(labels.astype(np.float32)),
    )


def dense_width(schema: FeatureSchema) -> int:
    """N of the schema's batches: its dense columns, or one constant column when it has
    none (the bottom MLP then learns a bias vector; a zero-width input has no kernel)."""
    return max(len(schema.dense), 1)


def _dense_matrix(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """float32 shape (B, N) after the schema's transform."""
    names = list(schema.dense)
    if not names:
        return np.ones((len(frame), 1), dtype=np.float32)
    try:
        dense = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise SchemaError(f"dense columns {names} must be numeric: {err}") from err
    dense = dense.reshape(len(frame), len(names))
    finite = np.isfinite(dense)
    if not finite.all():
        bad = [n for n, ok in zip(names, finite.all(axis=0)) if not ok]
        raise SchemaError(f"dense column(s) {bad} hold NaN or infinite values; clean them upstream")
    if schema.dense_transform == "log1p":
        # Count features span orders of magnitude; the DLRM reference clamps and log-scales.
        dense = np.log1p(np.maximum(dense, 0.0))
    return dense.astype(np.float32)


def _bags(
    frame: pd.DataFrame, name: str, hash_size: int, multi_valued: bool
) -> tuple[Tensor, Tensor]:
    """Hashed ids, shape (total ids,), and bag offsets, shape (B,), of one column."""
    try:
        if not multi_valued:
            ids = hash_ids(frame[name].to_numpy(), hash_size)
            return torch.from_numpy(ids), torch.arange(len(frame), dtype=torch.int64)
        flat, offsets = _flatten_bags(frame[name])
        return torch.from_numpy(hash_ids(flat, hash_size)), torch.from_numpy(offsets)
    except ValueError as err:
        raise SchemaError(f"categorical column {name!r}: {err}") from err


def _flatten_bags(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every id of a list column in row order, and the int64 start of each row's bag.

    pyarrow converts and flattens the cells in C++: no Python loop over rows.
    """
    try:
        bags = pa.array(column, from_pandas=True)
    except (pa.ArrowException, TypeError) as err:
        raise ValueError(
            f"a multi-valued column needs a list of ids per row (or None); {err}"
        ) from err
    if isinstance(bags, pa.ChunkedArray):
        bags = bags.combine_chunks()
    if not pa.types.is_list(bags.type) and not pa.types.is_large_list(bags.type):
        raise ValueError(
            f"a multi-valued column needs a list of ids per row; got arrow type {bags.type}"
        )
    lengths = pc.fill_null(pc.list_value_length(bags), 0).to_numpy().astype(np.int64)
    offsets = np.cumsum(lengths) - lengths
    flat = bags.flatten()
    if flat.null_count:
        raise ValueError(f"{flat.null_count} ids inside the bags are null; drop them upstream")
    return flat.to_numpy(zero_copy_only=False), offsets
