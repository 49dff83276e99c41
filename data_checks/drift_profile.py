"""The drift reference: statistics of the champion's training window, saved with the champion.

Drift compares a day against the window the champion learned from. The window's raw rows
are gone (or expensive) by the time a rerun asks again, so ``DriftProfile.build`` keeps
only what ``data_checks.drift.measure`` needs, and ``save``/``load`` make a rerun compare
against the very same reference:

- dense columns: inner quantile bin edges and the reference's share of finite values in
  each bin;
- categorical columns: the ``top_k`` most frequent ids with their shares, the share of
  every other id ("other"), the sorted vocabulary of ids seen (for the OOV rate) and the
  share of ids seen exactly once (the Good-Turing estimate of a stable day's OOV rate);
- the click rate, the row count and, if given, the champion's scores binned like a dense
  column (for prediction drift).

Ids are compared as int64 keys (see ``id_keys``): an integer id is its own key, any other
id (a string, a bool) is ``pandas.util.hash_array`` of its ``str`` (SipHash with pandas'
fixed default key, so the same in every process, unlike Python's salted ``hash``). A bag
(multi-valued) column counts each element of each bag; empty bags add nothing.

On disk (``save(directory)``): ``profile.json`` (everything but the vocabularies; floats
are written with ``repr`` precision, so a reloaded profile measures identically) and
``vocab.npz`` (one sorted unique int64 array per categorical column, under the key named
by that column's ``vocab_key`` in ``profile.json``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantrec.data_checks.schema import FeatureSchema

FORMAT = "quantrec.drift_profile"
VERSION = 1
PROFILE_FILE, VOCAB_FILE = "profile.json", "vocab.npz"
ID_ENCODING = "integer ids as int64; others pandas.util.hash_array(str(id)) viewed as int64"


class DriftError(ValueError):
    """Drift cannot be measured or its reference cannot be built, saved or loaded."""


@dataclass(frozen=True, eq=False)
class BinnedProfile:
    """A numeric sample on its own quantile bins.

    Attributes:
        edges: (B-1,) increasing inner edges; bin k holds values in [edges[k-1], edges[k]),
            the two end bins are open.
        shares: (B,) share of the sample's finite values in each bin; sums to 1.
        rows: finite values counted.
    """

    edges: np.ndarray
    shares: np.ndarray
    rows: int


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """The id distribution of one categorical column (elements of bags, for a bag column).

    Attributes:
        top_ids: (K,) int64 keys of the K most frequent ids, most frequent first (ties by key).
        top_shares: (K,) their shares of all elements.
        other_share: share of every other id; ``top_shares.sum() + other_share == 1``.
        vocabulary: (V,) sorted unique int64 keys of every id seen.
        singleton_share: share of elements whose id occurs once: the Good-Turing estimate of
            the OOV rate a stable day of the same size as this window would show.
        elements: ids counted (rows, or bag elements).
        id_kind: "integer" or "hashed" (how ids became keys; see ``id_keys``).
    """

    top_ids: np.ndarray
    top_shares: np.ndarray
    other_share: float
    vocabulary: np.ndarray
    singleton_share: float
    elements: int
    id_kind: str

    def shares(self) -> np.ndarray:
        """(K+1,) the top ids' shares then "other"."""
        return np.append(self.top_shares, self.other_share)


