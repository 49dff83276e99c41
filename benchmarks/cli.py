"""``quantrec bench``: the inference benchmark, with ``--train`` the training benchmark, with
``--precision`` the per-bitwidth reference table.

    quantrec bench [--max-rows 1000000] [--train-rows 100000] [--threads 1] [--json]
    quantrec bench --train [--rows 400000] [--tables 26] [--impls naive,quantrec] [--json]
    quantrec bench --precision [--feeds synthetic,movielens] [--rows-per-day 100000] [--json]
    quantrec bench --serving [--max-rows 1000000] [--train-rows 100000] [--threads 1] [--json]
    quantrec bench --representations [--feeds synthetic,movielens] [--p95-ms 50] [--json]
    quantrec bench --exchange [--rates 100mbit,1gbit,loopback] [--steps 30] [--json]

``configure`` adds the options to the ``bench`` sub-parser of ``quantrec``'s parser and
``run`` runs the benchmark they choose; ``main`` does both for ``python -m
quantrec.benchmarks.inference`` (or ``.train``, ``.precision``) and the scripts in
tests/benchmarks/.
Each default lives once, in ``benchmarks.options``. Torch is imported by ``run`` only, so
building ``quantrec``'s parser for another command stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from quantrec.benchmarks.options import (
    BenchmarkOptionsError,
    ExchangeOptions,
    InferenceOptions,
    PrecisionOptions,
    RepresentationOptions,
    ServingOptions,
    TrainOptions,
    option_names,
)

HELP = (
    "inference benchmark: fp32, fp16, int8, searched side by side; "
    "--train: training benchmark, naive vs quantrec's trainer; "
    "--precision: NE change and bytes per bit width on the feeds' default models; "
    "--serving: a plain PyTorch DLRM beside quantrec's serving paths; "
    "--representations: embedding representations, NE, bytes and correct-prediction throughput; "
    "--exchange: the sharded trainer's all-to-all, exact and compressed, at link rates"
)
# Benchmark -> its options class, and the switch that chooses it (None: the default).
_BENCHMARKS = {
    "inference": (InferenceOptions, None),
    "training": (TrainOptions, "train"),
    "precision": (PrecisionOptions, "precision"),
    "serving": (ServingOptions, "serving"),
    "representations": (RepresentationOptions, "representations"),
    "exchange": (ExchangeOptions, "exchange"),
}

# (setting, argument type, help) per group of ``quantrec bench -h``; defaults come from
# the options classes. A type of None is a switch (store_true).
_BOTH = (
    ("threads", int, "torch intra-op threads"),
    ("json", None, "one JSON object per line instead of a table"),
)
_INFERENCE = (
    ("max_rows", int, "cap on each of the 26 Criteo Kaggle table sizes"),
    ("train_rows", int, "rows of the brief fp32 training before the search"),
    ("budget", float, "relative NE budget of the precision search"),
)
_TRAINING = (
    ("rows", int, "training rows (one epoch)"),
    ("holdout_rows", int, "rows scored after training"),
    ("batch_size", int, "rows per training step and per forward call"),
    ("tables", int, "embedding tables (at most 26, the feed's id columns)"),
    ("table_rows", int, "rows of each table"),
    ("dim", int, "embedding dimension D"),
    ("lr", float, "Adam's step (MLPs) and SparseAdam's (tables)"),
    ("sparse_lr", float, "quantrec's row-wise Adagrad step (default: train_dlrm's)"),
    ("impls", "names", "comma-separated, run in this order; torchrec needs fbgemm_gpu"),
    ("seed", int, "initial model and training order"),
)
_PRECISION = (
    ("feeds", "names", "comma-separated shipped feeds, measured in this order"),
    ("rows_per_day", int, "rows of each synthetic day (--representations: 20000)"),
)
_REPRESENTATIONS = (
    ("ne_budget", float, "relative NE budget of the representation search and of cpt"),
    ("p95_ms", float, "p95 latency target of the path chosen per batch size"),
)

_EXCHANGE = (
    ("rates", "names", "comma-separated tc rates (namespaces, needs root) and/or loopback"),
    ("variants", "names", "compressed variants run after exact"),
    ("steps", int, "timed steps per variant"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add every ``bench`` option to ``parser`` (``quantrec``'s sub-parser, or its own).

    An option left out stays off the namespace (``argparse.SUPPRESS``): ``run`` then takes
    its default from ``benchmarks.options`` and can tell an option of the other benchmark,
    which it refuses, from one nobody gave.
    """
    parser.add_argument(
        "--train",
        action="store_true",
        help="run the training benchmark (a naive per-table trainer vs quantrec's) instead "
        "of the inference benchmark (fp32, fp16, int8 and the searched plan)",
    )
    parser.add_argument(
        "--precision",
        action="store_true",
        help="print the per-bitwidth reference table: NE change vs fp32 and bytes of int8 / "
        "int4 / int2 tables, the int8 MLP, fp16 and their combinations on the shipped "
        "feeds' default models",
    )
    parser.add_argument(
        "--serving",
        action="store_true",
        help="print the serving table: a plain PyTorch DLRM with the same fp32 weights "
        "beside quantrec's fp32, int8 and searched models (per-table and fused lookups), "
        "p50 / p95 ms and rows/s at batch 1, 64 and 2048",
    )
    parser.add_argument(
        "--representations",
        action="store_true",
        help="print the representations table: full, hashed, quotient-remainder, DHE, hybrid "
        "and searched embeddings on the shipped feeds: NE, bytes, p50 / p95 ms, rows/s and "
        "correct-prediction throughput at batch 1, 64 and 2048, the path per query size",
    )
    parser.add_argument(
        "--exchange",
        action="store_true",
        help="print the exchange table: the table-wise sharded trainer (2 torchrun ranks) "
        "with and without error-bounded compression of its all-to-all, step time at each "
        "link rate, samples/s and bytes per step at 1 and 2 ranks",
    )
    for title, options, settings in (
        ("every benchmark", InferenceOptions, _BOTH),
        (
            "inference and serving benchmarks (without --train or --precision)",
            InferenceOptions,
            _INFERENCE,
        ),
        ("training benchmark only (with --train)", TrainOptions, _TRAINING),
        ("precision and representations tables", PrecisionOptions, _PRECISION),
        (
            "representations table only (with --representations)",
            RepresentationOptions,
            _REPRESENTATIONS,
        ),
        ("exchange table only (with --exchange)", ExchangeOptions, _EXCHANGE),
    ):
        group = parser.add_argument_group(title)
        defaults = {f.name: f.default for f in fields(options)}
        for name, kind, help in settings:
            _add(group, name, kind, help, defaults[name])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` chose (``configure``'s options; other attributes are
    ignored). Returns 0 when it ran, 2 for a bad option, said in one line on stderr."""
    try:
        benchmark = _chosen(args)
        chosen = _BENCHMARKS[benchmark][0]
        names = option_names(chosen)
        for other, (options_class, switch) in _BENCHMARKS.items():
            foreign = [
                n for n in option_names(options_class) if n not in names and hasattr(args, n)
            ]
            if foreign:
                flags = ", ".join(_flag(n) for n in foreign)
                where = f"add --{switch}" if switch else "drop --train / --precision"
                raise BenchmarkOptionsError(
                    f"{flags}: only the {other} benchmark takes "
                    f"{'them' if len(foreign) > 1 else 'it'}; {where} or drop {flags}"
                )
        options = chosen(**{n: getattr(args, n) for n in names if hasattr(args, n)})
    except BenchmarkOptionsError as err:
        print(f"quantrec bench: {err}", file=sys.stderr)
        return 2
    if benchmark == "training":
        from quantrec.benchmarks.train import run_training

        return run_training(options)
    if benchmark == "precision":
        from quantrec.benchmarks.precision import run_precision

        return run_precision(options)
    if benchmark == "representations":
        from quantrec.benchmarks.representations import run_representations

        return run_representations(options)
    if benchmark == "exchange":
        from quantrec.benchmarks.exchange import run_exchange

        return run_exchange(options)
    if benchmark == "serving":
        from quantrec.benchmarks.serving import run_serving

        return run_serving(options)
    from quantrec.benchmarks.inference import run_inference

    return run_inference(options)


def _chosen(args: argparse.Namespace) -> str:
    """The benchmark the switches choose; both switches at once is bad input."""
    given = [
        name for name, (_, switch) in _BENCHMARKS.items() if getattr(args, switch or "", False)
    ]
    if len(given) > 1:
        flags = " and ".join(f"--{_BENCHMARKS[name][1]}" for name in given)
        raise BenchmarkOptionsError(f"{flags} choose different benchmarks; pick one")
    return given[0] if given else "inference"


def main(argv: list[str] | None = None, *, prog: str = "quantrec bench") -> int:
    """Parse ``argv`` with ``configure``'s options and ``run``; the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=HELP)
    configure(parser)
    return run(parser.parse_args(argv))


def _add(group: Any, name: str, kind: Any, help: str, default: Any) -> None:
    """``--name``, absent from the namespace unless given; help ends with the default."""
    if kind is None:
        group.add_argument(
            _flag(name), dest=name, action="store_true", default=argparse.SUPPRESS, help=help
        )
        return
    if default is not None:
        shown = ",".join(default) if isinstance(default, tuple) else default
        help = f"{help} (default: {shown})"
    group.add_argument(
        _flag(name),
        dest=name,
        type=_names if kind == "names" else kind,
        default=argparse.SUPPRESS,
        metavar=name.upper(),
        help=help,
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
