"""Time and peak memory of the portable ``gather`` backend against dense SDPA (docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_gather.py [--lengths 1024 2048 4096 8192 16384] [--repeats 5]

B=1, H=8, D=64, fp32, block 64, this machine's threads. Per length and pattern: median and
spread (max - min) of ``--repeats`` timed calls after one warm-up call, and the peak resident
memory the warm-up call adds (see ``sparseformer.bench.measure``: VmHWM after ``malloc_trim``
and a reset, minus RSS before).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.bench.info import machine_line
from sparseformer.bench.measure import peak_memory, time_calls

PATTERNS = {
    "block-local": P.BlockLocal(),
    "sliding ±1 block": P.SlidingWindow(1, unit="block"),
    "BigBird (3 window, 1 global, 2 random)": P.BigBird(num_random_blocks=2),
}


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block-size", type=int, default=64)
    args = ap.parse_args()
    cpu = torch.device("cpu")
    h, d, bs = 8, 64, args.block_size
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, B=1 H={h} D={d} fp32, block {bs}")
    print("| L | method | block density | median ms | spread ms | speedup vs SDPA | peak extra MiB |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for length in args.lengths:
        q, k, v = (torch.randn(1, h, length, d) for _ in range(3))
        with torch.inference_mode():
            sdpa = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
            mem = peak_memory(sdpa, cpu)[1]
            dense = time_calls(sdpa, args.repeats, 0, cpu)
            print(f"| {length} | dense SDPA | 1 | {dense.median_ms:.1f} | {dense.spread_ms:.1f} | 1.0 | {mem:.0f} |")
            for name, pattern in PATTERNS.items():
                layout = pattern.compile(q_len=length, num_heads=h, block_size=bs)
                fn = lambda lo=layout, q=q, k=k, v=v: sf.sparse_attention(q, k, v, lo, backend="gather")  # noqa: E731
                mem = peak_memory(fn, cpu)[1]
                t = time_calls(fn, args.repeats, 0, cpu)
                print(
                    f"| {length} | gather, {name} | {layout.block_density:.3f} | {t.median_ms:.1f} | {t.spread_ms:.1f} "
                    f"| {dense.median_ms / t.median_ms:.2f} | {mem:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
