"""Embedding representations side by side: NE, bytes, latency, throughput and
correct-prediction throughput per batch size, and the path each query size takes.

    quantrec bench --representations [--feeds synthetic,movielens] [--p95-ms 5] [--json]
    (or python -m quantrec.benchmarks.representations)

For each feed, one process, one thread, the same rows and seed for every model:

1. Data: the feed's training days before the test day (synthetic: 2 days of
   ``--rows-per-day`` before 2024-01-04; MovieLens-100K: the 21 days before 1997-10-20 at 3
   epochs of batch 256, as ``deploy/movielens.toml`` ships), a seeded 20 % of the last day
   held out (MovieLens: of every day of the window, whose last day holds a few dozen); the
   test rows are the test day (synthetic) or the 7 days from it (MovieLens, a few hundred
   ratings a day). Sizes from ``models.sizing``.
2. The search (``models.representation_search``, objective ``bytes``: NE within
   ``--ne-budget`` of the full tables at <= 0.25x their bytes) on the window's rows; the
   test rows are never seen by it.
3. Variants, each trained by ``train_dlrm`` on the same rows for the epochs the search's
   full-table model kept: ``table`` (every table full),
   each kind on the four largest tables (``hashed``, ``qr-mult``, ``qr-concat``, ``dhe`` at
   <= 0.25x, ``hybrid-add`` at <= 1.25x; ``models.representation_search.candidate_specs``)
   and ``searched`` (the search's choice).
4. Per variant on the test rows: NE, its relative change against ``table`` with the 95 %
   paired bootstrap interval (``models.noise``: an interval holding 0 cannot be told from
   noise), accuracy at threshold 0.5, the state_dict bytes and the four tables' bytes over
   their fp32 bytes.
5. Timing (``benchmarks.serving.time_models``): at batch 1, 64 and 2048, call i of every
   variant scores the same rows, order rotated call by call; p50 / p95 ms per call and
   throughput (rows over the summed call times).

Correct-prediction throughput (MP-Rec's metric, made precise for click-through rates):
``cpt = throughput x accuracy`` if the variant is within the NE budget of the best variant,
else 0. Within budget: its test NE is at most ``--ne-budget`` (relative) above the lowest
NE among the variants, or the 95 % paired bootstrap interval of that excess reaches below
the budget (these rows cannot tell it from within budget, as the gate reads noise).
Accuracy is the share of test rows whose predicted click (p >= 0.5) equals the label; at
click rates of a few percent it is close to 1 - click rate for every variant, so the NE
condition is what makes a fast, poor representation count for nothing.

Path choice: per batch size, among the variants whose p95 is within
``--p95-ms``, the one with the highest cpt (none: the lowest p95), with its ratio over the
full tables' cpt.

Compare ratios within a feed: other processes on a shared machine slow every model alike.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
import torch

from quantrec.benchmarks.options import RepresentationOptions
from quantrec.benchmarks.serving import BATCH_SIZES, time_models
from quantrec.feeds.base import SmallDayError
from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy
from quantrec.models.quantize import model_bytes
from quantrec.models.representation_candidates import candidate_specs
from quantrec.models.representation_search import (
    RepresentationBudget,
    largest_tables,
    ne_change_interval,
    search_representations,
)
from quantrec.models.representations import representation_bytes
from quantrec.models.scorer import predict_proba
from quantrec.models.sizing import auto_model_size
from quantrec.models.stream import holdout_mask
from quantrec.models.train import torch_threads, train_dlrm

HOLDOUT_FRACTION = 0.2  # the lifecycle's search.holdout_fraction default
CALLS = 200  # timed calls per batch size (fewer for large batches: time_models caps rows)
UNIFORM_KINDS = ("hashed", "qr-mult", "qr-concat", "dhe")
HYBRID_RATIO = 1.25  # the bound on the hybrid's bytes


@dataclass(frozen=True)
class FeedSetting:
    """Days before ``test_day`` that train (a seeded share of the last ``holdout_days`` of
    them held out), the test days from it, and training overrides."""

    test_day: date
    train_days: int
    holdout_days: int
    test_days: int
    training: dict


FEED_SETTINGS = {
    "synthetic": FeedSetting(date(2024, 1, 4), 2, 1, 1, {}),
    # The last day of MovieLens' window holds a few dozen ratings: every day gives 20 %.
    "movielens": FeedSetting(date(1997, 10, 20), 21, 21, 7, {"epochs": 3, "batch_size": 256}),
}


@dataclass(frozen=True)
class VariantRow:
    """One variant of one feed's model on the test rows."""

    feed: str
    variant: str
    representations: str
    ne: float
    ne_delta_rel: float
    ne_delta_low: float | None
    ne_delta_high: float | None
    accuracy: float
    bytes: int
    bytes_ratio: float  # model bytes / the full-table model's
    tables_ratio: float  # the four largest tables' bytes / their fp32 bytes
    within_budget: bool  # NE within the budget of the best variant's


