"""Two-stage ranking (a cheap filter, then the fp32 ranker) against single-stage fp32 ranking.

    .venv/bin/python benchmarks/pipeline.py --feed movielens [--json]
    .venv/bin/python benchmarks/pipeline.py --feed synthetic [--json] [--serving]

1. Models: the fp32 DLRM (``auto_model_size`` widths, top MLP 64-32-1) and two narrow DLRMs
   beside it (RecPipe's small models: ``--narrow-dim`` 4 wide embeddings, bottom 16-4, top
   16-1): ``narrow`` reads every feature, ``narrow-ui`` only the user, item and item-side
   categorical columns (and the dense ones). All are trained by ``models.train.train_dlrm``
   on the same rows and the same sized schema (so one candidate batch serves them all):
   MovieLens the 21 days before 1997-10-20 at 3 epochs of batch 256
   (``deploy/movielens.toml``), synthetic the 2 days before 2024-01-04 with early stopping;
   a seeded 20 % of the last day held out for it.
2. Filters: ``int8``, the fp32 model quantized by ``models.quantize.build_variant``
   (dynamic int8 MLPs, row-wise int8 tables), and the two narrow DLRMs; each keeps K of
   the N candidates for the fp32 ranker, K swept (``--keeps``).
3. Queries (``models.queries``): users of a query day with a click; MovieLens against the
   whole catalogue (1,682 items: user-side columns from the user's first row of the day,
   item-side ones (genres, release bucket, the item's history counts and days since
   release as of that day) rebuilt from the days before, checked against the day's own
   rows), the query days from 1997-10-20 on until ``--queries`` are found; synthetic a
   seeded ``--queries`` of the users (``cat_3``) of 2024-01-04 against the item ids
   (``cat_2``) of the training days, relevance cut to those items.
4. Quality: recall@10 against the fp32 single-stage top 10, NDCG@10 and HR@10 on the
   day's clicks, 95 % bootstrap intervals over queries, NDCG's change against single-stage
   paired (``models.pipeline_eval``, ``models.ranking_metrics``).
5. Speed: every pipeline under the bounded Poisson load of ``models.loadgen`` (one thread
   per stage, one torch thread each), at ``--rates`` times the single-stage capacity
   measured sequentially first (median of one query); the pipelines are interleaved within
   each rate, in ``--rounds`` rounds whose order rotates. p50/p95/p99 are read at the
   lowest rate, queries/s is the best completed rate over the sweep. ``svc_ms`` is the
   median sequential time of one query, without load.

A pipeline is at iso-quality when recall@10 >= 0.99 and the interval of its NDCG@10 change
holds 0. Pure core and one process: no Prefect, no MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import torch

from quantrec.feeds.base import SmallDayError
from quantrec.feeds.movielens import MovieLensFeed
from quantrec.feeds.synthetic import SyntheticFeed
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy
from quantrec.models.pipeline import RankingPipeline, single_stage, two_stage
from quantrec.models.pipeline_eval import (
    PipelinePoint,
    best_point,
    measure_load,
    measure_quality,
    pipeline_points,
    service_ms,
)
from quantrec.models.pipeline_pyfunc import serving_model
from quantrec.models.quantize import build_variant
from quantrec.models.queries import CandidateBatcher, Query, day_queries, sample_queries
from quantrec.models.scorer import predict_proba
from quantrec.models.sizing import auto_model_size
from quantrec.models.stream import holdout_mask
from quantrec.models.train import train_dlrm

K = 10
HOLDOUT_FRACTION = 0.2
RATE_MULTIPLIERS = (0.5, 1.5, 4.0)
REFERENCE = "fp32"


@dataclass(frozen=True)
class FeedSetting:
    first_query_day: date
    train_days: int
    epochs: int | None
    batch_size: int | None
    keeps: tuple[int, ...]  # the filters' K, swept
    user: str
    item: str
    item_side: tuple[str, ...]  # categorical columns derived from the item


SETTINGS = {
    "movielens": FeedSetting(
        date(1997, 10, 20),
        21,
        3,
        256,
        (50, 100, 200, 400),
        "user_id",
        "item_id",
        ("genres", "release_bucket"),
    ),
    "synthetic": FeedSetting(
        date(2024, 1, 4), 2, None, None, (300, 1000, 3000), "cat_3", "cat_2", ()
    ),
}


def _days(feed, days: list[date]) -> list[tuple[date, pd.DataFrame]]:
    out = []
    for day in days:
        try:
            out.append((day, feed.day(day)))
        except SmallDayError:
            continue
    return out


def train_models(feed, setting: FeedSetting, args) -> tuple[dict[str, DLRM], object, str]:
    """({"fp32", "narrow", "narrow-ui": model}, the sized schema, a line describing them);
    "narrow-ui" reads only the user, item and item-side categorical columns."""
    first = setting.first_query_day
    window = _days(feed, [first - timedelta(days=k) for k in range(setting.train_days, 0, -1)])
    last = window[-1][1]
    held = holdout_mask(len(last), fraction=HOLDOUT_FRACTION, seed=0)
    training = pd.concat([*(f for _, f in window[:-1]), last[~held]], ignore_index=True)
    size = auto_model_size(feed.schema(), len(training))
    schema = size.apply(feed.schema())
    reads = {setting.user, setting.item, *setting.item_side}
    subset = schema.model_copy(
        update={"categorical": tuple(c for c in schema.categorical if c.name in reads)}
    )
    options = {"epochs": setting.epochs, "batch_size": setting.batch_size}
    d = args.narrow_dim
    shapes = {
        "fp32": (schema, size.embedding_dim, size.bottom_mlp(), (64, 32, 1)),
        "narrow": (schema, d, (16, d), (16, 1)),
        "narrow-ui": (subset, d, (16, d), (16, 1)),
    }
    models, described = {}, []
    for offset, (name, (contract, dim, bottom, top)) in enumerate(shapes.items()):
        rows = batch_from_frame(training, contract)
        validation = batch_from_frame(last[held], contract)
        torch.manual_seed(args.seed + offset)
        model = DLRM.from_schema(contract, embedding_dim=dim, bottom_mlp=bottom, top_mlp=top)
        report = train_dlrm(model, rows, seed=args.seed, validation=validation, **options)
        test = batch_from_frame(feed.day(first), contract)
        ne = normalized_entropy(test.labels.double().numpy(), predict_proba(model, test))
        described.append(
            f"{name}: {len(contract.categorical)} tables, D={dim}, bottom {list(bottom)}, top "
            f"{list(top)}, {report.epochs} epochs, NE {ne:.4f} on {first}"
        )
        models[name] = model
    line = f"{len(training):,} training rows; " + "; ".join(described)
    return models, schema, line


def movielens_catalogue(history: pd.DataFrame, day: date) -> pd.DataFrame:
    """The 1,682 items with their item-side columns as of ``day`` (rows of other days only
    inform them: counts from the days before, static genres / release from any row)."""
    epoch_day = history["timestamp"] // 86_400
    first = history.drop_duplicates("item_id").set_index("item_id").sort_index()
    known = history[history["days_since_release"] > 0]
    release = (
        (epoch_day[known.index] - known["days_since_release"]).groupby(known["item_id"]).first()
    )
    before = history[epoch_day < (day - date(1970, 1, 1)).days]
    counts = before.groupby("item_id")["label"].agg(["size", "mean"]).reindex(first.index)
    today = (day - date(1970, 1, 1)).days
    since = (today - release.reindex(first.index)).clip(lower=0).fillna(0.0)
    return pd.DataFrame(
        {
            "item_id": first.index.to_numpy(np.int64),
            "item_ratings_before": counts["size"].fillna(0).to_numpy(np.float32),
            "item_positive_rate_before": counts["mean"].fillna(0).to_numpy(np.float32),
            "days_since_release": since.to_numpy(np.float32),
            "release_bucket": first["release_bucket"].to_numpy(),
            "genres": first["genres"].to_numpy(),
        }
    )


def movielens_cases(
    schema, setting: FeedSetting, count: int
) -> list[tuple[Query, CandidateBatcher]]:
    feed = MovieLensFeed(min_rows=1)  # small days still count in the items' history
    history = pd.concat([f for _, f in _days(feed, feed.available_days())], ignore_index=True)
    cases, day = [], setting.first_query_day
    while len(cases) < count and day <= feed.available_days()[-1]:
        frame = _days(feed, [day])
        if frame:
            frame = frame[0][1]
            catalogue = movielens_catalogue(history, day)
            _check_catalogue(frame, catalogue)
            batcher = CandidateBatcher(
                catalogue, schema, item_column="item_id", template=frame.iloc[[0]]
            )
            found = day_queries(
                frame,
                day=str(day),
                user_column="user_id",
                item_column="item_id",
                label_column="label",
            )
            cases += [(q, batcher) for q in found]
        day += timedelta(days=1)
    return cases[:count]


def _check_catalogue(frame: pd.DataFrame, catalogue: pd.DataFrame) -> None:
    """The rebuilt item-side columns equal those of the day's own rows."""
    rebuilt = frame[["item_id"]].merge(catalogue, on="item_id", how="left")
    for column in ("item_ratings_before", "item_positive_rate_before", "days_since_release"):
        if not np.allclose(rebuilt[column], frame[column], atol=1e-5):
            raise AssertionError(f"the MovieLens catalogue's {column} differs from the day's rows")


