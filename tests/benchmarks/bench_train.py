# python tests/benchmarks/bench_train.py [--rows 400000] [--threads 1] [--json]
# Naive per-table trainer vs quantrec's fused trainer, side by side in one process.
import sys

from quantrec.models.train_bench import main

if __name__ == "__main__":
    sys.exit(main())