def _days(feed, first: date, count: int) -> list[pd.DataFrame]:
    frames = []
    for k in range(count):
        try:
            frames.append(feed.day(first + timedelta(days=k)))
        except SmallDayError:
            continue
    return frames


def feed_data(name: str, *, rows_per_day: int):
    """(schema sized to the rows, training Batch, held-out Batch, test Batch)."""
    from quantrec.feeds.movielens import MovieLensFeed
    from quantrec.feeds.synthetic import SyntheticFeed

    setting = FEED_SETTINGS[name]
    feed = (
        SyntheticFeed(seed=0, rows_per_day=rows_per_day) if name == "synthetic" else MovieLensFeed()
    )
    first = setting.test_day - timedelta(days=setting.train_days)
    window = _days(feed, first, setting.train_days)
    keep = len(window) - setting.holdout_days
    training_parts, held_parts = window[: max(keep, 0)], []
    for frame in window[max(keep, 0) :]:
        held = holdout_mask(len(frame), fraction=HOLDOUT_FRACTION, seed=0)
        training_parts.append(frame[~held])
        held_parts.append(frame[held])
    training = pd.concat(training_parts, ignore_index=True)
    held_out = pd.concat(held_parts, ignore_index=True)
    test = pd.concat(_days(feed, setting.test_day, setting.test_days), ignore_index=True)
    size = auto_model_size(feed.schema(), len(training))
    schema = size.apply(feed.schema())
    batches = [batch_from_frame(f, schema) for f in (training, held_out, test)]
    return schema, size, *batches


def builder(schema, size):
    """representations -> a fresh DLRM of the lifecycle's default shape, seeded."""
    base = None

    def build(representations: Mapping[str, Any] | None) -> DLRM:
        nonlocal base
        torch.manual_seed(0)
        if base is None:
            base = DLRM.from_schema(
                schema,
                embedding_dim=size.embedding_dim,
                bottom_mlp=size.bottom_mlp(),
                top_mlp=(64, 32, 1),
            ).architecture()
            torch.manual_seed(0)
        extra = {"representations": dict(representations)} if representations else {}
        return DLRM(**base, **extra)

    return build


def uniform_variants(model: DLRM) -> dict[str, dict[str, dict]]:
    """Variant name -> representations: each kind on the four largest tables."""
    arch = model.architecture()
    sizes = dict(zip(arch["feature_names"], arch["table_sizes"]))
    dim = arch["embedding_dim"]
    variants: dict[str, dict[str, dict]] = {"table": {}}
    for kind, ratio in [(k, 0.25) for k in UNIFORM_KINDS] + [("hybrid-add", HYBRID_RATIO)]:
        chosen = {}
        for feature in largest_tables(model, 4):
            specs = candidate_specs(sizes[feature], dim, bytes_ratio=ratio, kinds=(kind,))
            if specs:
                chosen[feature] = specs[0].to_dict()
        if chosen:
            variants[kind] = chosen
    return variants


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_feed(
    name: str, options: RepresentationOptions
) -> tuple[list[VariantRow], list[dict], str, dict]:
    """(variant rows, timing rows with cpt, a line describing the data, the search record)."""
    schema, size, training, held_out, test = feed_data(name, rows_per_day=options.rows_per_day)
    setting = FEED_SETTINGS[name]
    build = builder(schema, size)
    started = time.perf_counter()
    search = search_representations(
        build,
        training,
        held_out,
        seed=0,
        budget=RepresentationBudget(ne_rel=options.ne_budget, bytes_ratio=0.25),
        train_options=setting.training,
        progress=lambda line: _log(f"{name} search: {line}"),
    )
    _log(
        f"{name} search: {time.perf_counter() - started:.0f} s, "
        f"chose {search.chosen or 'full tables'}"
    )
    variants = uniform_variants(build(None))
    variants["searched"] = search.representations()
    models, probs = {}, {}
    for variant, representations in variants.items():
        model = build(representations)  # as the search trained its candidates
        train_dlrm(model, training, seed=0, **{**setting.training, "epochs": search.epochs})
        models[variant], probs[variant] = model, predict_proba(model, test)
        _log(f"{name} {variant}: trained")
    rows = _variant_rows(name, models, probs, test, options.ne_budget)
    timing = time_models(models, _timing_rows(test), batch_sizes=BATCH_SIZES, calls=CALLS)
    by_variant = {r.variant: r for r in rows}
    for t in timing:
        r = by_variant[t["variant"]]
        t["feed"] = name
        t["cpt"] = t["samples_per_s"] * r.accuracy if r.within_budget else 0.0
    described = (
        f"{name}: {len(training):,} training rows, {len(held_out):,} held out, "
        f"{len(test):,} test rows; D={size.embedding_dim}, {len(schema.categorical)} tables, "
        f"largest four {largest_tables(models['table'], 4)}"
    )
    return rows, timing, described, json.loads(search.to_json())