def synthetic_cases(feed, schema, setting: FeedSetting, count: int, seed: int):
    first = setting.first_query_day
    window = _days(feed, [first - timedelta(days=k) for k in range(setting.train_days, 0, -1)])
    items = np.unique(np.concatenate([f[setting.item].to_numpy() for _, f in window]))
    frame = feed.day(first)
    batcher = CandidateBatcher(
        pd.DataFrame({setting.item: items}),
        schema,
        item_column=setting.item,
        template=frame.iloc[[0]],
    )
    known = set(items.tolist())
    found = day_queries(
        frame,
        day=str(first),
        user_column=setting.user,
        item_column=setting.item,
        label_column="label",
    )
    # A clicked item unseen in the window is no candidate: relevance is cut to the candidates.
    found = [
        Query(user=q.user, day=q.day, context=q.context, relevant=q.relevant & known)
        for q in found
        if q.relevant & known
    ]
    return [(q, batcher) for q in sample_queries(found, count, seed=seed)]


def build_pipelines(
    models: dict[str, DLRM], keeps, n: int, d: int, *, serving: bool = False
) -> dict[str, RankingPipeline]:
    """Single-stage fp32 and every (filter, K); ``serving`` adds each of them again with
    every stage as the registered pipeline serves it (``models.pipeline_pyfunc.
    serving_model``: fused lookups, the user-side work of each query done once), named
    ``served:...``, so both are timed interleaved against the same reference."""
    filters = {
        "int8": build_variant(models["fp32"], "int8"),
        f"narrow-d{d}": models["narrow"],
        f"narrow-d{d}-ui": models["narrow-ui"],
    }
    pipelines: dict[str, RankingPipeline] = {}
    for served in (False, True) if serving else (False,):
        prefix = "served:" if served else ""
        fp32 = _stage(models["fp32"], served)
        pipelines[prefix + REFERENCE] = single_stage(fp32, k=K)
        for name, model in filters.items():
            model = _stage(model, served)
            for keep in keeps:
                if keep < n:
                    pipeline = two_stage(model, fp32, keep=keep, k=K, filter_name=name)
                    pipelines[prefix + pipeline.name] = pipeline
    return pipelines


