"""The main benchmark in one command: ``sparseformer bench`` with its defaults (an encoder of
MiniLM's shape on real text, every strategy, block sizes 32 and 64, lengths from 256 doubling
while the time budget allows, plus the MiniLM quality check at 512 tokens), writing to ``--out``.
With no constraint it answers, per length, with the fastest configuration whose quality is at
least 0.97, and names the break-even length (see docs/bench.md).

    python benchmarks/bench_main.py                    # -> ./sparseformer-bench/
    python benchmarks/bench_main.py --out /tmp/b --threads 2 --budget-ms 200 --seq-len 1024

Any ``sparseformer bench`` option may be given.
"""

import sys

from sparseformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