def _timing_rows(test: Batch) -> Batch:
    """At least 2048 rows to time (MovieLens' test days hold fewer): the rows repeated."""
    if len(test) >= max(BATCH_SIZES):
        return test
    repeats = -(-max(BATCH_SIZES) // len(test))
    return test.take(torch.arange(len(test)).repeat(repeats))


def _variant_rows(name, models, probs, test, ne_budget) -> list[VariantRow]:
    labels = test.labels.double().numpy()
    ne = {v: normalized_entropy(labels, p) for v, p in probs.items()}
    reference = ne["table"]
    full_bytes = model_bytes(models["table"])
    largest = largest_tables(models["table"], 4)
    names = list(models["table"].feature_names)
    rows = []
    for variant, model in models.items():
        interval = (
            (0.0, 0.0)
            if variant == "table"
            else ne_change_interval(labels, probs[variant], probs["table"])
        )
        low, high = interval or (None, None)
        tables = [model.sparse_arch.embedding_bags[names.index(f)] for f in largest]
        full = [models["table"].sparse_arch.embedding_bags[names.index(f)] for f in largest]
        reps = model.architecture().get("representations", {})
        rows.append(
            VariantRow(
                feed=name,
                variant=variant,
                representations=", ".join(f"{f}:{_label(spec)}" for f, spec in reps.items())
                or "all full",
                ne=ne[variant],
                ne_delta_rel=(ne[variant] - reference) / reference,
                ne_delta_low=low,
                ne_delta_high=high,
                accuracy=float(((probs[variant] >= 0.5) == (labels > 0.5)).mean()),
                bytes=model_bytes(model),
                bytes_ratio=model_bytes(model) / full_bytes,
                tables_ratio=sum(map(representation_bytes, tables))
                / sum(map(representation_bytes, full)),
                within_budget=_within_budget(labels, probs, ne, variant, ne_budget),
            )
        )
    return rows


def _within_budget(labels, probs, ne, variant: str, ne_budget: float) -> bool:
    """NE at most ``ne_budget`` (relative) above the best variant's, or an excess these rows
    cannot tell from that: its paired interval reaches below the budget."""
    best = min(ne, key=ne.get)
    if ne[variant] <= ne[best] * (1 + ne_budget):
        return True
    interval = ne_change_interval(labels, probs[variant], probs[best])
    return interval is not None and interval[0] <= ne_budget


def _label(spec: dict) -> str:
    from quantrec.models.representations import RepresentationSpec

    return RepresentationSpec.from_dict(spec).label()


def path_choice(timing: list[dict], *, p95_ms: float) -> list[dict]:
    """Per (feed, batch size): the variant that serves it (module docstring)."""
    choices = []
    for feed in dict.fromkeys(t["feed"] for t in timing):
        for size in BATCH_SIZES:
            mine = [t for t in timing if t["feed"] == feed and t["batch"] == size]
            table = next(t for t in mine if t["variant"] == "table")
            meets = [t for t in mine if t["p95_ms"] <= p95_ms]
            pick = (
                max(meets, key=lambda t: t["cpt"])
                if meets
                else min(mine, key=lambda t: t["p95_ms"])
            )
            choices.append(
                {
                    "feed": feed,
                    "batch": size,
                    "variant": pick["variant"],
                    "meets_p95": bool(meets),
                    "p95_ms": pick["p95_ms"],
                    "cpt": pick["cpt"],
                    "cpt_over_table": pick["cpt"] / table["cpt"] if table["cpt"] else None,
                    "table_meets_p95": table["p95_ms"] <= p95_ms,
                }
            )
    return choices


def _interval(r: VariantRow) -> str:
    if r.ne_delta_low is None:
        return "-"
    return f"[{r.ne_delta_low:+.3%}, {r.ne_delta_high:+.3%}]"


def print_tables(rows, timing, choices, options) -> None:
    print(
        f"{'feed':<10} {'variant':<10} {'NE':>7} {'vs table':>9} {'95% interval':>20} "
        f"{'acc':>6} {'bytes':>11} {'x model':>7} {'x 4 tables':>10} {'in budget':>9}"
    )
    for r in rows:
        print(
            f"{r.feed:<10} {r.variant:<10} {r.ne:>7.4f} {r.ne_delta_rel:>+9.3%} "
            f"{_interval(r):>20} {r.accuracy:>6.3f} {r.bytes:>11,} {r.bytes_ratio:>7.3f} "
            f"{r.tables_ratio:>10.3f} {'yes' if r.within_budget else 'no':>9}"
        )
    print()
    for r in rows:
        print(f"{r.feed:<10} {r.variant:<10} {r.representations}")
    print(
        f"\n{'feed':<10} {'variant':<10} {'batch':>5} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'rows/s':>10} {'x table':>7} {'cpt/s':>10} {'cpt x table':>11}"
    )
    tables = {(t["feed"], t["batch"]): t for t in timing if t["variant"] == "table"}
    for t in sorted(timing, key=lambda t: (t["feed"], t["batch"])):
        base = tables[(t["feed"], t["batch"])]
        ratio = f"{t['cpt'] / base['cpt']:.2f}" if base["cpt"] else "-"
        speed = t["samples_per_s"] / base["samples_per_s"]
        print(
            f"{t['feed']:<10} {t['variant']:<10} {t['batch']:>5} {t['p50_ms']:>8.3f} "
            f"{t['p95_ms']:>8.3f} {t['samples_per_s']:>10.0f} {speed:>7.2f} {t['cpt']:>10.0f} "
            f"{ratio:>11}"
        )
    print(f"\npath per query size (p95 target {options.p95_ms} ms):")
    for c in choices:
        over = "-" if c["cpt_over_table"] is None else f"{c['cpt_over_table']:.2f}x"
        meets = "" if c["meets_p95"] else " (none meets the target: the lowest p95)"
        print(
            f"{c['feed']:<10} batch {c['batch']:>5}: {c['variant']:<10} p95 {c['p95_ms']:.3f} ms, "
            f"cpt {c['cpt']:.0f}/s = {over} the full tables'{meets}"
        )


def run_representations(options: RepresentationOptions) -> int:
    """Measure every feed of ``options`` and print the tables (or JSON lines); exit 0."""
    started = time.perf_counter()
    rows, timing, described, searches = [], [], [], {}
    with torch_threads(options.threads):
        for feed in options.feeds:
            r, t, d, s = measure_feed(feed, options)
            rows += r
            timing += t
            described.append(d)
            searches[feed] = s
    choices = path_choice(timing, p95_ms=options.p95_ms)
    if options.json:
        for record in (
            [asdict(r) for r in rows]
            + timing
            + choices
            + [{"feed": f, "search": s} for f, s in searches.items()]
        ):
            print(json.dumps(record))
        return 0
    print(f"torch {torch.__version__}, {options.threads} thread(s)")
    for line in described:
        print(line)
    for feed, s in searches.items():
        print(
            f"{feed} search: reference NE {s['reference_ne']:.5f}; "
            + "; ".join(f"{f}: {why}" for f, why in s["reasons"].items())
        )
        low_high = s["confirmed_interval"]
        interval = "-" if low_high is None else f"[{low_high[0]:+.3%}, {low_high[1]:+.3%}]"
        print(
            f"{feed} search: confirmed NE change {s['confirmed_change_rel']:+.3%} {interval} on "
            f"its held-out rows (backed off: {s['backed_off'] or 'none'}), searched tables at "
            f"{s['searched_bytes'] / s['searched_table_bytes']:.3f}x their fp32 bytes"
        )
    print()
    print_tables(rows, timing, choices, options)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from quantrec.benchmarks.cli import main as bench_main

    return bench_main(["--representations", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
