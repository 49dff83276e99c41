"""Is the fp32 DLRM worth serving? Day by day against a logistic regression and the truth.

    .venv/bin/python benchmarks/quality.py --feed synthetic --days 10
    .venv/bin/python benchmarks/quality.py --feed movielens --start 1997-10-01 --days 14

For every run date D: train the fp32 DLRM on the ``--window`` calendar days before D (a
seeded 20 % of the last day held out: the early-stopping rows), with the defaults of
``models.train.train_dlrm`` and the size of ``models.sizing.auto_model_size``; fit the
baselines of ``models.baselines`` (the window's click rate, and a scikit-learn
``LogisticRegression`` on one-hot ids + standardized dense, C and solver chosen on the same
held-out rows) on the same training rows; score all of them on day D. Synthetic days also
give the NE of their true click probabilities (the best any model can expect).

Printed per day: fp32, logistic, constant and truth NE, the share of the logistic-to-truth
gap the DLRM closes, ``(NE_lr - NE_fp32) / (NE_lr - NE_truth)``, the epochs run (and the
one kept), training samples/s. Options override the training defaults for ablations.
Pure core: no Prefect, no MLflow; one torch thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quantrec.feeds.base import SmallDayError
from quantrec.feeds.movielens import MovieLensFeed
from quantrec.feeds.synthetic import SyntheticFeed
from quantrec.feeds.table import TableFeed
from quantrec.models import sizing
from quantrec.models.baselines import fit_baselines, ground_truth_ne, score_baselines
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy, undefined_reason
from quantrec.models.names import Baseline
from quantrec.models.scorer import predict_proba
from quantrec.models.sizing import auto_model_size
from quantrec.models.stream import holdout_mask
from quantrec.models.train import DEFAULT_MAX_EPOCHS, train_dlrm, warm_start

HOLDOUT_FRACTION = 0.2  # the lifecycle's search.holdout_fraction default


@dataclass
class DayResult:
    day: str
    train_rows: int
    test_rows: int
    fp32: float
    logistic: float | None
    constant: float | None
    truth: float | None
    epochs: int
    best_epoch: int
    samples_per_s: float
    train_s: float
    embedding_dim: int
    batch_size: int

    @property
    def gap_closed(self) -> float | None:
        if self.truth is None or self.logistic is None or self.logistic <= self.truth:
            return None
        return (self.logistic - self.fp32) / (self.logistic - self.truth)


def _feed(args: argparse.Namespace):
    if args.feed == "synthetic":
        return SyntheticFeed(
            seed=args.feed_seed,
            rows_per_day=args.rows_per_day,
            scenario=args.scenario,
            shift_date=args.shift_date,
        )
    if args.feed == "table":
        if args.spec is None:
            raise SystemExit("--feed table needs --spec (a table-feed TOML mapping)")
        return TableFeed(spec=args.spec)  # the table feed's defaults (min_rows 1)
    return MovieLensFeed()


def _day(feed, day: date) -> pd.DataFrame | None:
    try:
        return feed.day(day)
    except SmallDayError:
        return None  # the lifecycle skips it too: not in the lake, not in any window


def _window(feed, run_date: date, window: int) -> list[tuple[date, pd.DataFrame]]:
    """The feed's days among the ``window`` calendar days before ``run_date``, oldest first."""
    days = [run_date - timedelta(days=k) for k in range(window, 0, -1)]
    return [(d, f) for d, f in ((d, _day(feed, d)) for d in days) if f is not None]