def _stage(model: DLRM, served: bool):
    return serving_model(model, shared_context=True) if served else model


def print_table(rows: list[PipelinePoint]) -> None:
    print(
        f"{'pipeline':<33} {'k':>5} {'recall@10':>9} {'ndcg@10 [95% interval]':>24} "
        f"{'change vs fp32 [95%]':>28} {'hr@10':>6} {'svc_ms':>7} {'p50_ms':>7} {'p95_ms':>7} "
        f"{'p99_ms':>7} {'q/s':>7} {'p95 x':>6} {'q/s x':>6} iso"
    )
    for r in rows:
        print(
            f"{r.pipeline:<33} {r.k or '-':>5} {r.recall_at_10:>9.3f} "
            f"{r.ndcg_at_10:>7.4f} [{r.ndcg_low:.4f}, {r.ndcg_high:.4f}] "
            f"{r.ndcg_change:>+8.4f} [{r.ndcg_change_low:+.4f}, {r.ndcg_change_high:+.4f}] "
            f"{r.hr_at_10:>6.3f} {r.service_ms:>7.2f} {r.p50_ms:>7.2f} {r.p95_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.queries_per_s:>7.1f} {r.p95_ratio:>6.2f} "
            f"{r.throughput_ratio:>6.2f} {'yes' if r.iso_quality else 'no'}"
        )


