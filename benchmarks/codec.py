"""Error-bounded table compression against row-wise quantization, at the same NE budget.

    nice -n 10 python -m quantrec.benchmarks.codec [--rows-per-day 20000] [--days 3]
                                                   [--budget 0.0005] [--threads 1] [--json]

The lifecycle's default fp32 DLRM of the synthetic feed is trained by
``models.lifecycle.train_fp32`` on ``--days`` days (as ``benchmarks.precision`` does), then
three precision searches run side by side on its held-out rows, as the lifecycle's
``search_plan`` splits them (half to search, half to confirm), the MLPs kept fp32 so only
tables differ:

* ``row-wise``: the daily default table candidates (fp16, int8, int4, int4_greedy, int2,
  int2_greedy);
* ``ebc``: the error-bounded codec's ladder only (``ebc_0.002`` ... ``ebc_0.05``);
* ``row-wise + ebc``: both, per table.

Each plan is saved as an artifact (``models.artifact``) and loaded back; printed per plan:
its NE change against fp32 on the search rows, on the confirmation rows and on the
following day (never trained or searched on, with the 95 % paired bootstrap interval), the
tables' stored bytes (state_dict:
what ``weights.pt`` and the wire carry, and what the search counted), the whole
``weights.pt`` on disk, the tables' serving bytes in memory, load time (median of 5
``load_model`` calls, decoding included) and decode time of the encoded tables alone, and
for ``ebc`` tables the largest |decoded - fp32| as a fraction of each table's bound, and the
share of table rows served as all zeros (rows within the bound of 0). A reloaded plan must
reproduce the saved one's outputs exactly (checked). Also measured: uniform tables (every
row-wise precision, and ``ebc_0.01`` / ``ebc_0.05``), and every artifact's ``weights.pt``
through zstandard at the codec's level (what a generic lossless pass alone would save).

"Best row-wise": the smallest row-wise plan, searched or uniform, whose NE change is within
the budget on both halves of the held-out rows; ``x best`` is a plan's table bytes over its.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import torch
import zstandard
from torch import nn

from quantrec.feeds.base import SmallDayError
from quantrec.feeds.lake import DayLake
from quantrec.models.artifact import WEIGHTS_FILE, load_model, save_model
from quantrec.models.batch import batch_from_frame
from quantrec.models.codec import ZSTD_LEVEL, decode_table, read_header
from quantrec.models.gate_policy import GatePolicy
from quantrec.models.lifecycle import train_fp32
from quantrec.models.metrics import normalized_entropy
from quantrec.models.noise import PairedIntervals
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import (
    apply_precision_plan,
    model_bytes,
    quantizable_units,
    serving_bytes,
)
from quantrec.models.recipes import EBC_PRECISIONS, ErrorBoundedEmbeddingBag
from quantrec.models.scorer import predict_proba, score
from quantrec.models.search import TABLE_CANDIDATES, search_precision_plan
from quantrec.models.train import torch_threads

TEST_DAY = date(2024, 1, 4)
# Uniform tables: row-wise ones for the best row-wise plan within budget on both halves;
# two fixed codec bounds (the paper's tight and loose) to show what the search adds.
UNIFORM = ("int8", "int4", "int4_greedy", "int2", "int2_greedy", "ebc_0.01", "ebc_0.05")
SEARCHES = {
    "row-wise": TABLE_CANDIDATES,
    "ebc": EBC_PRECISIONS,
    "row-wise + ebc": TABLE_CANDIDATES + EBC_PRECISIONS,
}


@dataclass(frozen=True)
class CodecRow:
    """One plan of the benchmark's model (bytes of its tables unless said otherwise)."""

    plan: str
    precisions: dict[str, int]  # table precision -> tables at it
    ne_delta_search: float  # relative NE change vs fp32 on the search rows
    ne_delta_confirm: float  # on the confirmation rows
    ne_delta_test: float  # on the following day
    test_low: float | None  # its 95 % paired bootstrap interval
    test_high: float | None
    table_bytes: int  # stored (state_dict) bytes of the tables
    table_serving_bytes: int  # in memory: decoded fp32 for ebc tables
    weights_file_bytes: int  # weights.pt on disk (tables, MLPs, container)
    weights_zstd_bytes: int  # weights.pt through zstandard (reference only)
    load_ms: float  # load_model, median of 5
    decode_ms: float  # decode_table of its encoded tables alone, median of 5
    max_error_over_bound: float | None  # max over ebc tables of max |error| / bound
    zero_row_share: float  # share of all table rows served as all zeros
    search_s: float  # wall time of the plan's search (0: not searched)


