"""What a dynamic-length custom-op export pays per attention call to cut its layout to the input's
length (docs/edge.md): ``BlockLayout.prefix(L)`` of a full causal layer's layout compiled at ``N``.

    .venv/bin/python benchmarks/layout_prefix.py [--max-lengths 8192 32768] [--lengths 1024] [--repeats 7]

One thread, 8 heads, block 64; median and [min, max] of ``--repeats`` calls after one untimed call,
for each ``L`` in ``--lengths`` and ``L = N``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparseformer import patterns as P
from sparseformer.bench.info import machine_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-lengths", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(machine_line())
    print("| N (compiled) | layout entries | L | prefix ms, median [min, max] |")
    print("|---|---|---|---|")
    for n in args.max_lengths:
        layout = P.Dense().compile(q_len=n, num_heads=8, block_size=64, causal=True)
        for length in sorted({*(x for x in args.lengths if x <= n), n}):
            layout.prefix(length)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                layout.prefix(length)
                times.append(1e3 * (time.perf_counter() - t0))
            print(
                f"| {n} | {layout.nnz} | {length} | {statistics.median(times):.2f} [{min(times):.2f}, {max(times):.2f}] |"
            )


if __name__ == "__main__":
    main()
