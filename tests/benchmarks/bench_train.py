# python tests/benchmarks/bench_train.py [--rows 400000] [--threads 1] [--json]
# (same as `quantrec bench --train`)
# Naive per-table trainer vs quantrec's fused trainer, side by side in one process.
import sys

from quantrec.benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main(["--train", *sys.argv[1:]], prog="bench_train.py"))