def write_days(folder: Path, feed, days: int) -> list[Path]:
    """The ``days`` days before ``TEST_DAY`` in a lake in ``folder``, oldest first (days the
    feed has too few rows for are skipped)."""
    lake, paths = DayLake(folder), []
    for k in range(days, 0, -1):
        day = TEST_DAY - timedelta(days=k)
        try:
            paths.append(lake.write(day, feed.day(day)))
        except SmallDayError:
            continue
    return paths


def train_model(*, rows_per_day: int, days: int, folder: Path):
    """(trained fp32 parent, the following day's batch) of the default synthetic config."""
    from quantrec.tasks.config import QuantrecConfig

    config = QuantrecConfig().with_feed("synthetic", rows_per_day=rows_per_day)
    config = config.with_overrides(training={"threads": 1})
    feed = config.feed.build(TEST_DAY)
    paths = write_days(folder, feed, days)
    trained = train_fp32(
        paths,
        feed.schema(),
        model=config.model,
        training=config.training,
        holdout_fraction=config.search.holdout_fraction,
    )
    return trained, batch_from_frame(feed.day(TEST_DAY), trained.schema)


def table_names(model) -> list[str]:
    return [n for n in quantizable_units(model) if n.startswith("sparse_arch.")]


def uniform_tables(model, precision: str) -> PrecisionPlan:
    plan = {n: (precision if n in table_names(model) else "fp32") for n in quantizable_units(model)}
    return PrecisionPlan.from_precisions(plan)


def _delta(fp32, plan: PrecisionPlan, rows) -> float:
    """Relative NE change of ``plan`` against ``fp32`` on ``rows``."""
    ne_fp32 = score(fp32, rows).ne
    return (score(apply_precision_plan(fp32, plan.precisions()), rows).ne - ne_fp32) / ne_fp32


def best_row_wise(rows: list[CodecRow], budget: float) -> CodecRow:
    """The smallest row-wise plan (searched or uniform) within budget on both halves."""
    row_wise = [r for r in rows if not any(p.startswith("ebc") for p in r.precisions)]
    within = [r for r in row_wise if max(r.ne_delta_search, r.ne_delta_confirm) <= budget]
    return min(within or row_wise, key=lambda r: r.table_bytes)


def _median_ms(action, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1e3)
    return sorted(times)[len(times) // 2]


def measure_plan(
    name: str, plan: PrecisionPlan, fp32, folder: Path, schema, test
) -> tuple[dict, object]:
    """Save, reload and measure one plan; (its measurements, its test-day probabilities)."""
    variant = apply_precision_plan(fp32, plan.precisions())
    path = save_model(
        variant, folder / name.replace(" ", "_"), schema=schema, precision="searched", plan=plan
    )
    loaded = load_model(path).model
    with torch.inference_mode():
        if not torch.equal(loaded(test), variant(test)):
            raise AssertionError(f"{name}: the reloaded plan does not reproduce its outputs")
    tables = {n: variant.get_submodule(n) for n in table_names(variant)}
    encoded = {n: t for n, t in tables.items() if isinstance(t, ErrorBoundedEmbeddingBag)}
    blobs = {n: t.encoded.numpy().tobytes() for n, t in encoded.items()}
    ratios = []
    for n, t in encoded.items():
        bound = read_header(blobs[n]).bound
        exact = fp32.get_submodule(n).weight.detach().double()
        error = float((t.weight.double() - exact).abs().max())
        ratios.append(0.0 if bound == 0 else error / bound)
    counts: dict[str, int] = {}
    for t in tables.values():
        precision = getattr(t, "precision", "fp32")
        counts[precision] = counts.get(precision, 0) + 1
    rows = sum(t.num_embeddings for t in tables.values())
    zero_rows = sum(
        int((t.dequantized_weight() == 0).all(dim=1).sum())
        if hasattr(t, "dequantized_weight")
        else int((t.weight == 0).all(dim=1).sum())
        for t in tables.values()
    )
    weights = (path / WEIGHTS_FILE).read_bytes()
    row = {
        "plan": name,
        "precisions": dict(sorted(counts.items())),
        "table_bytes": sum(model_bytes(t) for t in tables.values()),
        "table_serving_bytes": serving_bytes(nn.ModuleList(tables.values())),
        "weights_file_bytes": len(weights),
        "weights_zstd_bytes": len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(weights)),
        "load_ms": _median_ms(lambda: load_model(path)),
        "decode_ms": _median_ms(lambda: [decode_table(b) for b in blobs.values()])
        if blobs
        else 0.0,
        "max_error_over_bound": max(ratios) if ratios else None,
        "zero_row_share": zero_rows / rows,
    }
    return row, predict_proba(variant, test)


