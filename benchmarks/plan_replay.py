"""Replay: does the searched plan hold on the run date? The search with and without the
faithfulness check, side by side on the same fp32 parents and the same days.

    python -m quantrec.benchmarks.plan_replay [--days 10] [--rows 100000]
                                              [--scenario sudden|stable] [--window-days 3]

For each run date D of the demo's synthetic days (shift halfway, as ``quantrec demo``): the
window and D go into a temporary lake, the fp32 parent trains on the window from scratch
(``models.lifecycle.train_fp32``), and the precision search runs twice on its held-out rows
(``models.lifecycle.search_plan``): as before (confirmed by the point estimate) and with the
faithfulness bound (accepted by the paired bootstrap interval). Each plan's variant, built as
the daily flow builds it, is scored on D against the fp32 parent: the realised NE change.
Printed per day and summarised: the share of days with |realised| within the budget, the
plans' bytes against fp32, the search seconds, and how often the predicted interval covered
the realised change. Every day searches (no reuse), so the reuse rule is not measured here.
No Prefect, no MLflow.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date, timedelta
from pathlib import Path

DEMO_START = date(2026, 1, 1)


def replay(days: int, rows: int, scenario: str, window_days: int) -> list[dict]:
    from quantrec.feeds.lake import DayLake
    from quantrec.models import lifecycle
    from quantrec.models.batch import batch_from_frame
    from quantrec.models.scorer import score
    from quantrec.models.search import Faithfulness
    from quantrec.models.train import torch_threads
    from quantrec.tasks.config import QuantrecConfig

    shift = DEMO_START + timedelta(days=days // 2)
    config = QuantrecConfig().with_feed(
        "synthetic", scenario=scenario, shift_date=shift, rows_per_day=rows
    )
    config = config.with_overrides(training={"window_days": window_days})
    gate, search, threads = config.gate, config.search, config.training.threads
    bound = Faithfulness(  # the daily flow's defaults: the budget, the gate's bootstrap
        bound=gate.quantization_ne_budget_rel
        if search.faithfulness is None
        else search.faithfulness,
        samples=gate.bootstrap_samples,
        confidence=gate.confidence,
        seed=gate.bootstrap_seed,
    )
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        lake = DayLake(Path(tmp))
        for k in range(days):
            run_date = DEMO_START + timedelta(days=k)
            partitions = lifecycle.admit_days(
                lake, config.feed.build(run_date), run_date, window_days
            )
            trained = lifecycle.train_fp32(
                [lake.path(d) for d in partitions.window],
                partitions.schema,
                model=config.model,
                training=config.training,
                holdout_fraction=search.holdout_fraction,
            )
            day = batch_from_frame(lake.read(run_date), trained.schema)
            with torch_threads(threads):
                ne_fp32 = score(trained.model, day, batch_size=config.evaluation.batch_size).ne
            row = {"date": run_date.isoformat()}
            for name, check in (("before", None), ("faithful", bound)):
                choice = lifecycle.search_plan(
                    trained,
                    reason="replay",
                    budget_rel=gate.quantization_ne_budget_rel,
                    linear_candidates=search.linear_candidates,
                    table_candidates=search.table_candidates,
                    batch_size=config.evaluation.batch_size,
                    threads=threads,
                    faithfulness=check,
                )
                with torch_threads(threads):
                    variant = choice.plan.apply(trained.model, calibration=trained.holdout)
                    ne = score(variant, day, batch_size=config.evaluation.batch_size).ne
                predicted = choice.predicted
                row[name] = {
                    "realised": (ne - ne_fp32) / ne_fp32,
                    "bytes": choice.plan.bytes / choice.result.fp32_bytes,
                    "seconds": choice.seconds,
                    "chosen_by": choice.result.chosen_by,
                    "interval": None if predicted is None else (predicted.low, predicted.high),
                }
            out.append(row)
            _print_day(row)
    _print_summary(out, config.gate.quantization_ne_budget_rel)
    return out


def _print_day(row: dict) -> None:
    parts = [row["date"]]
    for name in ("before", "faithful"):
        r = row[name]
        band = (
            ""
            if r["interval"] is None
            else " [{:+.3f}, {:+.3f}]".format(*(100 * x for x in r["interval"]))
        )
        parts.append(
            f"{name}: {100 * r['realised']:+.3f} % {r['bytes']:.3f}x {r['seconds']:.0f} s "
            f"{r['chosen_by']}{band}"
        )
    print(" | ".join(parts), flush=True)


def _print_summary(rows: list[dict], budget: float) -> None:
    for name in ("before", "faithful"):
        rs = [row[name] for row in rows]
        within = sum(abs(r["realised"]) <= budget for r in rs)
        seconds = [r["seconds"] for r in rs]
        bands = [r for r in rs if r["interval"] is not None]
        covered = sum(lo <= r["realised"] <= hi for r in bands for lo, hi in [r["interval"]])
        print(
            f"{name}: |realised| within {100 * budget:.3f} % on {within}/{len(rs)} days; "
            f"bytes {sum(r['bytes'] for r in rs) / len(rs):.3f}x fp32 on average; "
            f"search {sum(seconds) / len(seconds):.0f} s mean, {max(seconds):.0f} s max"
            + (f"; interval covered the realised change on {covered}/{len(bands)}" if bands else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scenario", default="sudden", choices=("sudden", "stable"))
    parser.add_argument("--window-days", type=int, default=3)
    args = parser.parse_args(argv)
    replay(args.days, args.rows, args.scenario, args.window_days)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