def sweep_records(feed_name: str, load) -> list[dict]:
    """One record per pipeline and offered rate."""
    return [
        {
            "feed": feed_name,
            "pipeline": name,
            "rate_qps": rate,
            "issued": cell.issued,
            "completed": cell.completed,
            "abandoned": cell.abandoned,
            "p50_ms": cell.percentile_ms(50),
            "p95_ms": cell.percentile_ms(95),
            "p99_ms": cell.percentile_ms(99),
            "queries_per_s": cell.queries_per_s,
        }
        for name, per_rate in load.items()
        for rate, cell in per_rate.items()
    ]


def _progress(started: float, what: str) -> None:
    print(f"[{time.perf_counter() - started:5.0f} s] {what}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", choices=sorted(SETTINGS), default="movielens")
    parser.add_argument("--queries", type=int, default=200, help="queries scored for quality")
    parser.add_argument("--timing-queries", type=int, default=60, help="queries cycled under load")
    parser.add_argument(
        "--queries-per-run",
        type=int,
        default=None,
        help="per pipeline, rate, round (60; synthetic 20)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=8.0, help="bound of each load run")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=list(RATE_MULTIPLIERS),
        help="offered rates, as multiples of the single-stage capacity",
    )
    parser.add_argument("--rows-per-day", type=int, default=100_000, help="synthetic")
    parser.add_argument("--narrow-dim", type=int, default=4)
    parser.add_argument("--keeps", type=int, nargs="+", default=None, help="the filters' K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--serving",
        action="store_true",
        help="stages as the registered pipeline serves them (fused, user-side work shared)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    setting = SETTINGS[args.feed]
    feed = (
        MovieLensFeed()
        if args.feed == "movielens"
        else SyntheticFeed(seed=0, rows_per_day=args.rows_per_day)
    )
    models, schema, described = train_models(feed, setting, args)
    _progress(started, "trained the fp32 and narrow models")
    if args.feed == "movielens":
        cases = movielens_cases(schema, setting, args.queries)
    else:
        cases = synthetic_cases(feed, schema, setting, args.queries, args.seed)
    n = len(cases[0][1])
    pipelines = build_pipelines(
        models, args.keeps or setting.keeps, n, args.narrow_dim, serving=args.serving
    )
    _progress(started, f"{len(cases)} queries, {len(pipelines)} pipelines")
    quality = measure_quality(pipelines, cases, reference=REFERENCE, k=K)
    _progress(started, "quality measured")
    requests = [(b.batch(q), b.items) for q, b in cases[: args.timing_queries]]
    load_before = os.getloadavg()[0]  # 2 shared cores: other processes show here
    services = service_ms(pipelines, requests)
    _progress(started, f"single-stage service {services[REFERENCE]:.2f} ms; load runs next")
    rates = [m * 1e3 / services[REFERENCE] for m in sorted(args.rates)]
    per_run = args.queries_per_run or (60 if args.feed == "movielens" else 20)
    load = measure_load(
        pipelines,
        requests,
        rates=rates,
        rounds=args.rounds,
        queries_per_run=per_run,
        max_seconds=args.max_seconds,
    )
    _progress(started, "load runs done")
    rows = pipeline_points(pipelines, quality, load, services, reference=REFERENCE)
    if args.json:
        for row in rows:
            print(json.dumps({"feed": args.feed, "candidates": n, **asdict(row)}, sort_keys=True))
        for record in sweep_records(args.feed, load):
            print(json.dumps(record, sort_keys=True))
        return 0
    days = sorted({q.day for q, _ in cases})
    print(f"{args.feed}: {described}")
    print(
        f"{len(cases)} queries on {len(days)} day(s) {days[0]}..{days[-1]}, {n} candidates each; "
        f"torch {torch.__version__}, 1 thread per stage; single-stage service "
        f"{services[REFERENCE]:.2f} ms; rates {', '.join(f'{r:.0f}' for r in rates)} q/s; "
        f"percentiles at {rates[0]:.0f} q/s, {args.rounds} x {per_run} queries per rate; "
        f"load average before timing {load_before:.2f}, after {os.getloadavg()[0]:.2f}\n"
    )
    print_table(rows)
    best = best_point(rows)
    if best is None:
        print("\nno two-stage pipeline at iso-quality (recall@10 >= 0.99, NDCG@10 within noise)")
    else:
        print(
            f"\nat iso-quality, lowest p95: {best.pipeline}: p95 {best.p95_ratio:.2f}x lower, "
            f"throughput {best.throughput_ratio:.2f}x, recall@10 {best.recall_at_10:.3f}, "
            f"NDCG@10 {best.ndcg_at_10:.4f} (single-stage {rows[0].ndcg_at_10:.4f})"
        )
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