def _split(days: list[tuple[date, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows): a seeded share of the last day held out."""
    last = days[-1][1]
    held = holdout_mask(len(last), fraction=HOLDOUT_FRACTION, seed=0)
    training = pd.concat([*(f for _, f in days[:-1]), last[~held]], ignore_index=True)
    return training, last[held].reset_index(drop=True)


def _baselines(cache: dict, key: str, training, held_out, test) -> dict[str, float]:
    if key not in cache:
        scored = score_baselines(fit_baselines(training, held_out), test)
        cache[key] = {name: m.ne for name, m in scored.items()}
    return cache[key]


def _new_model(schema, rows: int, args: argparse.Namespace) -> tuple[DLRM, object]:
    size = auto_model_size(schema, rows, embedding_dim=args.embedding_dim)
    schema = size.apply(schema)
    torch.manual_seed(args.seed)
    model = DLRM.from_schema(
        schema,
        embedding_dim=size.embedding_dim,
        bottom_mlp=size.bottom_mlp(),
        top_mlp=tuple(args.top_mlp),
        first_order=not args.no_first_order,
    )
    return model, schema


def run_day(
    feed, run_date: date, args: argparse.Namespace, cache: dict, state: dict
) -> DayResult | None:
    """Train (from scratch, or continuing ``state``'s model with ``--continual``) and score
    one run date; None when the feed has no rows for it or its window."""
    test_frame, window = _day(feed, run_date), _window(feed, run_date, args.window)
    if test_frame is None or not window:
        return None
    if undefined_reason(test_frame[feed.schema().label].to_numpy()) is not None:
        return None  # NE is undefined on a day of one class; the lifecycle records a stop
    parent = state.get("model") if args.continual else None
    if parent is not None and (run_date - state["full_retrain"]).days >= args.full_retrain_days:
        parent = None  # the lifecycle's periodic full retrain (training.full_retrain_days)
    if parent is None:
        state["full_retrain"] = run_date
        model, schema = _new_model(feed.schema(), len(_split(window)[0]), args)
        days = window
    else:  # the parent's size and contract; only the days it has not trained on
        schema = state["schema"]
        model = DLRM(**parent.architecture())
        warm_start(model, parent)
        days = [(d, f) for d, f in window if d > state["last_day"]]
    training_frame, held_frame = _split(window)
    batches = {
        name: batch_from_frame(f, schema)
        for name, f in (("window", training_frame), ("held_out", held_frame), ("test", test_frame))
    }
    report = None
    if days:
        rows = batches["window"] if days is window else batch_from_frame(_split(days)[0], schema)
        options = {
            k: getattr(args, k)
            for k in ("epochs", "batch_size", "learning_rate", "sparse_learning_rate", "patience")
            if getattr(args, k) is not None
        }
        if parent is not None:
            for name in ("learning_rate", "sparse_learning_rate"):
                if getattr(args, f"continued_{name}") is not None:
                    options[name] = getattr(args, f"continued_{name}")
        if args.embedding_prior is not None:
            options["embedding_weight_decay"] = (
                0.0 if parent is not None else args.embedding_prior / len(rows)
            )
        else:
            options["embedding_weight_decay"] = args.embedding_weight_decay
        transform = "keep" if args.no_dense_transform else None
        report = train_dlrm(
            model,
            rows,
            seed=args.seed,
            validation=batches["held_out"],
            max_epochs=args.max_epochs,
            continued=parent is not None,
            optimizer_state=(
                None if parent is None or args.restart_optimizers else parent.optimizer_state
            ),
            dense_transform=transform,
            **options,
        )
        state.update(model=model, schema=schema, last_day=days[-1][0])
    test = batches["test"]
    labels = test.labels.double().numpy()
    fp32 = normalized_entropy(labels, predict_proba(model, test))
    baselines = (
        {}
        if args.no_baselines
        else _baselines(
            cache,
            f"{args.feed}:{args.scenario}:{args.feed_seed}:{args.rows_per_day}:{args.window}:{run_date}",
            batches["window"],
            batches["held_out"],
            test,
        )
    )
    truth = None
    if isinstance(feed, SyntheticFeed):
        truth = ground_truth_ne(labels, feed.click_probability(run_date))
    return DayResult(
        day=str(run_date),
        train_rows=report.samples // max(report.epochs, 1) if report else 0,
        test_rows=len(test),
        fp32=fp32,
        logistic=baselines.get(Baseline.LOGISTIC),
        constant=baselines.get(Baseline.CONSTANT),
        truth=truth,
        epochs=report.epochs if report else 0,
        best_epoch=report.best_epoch if report else 0,
        samples_per_s=report.samples_per_s if report else 0.0,
        train_s=report.seconds if report else 0.0,
        embedding_dim=model.architecture()["embedding_dim"],
        batch_size=report.batch_size if report else 0,
    )


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_row(r: DayResult) -> None:
    beats = "" if r.logistic is None else ("yes" if r.fp32 < r.logistic else "no")
    print(
        f"{r.day}  {r.train_rows:>7}  {r.test_rows:>6}  {r.fp32:.4f}  {_cell(r.logistic)}"
        f"  {_cell(r.constant)}  {_cell(r.truth)}  {_cell(r.gap_closed, 3):>6}  {beats:>5}"
        f"  {r.best_epoch:>2}/{r.epochs:<2}  {r.samples_per_s:>7.0f}  {r.train_s:>6.1f}"
        f"  D={r.embedding_dim} B={r.batch_size}",
        flush=True,
    )


def summarise(results: list[DayResult], *, min_rows: int) -> None:
    compared = [r for r in results if r.logistic is not None]
    if not compared:
        return
    wins = sum(r.fp32 < r.logistic for r in compared)
    not_worse = sum(r.fp32 <= r.logistic for r in compared)
    print(
        f"\nfp32 beats logistic on {wins}/{len(compared)} days, no worse on "
        f"{not_worse}/{len(compared)}; mean NE fp32 {np.mean([r.fp32 for r in compared]):.4f}"
        f", logistic {np.mean([r.logistic for r in compared]):.4f}"
    )
    gaps = [r.gap_closed for r in compared if r.gap_closed is not None]
    if gaps:
        print(f"gap closed: mean {np.mean(gaps):.3f}, min {min(gaps):.3f}, last day {gaps[-1]:.3f}")
    large = [r for r in results if r.test_rows >= min_rows]
    if large and not gaps:
        below = sum(r.fp32 < 1.0 for r in large)
        print(f"days with >= {min_rows} rows: fp32 NE < 1 on {below}/{len(large)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", choices=("synthetic", "movielens", "table"), default="synthetic")
    parser.add_argument(
        "--spec", type=Path, default=None, help="--feed table: the TOML mapping file"
    )
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        default=None,
        help="first run date (synthetic: 2024-01-04; movielens: 1997-10-01)",
    )
    parser.add_argument("--days", type=int, default=3, help="run dates, consecutive")
    parser.add_argument("--window", type=int, default=3, help="training days before each")
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--feed-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-mlp", type=int, nargs="+", default=[64, 32, 1])
    parser.add_argument("--embedding-dim", type=int, default=None)
    parser.add_argument("--no-first-order", action="store_true")
    parser.add_argument("--no-dense-transform", action="store_true")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--continual",
        action="store_true",
        help="after the first day, continue the previous day's model on the "
        "days it has not trained on (warm start), as the lifecycle does",
    )
    parser.add_argument("--epochs", type=int, default=None, help="fixed; default early stop")
    parser.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--sparse-learning-rate", type=float, default=None)
    parser.add_argument(
        "--full-retrain-days",
        type=int,
        default=30,
        help="--continual: retrain from scratch on the window this often (the lifecycle's "
        "training.full_retrain_days default)",
    )
    parser.add_argument(
        "--restart-optimizers",
        action="store_true",
        help="--continual: fresh optimizers at a tenth of the rates instead of resuming the "
        "parent's state (the lifecycle before it kept optimizer state)",
    )
    parser.add_argument("--scenario", choices=("stable", "gradual", "sudden"), default="stable")
    parser.add_argument(
        "--shift-date",
        type=date.fromisoformat,
        default=None,
        help="sudden: the first shifted day (default: the 6th run date, as in the demo)",
    )
    parser.add_argument("--continued-learning-rate", type=float, default=None)
    parser.add_argument("--continued-sparse-learning-rate", type=float, default=None)
    parser.add_argument("--embedding-weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--embedding-prior",
        type=float,
        default=None,
        help="weight decay = prior / rows on full retrains, 0 continuing",
    )
    parser.add_argument(
        "--accumulator-per-sample",
        type=float,
        default=None,
        help="overrides models.sizing.INITIAL_ACCUMULATOR_PER_SAMPLE",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="JSON file keeping the baselines' NE per day between runs",
    )
    parser.add_argument(
        "--min-rows", type=int, default=200, help="movielens: days this large must reach NE < 1"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.accumulator_per_sample is not None:
        sizing.INITIAL_ACCUMULATOR_PER_SAMPLE = args.accumulator_per_sample
    start = args.start or (date(2024, 1, 4) if args.feed == "synthetic" else date(1997, 10, 1))
    if args.scenario == "sudden" and args.shift_date is None:
        args.shift_date = start + timedelta(days=5)
    feed = _feed(args)
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    print(f"# {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(
        "day         train  test    fp32    lr      const   truth   gap     beats "
        "ep      smp/s  train_s"
    )
    results, started, state = [], time.perf_counter(), {}
    for k in range(args.days):
        result = run_day(feed, start + timedelta(days=k), args, cache, state)
        if args.cache:
            args.cache.write_text(json.dumps(cache))
        if result is None:
            print(f"{start + timedelta(days=k)}  (too few rows: skipped)")
            continue
        results.append(result)
        print_row(result)
    summarise(results, min_rows=args.min_rows)
    print(f"{time.perf_counter() - started:.0f} s; rows as JSON:")
    print(json.dumps([asdict(r) | {"gap_closed": r.gap_closed} for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