@dataclass(frozen=True, eq=False)
class DriftProfile:
    """Everything ``measure`` needs from a reference window (build with ``DriftProfile.build``).

    Attributes:
        schema_fingerprint: ``schema_fingerprint(schema)`` of the schema it was built on.
        label: the label column; rows: reference rows; label_rate: click share in [0, 1].
        bins / top_k: the build settings.
        dense / categorical: per-column profiles keyed by column name, in schema order.
        scores: the champion's scores on the reference, binned; None if none were given.
        source: caller's description of the window (e.g. run date, days, model version).
        created_at: UTC ISO-8601 time of the build.
    """

    schema_fingerprint: str
    label: str
    rows: int
    label_rate: float
    bins: int
    top_k: int
    dense: dict[str, BinnedProfile]
    categorical: dict[str, CategoricalProfile]
    scores: BinnedProfile | None = None
    source: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    # "feature|statistic" -> the largest value one reference day shows against the rest of
    # the window (``data_checks.drift.calibrated``); empty: not measured (one day, older).
    day_to_day: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        frame: pd.DataFrame,
        schema: FeatureSchema,
        *,
        scores: np.ndarray | None = None,
        bins: int = 10,
        top_k: int = 50,
        source: dict[str, Any] | None = None,
    ) -> DriftProfile:
        """Profile the reference window ``frame`` (all its days in one frame).

        ``scores`` are the champion's predicted click probabilities on reference rows (any
        number of them; they need not align with ``frame``). ``source`` must be JSON-able.
        """
        if bins < 2 or top_k < 1:
            raise DriftError(f"bins must be >= 2 and top_k >= 1; got bins={bins}, top_k={top_k}")
        require_columns(frame, schema, "reference")
        if len(frame) == 0:
            raise DriftError("the reference frame has no rows; build the profile from a window")
        labels = pd.to_numeric(frame[schema.label], errors="coerce").to_numpy(np.float64)
        label_rate = float(np.nanmean(labels)) if np.isfinite(labels).any() else 0.0
        if not label_rate > 0.0:
            raise DriftError(
                f"the reference window has no clicks in {schema.label!r}; the click-rate "
                "shift is undefined: pick a window with clicks"
            )
        bags = set(schema.multi_valued_names)
        return cls(
            schema_fingerprint=schema_fingerprint(schema),
            label=schema.label,
            rows=len(frame),
            label_rate=label_rate,
            bins=bins,
            top_k=top_k,
            dense={
                c: bin_reference(frame[c], bins=bins, role=f"reference {c!r}") for c in schema.dense
            },
            categorical={
                c: _profile_ids(frame[c], c in bags, top_k=top_k, column=c)
                for c in schema.categorical_names
            },
            scores=None if scores is None else bin_reference(scores, bins=bins, role="scores"),
            source=dict(source or {}),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata and statistics; vocabularies appear only as their sizes."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "source": self.source,
            "schema_fingerprint": self.schema_fingerprint,
            "pandas_version": pd.__version__,
            "id_encoding": ID_ENCODING,
            "label": self.label,
            "rows": self.rows,
            "label_rate": self.label_rate,
            "bins": self.bins,
            "top_k": self.top_k,
            "dense": {c: _binned_to_dict(p) for c, p in self.dense.items()},
            "categorical": {
                c: _categorical_to_dict(p, f"v{i}")
                for i, (c, p) in enumerate(self.categorical.items())
            },
            "scores": None if self.scores is None else _binned_to_dict(self.scores),
            "day_to_day": {k: float(v) for k, v in self.day_to_day.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, directory: Path | str) -> Path:
        """Write ``profile.json`` and ``vocab.npz`` into ``directory`` (made if missing)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            vocab = {f"v{i}": p.vocabulary for i, p in enumerate(self.categorical.values())}
            np.savez_compressed(directory / VOCAB_FILE, **vocab)
            (directory / PROFILE_FILE).write_text(self.to_json())
        except OSError as err:
            raise DriftError(f"cannot save the drift profile to {directory}: {err}") from err
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> DriftProfile:
        """Read a profile written by ``save``; a missing or corrupt file raises a DriftError."""
        directory = Path(directory)
        path = directory / PROFILE_FILE
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} v{VERSION} file")
        except (OSError, ValueError, AttributeError) as err:
            raise DriftError(
                f"cannot read drift profile {path}: {err}; rebuild it with "
                "DriftProfile.build on the champion's training window"
            ) from err
        vocab_path = directory / VOCAB_FILE
        try:
            with np.load(vocab_path) as npz:
                vocab = {key: npz[key] for key in npz.files}
            categorical = {
                c: _categorical_from_dict(p, vocab[p["vocab_key"]])
                for c, p in data["categorical"].items()
            }
            return cls(
                schema_fingerprint=data["schema_fingerprint"],
                label=data["label"],
                rows=int(data["rows"]),
                label_rate=float(data["label_rate"]),
                bins=int(data["bins"]),
                top_k=int(data["top_k"]),
                dense={c: _binned_from_dict(p) for c, p in data["dense"].items()},
                categorical=categorical,
                scores=None if data["scores"] is None else _binned_from_dict(data["scores"]),
                source=data["source"],
                created_at=data["created_at"],
                day_to_day={k: float(v) for k, v in data.get("day_to_day", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DriftError(
                f"cannot read drift profile {directory} ({PROFILE_FILE} with {vocab_path}): "
                f"{type(err).__name__}: {err}; rebuild it with DriftProfile.build"
            ) from err


def schema_fingerprint(schema: FeatureSchema) -> str:
    """16 hex digits of SHA-256 over what drift reads: label, dense names, categorical names
    and which are bags (hash sizes and the timestamp do not change any drift statistic)."""
    content = {
        "label": schema.label,
        "dense": list(schema.dense),
        "categorical": [[c.name, c.multi_valued] for c in schema.categorical],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def require_columns(frame: pd.DataFrame, schema: FeatureSchema, role: str) -> None:
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise DriftError(f"{role} frame lacks schema columns {missing}; validate it first")


def finite_values(values: Any, role: str) -> np.ndarray:
    """The finite values of a numeric column as float64; NaN/inf are the contract's to report."""
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise DriftError(f"{role} is not numeric ({err}); drift bins numeric columns only") from err
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise DriftError(f"{role} has no finite values; pass a non-empty numeric column")
    return array


def quantile_edges(reference: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's 1/bins .. (bins-1)/bins quantiles, ties merged.

    A mass point (say 40 % zeros) repeats a quantile; repeated edges are merged, so such a
    column gets fewer than ``bins`` bins rather than empty zero-width ones. Quantile bins
    ignore any monotone transform: raw and ``log1p`` counts give the same shares.
    """
    if bins < 2:
        raise DriftError(f"bins must be at least 2; got {bins}")
    reference = finite_values(reference, "reference")
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each of the ``len(edges) + 1`` bins; bin k is [e[k-1], e[k])."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return counts / counts.sum()


def bin_reference(values: Any, *, bins: int, role: str) -> BinnedProfile:
    finite = finite_values(values, role)
    edges = quantile_edges(finite, bins=bins)
    return BinnedProfile(edges=edges, shares=bin_shares(finite, edges), rows=int(finite.size))


def id_elements(column: pd.Series, multi_valued: bool) -> pd.Series | np.ndarray:
    """The ids of a column, one per row, or one per bag element for a bag column."""
    if not multi_valued:
        return column
    return column.explode().dropna()


def id_keys(ids: pd.Series | np.ndarray, column: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """int64 keys of ``ids`` and how they were made ("integer" or "hashed").

    Returns (keys of every element, None, kind) for an integer column, else (keys of the
    distinct ids, codes of each element into them, kind): hashing only the distinct ids is
    ~10x cheaper than hashing every element of a day of Zipf ids.
    """
    dtype = getattr(ids, "dtype", None)
    if dtype is not None and pd.api.types.is_integer_dtype(dtype):
        try:
            return np.asarray(ids, dtype=np.int64), None, "integer"
        except (TypeError, ValueError) as err:  # a nullable integer column holding NA
            raise DriftError(f"column {column!r} has missing ids ({err})") from err
    codes, uniques = pd.factorize(np.asarray(ids, dtype=object), use_na_sentinel=True)
    if (codes < 0).any():
        raise DriftError(f"column {column!r} has missing ids; the contract forbids them")
    uniques = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(uniques, skipna=False) == "integer":  # e.g. exploded int bags
        return uniques.astype(np.int64), codes, "integer"
    text = np.array([str(u) for u in uniques], dtype=object)
    return pd.util.hash_array(text).view(np.int64), codes, "hashed"


def _profile_ids(
    values: pd.Series, multi_valued: bool, *, top_k: int, column: str
) -> CategoricalProfile:
    keys, codes, kind = id_keys(id_elements(values, multi_valued), column)
    if keys.size == 0:
        raise DriftError(f"reference column {column!r} holds no ids (every bag is empty)")
    if codes is None:  # a hash pass, ~10x cheaper than sorting every element
        codes, keys = pd.factorize(keys)
    # np.unique on the distinct keys also merges two strings that (odds ~1e-10) hash alike.
    vocabulary, inverse = np.unique(keys, return_inverse=True)
    weights = np.bincount(codes, minlength=keys.size)
    counts = np.bincount(inverse, weights=weights, minlength=vocabulary.size).astype(np.int64)
    total = int(counts.sum())
    head = np.lexsort((vocabulary, -counts))[:top_k]  # most frequent first, ties by key
    return CategoricalProfile(
        top_ids=vocabulary[head],
        top_shares=counts[head] / total,
        # From counts, not 1 - sum(shares): a day like the window then gets equal floats.
        other_share=float((total - counts[head].sum()) / total),
        vocabulary=vocabulary,
        singleton_share=float(np.sum(counts == 1) / total),
        elements=total,
        id_kind=kind,
    )


def _binned_to_dict(profile: BinnedProfile) -> dict[str, Any]:
    return {
        "edges": profile.edges.tolist(),
        "shares": profile.shares.tolist(),
        "rows": profile.rows,
    }


def _binned_from_dict(data: dict[str, Any]) -> BinnedProfile:
    return BinnedProfile(
        edges=np.asarray(data["edges"], dtype=np.float64),
        shares=np.asarray(data["shares"], dtype=np.float64),
        rows=int(data["rows"]),
    )


def _categorical_to_dict(profile: CategoricalProfile, vocab_key: str) -> dict[str, Any]:
    return {
        "id_kind": profile.id_kind,
        "elements": profile.elements,
        "top_ids": profile.top_ids.tolist(),
        "top_shares": profile.top_shares.tolist(),
        "other_share": profile.other_share,
        "singleton_share": profile.singleton_share,
        "vocabulary_size": int(profile.vocabulary.size),
        "vocab_key": vocab_key,
    }


def _categorical_from_dict(data: dict[str, Any], vocabulary: np.ndarray) -> CategoricalProfile:
    if vocabulary.dtype != np.int64 or vocabulary.size != data["vocabulary_size"]:
        size, key = data["vocabulary_size"], data["vocab_key"]
        raise ValueError(f"vocabulary {key} is not {size} int64 ids")
    return CategoricalProfile(
        top_ids=np.asarray(data["top_ids"], dtype=np.int64),
        top_shares=np.asarray(data["top_shares"], dtype=np.float64),
        other_share=float(data["other_share"]),
        vocabulary=vocabulary,
        singleton_share=float(data["singleton_share"]),
        elements=int(data["elements"]),
        id_kind=data["id_kind"],
    )
