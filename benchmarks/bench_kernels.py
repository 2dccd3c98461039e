"""The kernel table of docs/benchmarks.md: ``sparseformer bench kernels`` (see sparseformer/bench/kernels.py).

.venv/bin/python benchmarks/bench_kernels.py [--lengths 2048 8192 32768] [--threads 1]
"""

import sys

from sparseformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-kernels", *sys.argv[1:]]))
