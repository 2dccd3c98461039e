"""``sparseformer demo``: a short comparison of the sparse kernels against dense SDPA."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from . import patterns as P
from .attention import pick_backend, sparse_attention


def median_ms(fn, repeats: int = 5) -> tuple[float, float]:
    """Median and (max - min) spread in milliseconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), max(times) - min(times)


def run(lengths=(1024, 2048, 4096), heads: int = 8, head_dim: int = 64, block_size: int = 64) -> list[dict]:
    pattern = P.SlidingWindow(1, unit="block") | P.Global(blocks=1)
    rows = []
    torch.manual_seed(0)
    backends = ["gather"] + (["cpu"] if pick_backend(torch.zeros(1), 0.0) == "cpu" else [])
    print(f"pattern: {pattern!r}\nB=1 H={heads} D={head_dim} fp32, threads={torch.get_num_threads()}, median of 5")
    print(f"{'L':>6} {'density':>8} {'SDPA ms':>9} " + " ".join(f"{b + ' ms':>10} {'x':>6}" for b in backends))
    for length in lengths:
        q, k, v = (torch.randn(1, heads, length, head_dim) for _ in range(3))
        layout = pattern.compile(q_len=length, num_heads=heads, block_size=block_size)
        with torch.inference_mode():
            dense, _ = median_ms(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
            row = {"L": length, "density": layout.density, "sdpa_ms": dense}
            for b in backends:
                row[b] = median_ms(lambda b=b, q=q, k=k, v=v, lo=layout: sparse_attention(q, k, v, lo, backend=b))[0]
        rows.append(row)
        print(
            f"{length:>6} {layout.density:>8.3f} {dense:>9.1f} "
            + " ".join(f"{row[b]:>10.1f} {dense / row[b]:>6.1f}" for b in backends)
        )
    return rows
