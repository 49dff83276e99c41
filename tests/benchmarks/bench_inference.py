# python tests/benchmarks/bench_inference.py [--json] [--max-rows N]  (same as `quantrec bench`)
# fp32, fp16, int8 and the searched plan side by side in one process on a Criteo-shaped model.
import sys

from quantrec.benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="bench_inference.py"))