def run(*, rows_per_day: int, days: int, budget: float) -> tuple[list[CodecRow], str]:
    """Train, search the three ways, measure every plan; (rows, a line describing the model)."""
    with tempfile.TemporaryDirectory(prefix="quantrec-codec-") as tmp:
        folder = Path(tmp)
        trained, test = train_model(rows_per_day=rows_per_day, days=days, folder=folder / "lake")
        fp32, holdout = trained.model, trained.holdout
        half = len(holdout) // 2
        plans: dict[str, tuple[PrecisionPlan, float]] = {}  # name -> (plan, search seconds)
        for name, candidates in SEARCHES.items():
            started = time.perf_counter()
            result = search_precision_plan(
                fp32,
                holdout.slice(0, half),
                calibration=holdout,
                confirmation=holdout.slice(half, len(holdout)),
                budget=budget,
                linear_candidates=(),
                table_candidates=candidates,
            )
            plans[name] = (result.chosen, time.perf_counter() - started)
        for precision in UNIFORM:
            plans[f"uniform {precision}"] = (uniform_tables(fp32, precision), 0.0)
        rows_of = {"search": holdout.slice(0, half), "confirm": holdout.slice(half, len(holdout))}
        deltas = {
            name: {k: _delta(fp32, plan, rows) for k, rows in rows_of.items()}
            for name, (plan, _) in plans.items()
        }
        measured, probs = {}, {"fp32": predict_proba(fp32, test)}
        for name, (plan, _) in plans.items():
            measured[name], probs[name] = measure_plan(
                name, plan, fp32, folder / "artifacts", trained.schema, test
            )
    labels = test.labels.double().numpy()
    gate = GatePolicy()
    intervals = PairedIntervals(
        labels,
        probs,
        {"all": None},
        refs=["fp32"],
        skip=[],
        samples=gate.bootstrap_samples,
        seed=gate.bootstrap_seed,
        confidence=gate.confidence,
    )
    ne = {name: normalized_entropy(labels, p) for name, p in probs.items()}
    rows = []
    for name, (_, seconds) in plans.items():
        low, high = intervals.change("ne", "rel", name, "fp32", "all") or (None, None)
        rows.append(
            CodecRow(
                **measured[name],
                ne_delta_search=deltas[name]["search"],
                ne_delta_confirm=deltas[name]["confirm"],
                ne_delta_test=(ne[name] - ne["fp32"]) / ne["fp32"],
                test_low=low,
                test_high=high,
                search_s=seconds,
            )
        )
    arch = fp32.architecture()
    described = (
        f"synthetic: {trained.rows:,} training rows ({days} days of {rows_per_day:,}), "
        f"{len(arch['table_sizes'])} tables of {sum(arch['table_sizes']):,} rows, "
        f"D={arch['embedding_dim']}; searched on {half:,} held-out rows (confirmed on "
        f"{len(holdout) - half:,}), budget {budget:.3%} NE; tested on {TEST_DAY} "
        f"({len(test):,} rows)"
    )
    return rows, described


def print_table(rows: list[CodecRow], budget: float) -> None:
    best = best_row_wise(rows, budget)
    print(
        f"best row-wise plan within budget on both halves: {best.plan} "
        f"({best.table_bytes:,} table bytes)\n"
    )
    print(
        f"{'plan':<20} {'NE search':>9} {'confirm':>8} {'next day':>8} {'95% interval':>20} "
        f"{'table B':>10} {'x best':>6} {'serving B':>10} {'weights.pt':>10} "
        f"{'zstd(pt)':>10} {'load ms':>7} {'decode ms':>9} {'err/bound':>9} {'0 rows':>6}"
    )
    for r in rows:
        interval = "-" if r.test_low is None else f"[{r.test_low:+.3%}, {r.test_high:+.3%}]"
        ratio = "-" if r.max_error_over_bound is None else f"{r.max_error_over_bound:.6f}"
        print(
            f"{r.plan:<20} {r.ne_delta_search:>+9.3%} {r.ne_delta_confirm:>+8.3%} "
            f"{r.ne_delta_test:>+8.3%} {interval:>20} "
            f"{r.table_bytes:>10,} {r.table_bytes / best.table_bytes:>6.3f} "
            f"{r.table_serving_bytes:>10,} {r.weights_file_bytes:>10,} "
            f"{r.weights_zstd_bytes:>10,} {r.load_ms:>7.1f} {r.decode_ms:>9.1f} {ratio:>9} "
            f"{r.zero_row_share:>6.1%}"
        )
    for r in rows:
        searched = f", searched in {r.search_s:.1f} s" if r.search_s else ""
        print(f"  {r.plan}: {r.precisions}{searched}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantrec.benchmarks.codec")
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.0005, help="relative NE budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with torch_threads(args.threads):
        rows, described = run(rows_per_day=args.rows_per_day, days=args.days, budget=args.budget)
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row), sort_keys=True))
        return 0
    print(described)
    print(
        f"torch {torch.__version__}, zstandard {zstandard.__version__}, {args.threads} thread(s)\n"
    )
    print_table(rows, args.budget)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
