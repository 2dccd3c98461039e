"""The model tables of docs/native.md: ``sparseformer bench models`` (see sparseformer/bench/models.py).

.venv/bin/python benchmarks/bench_models.py [--models gemma-3-270m,modernbert-base] [--lengths 2048 8192 32768]
"""

import sys

from sparseformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-models", *sys.argv[1:]]))
