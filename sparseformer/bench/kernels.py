"""``sparseformer bench kernels``: the attention kernels side by side on one layout.

Per pattern and length, in one run: dense ``scaled_dot_product_attention``, compiled
FlexAttention with the layout's ``BlockMask`` (its compile time reported apart), the portable
``gather`` backend and the native ``cpu`` kernel. Each method gets one untimed call (FlexAttention
compiles there), one call for peak memory (see :mod:`.measure`), then ``--repeats`` timed calls:
median and spread (max - min). GFLOP/s counts ``4·bs²·D`` per visited tile and head (dense:
``4·Lq·Lk·D`` per head), so it is the rate over the work a method really does.

A second table times decoding: one query against a KV cache with a causal sink + window layout,
for two cache lengths; a third (``--long``) runs the ``cpu`` kernel once at a long length and
reports the whole process's peak resident memory.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from functools import partial

import torch
import torch.nn.functional as F

from .. import patterns as P
from ..attention import sparse_attention
from ..layout import flops
from .measure import peak_memory, time_calls

METHODS = ("sdpa", "flex", "gather", "cpu")


def patterns(block_size: int) -> dict[str, P.Pattern]:
    """The layouts compared: sliding blocks, BigBird with per-head random blocks, truncated decay
    (its band is two blocks wide on each side)."""
    rate = math.log(1e3) / (2 * block_size)
    return {
        "sliding ±1 block": P.SlidingWindow(1, unit="block"),
        "BigBird, 2 random blocks per head": P.BigBird(num_random_blocks=2),
        "decay, eps 1e-3": P.DistanceDecay(round(rate, 6), eps=1e-3),
    }


def _flex(layout, q, k, v):
    """``(call, compile seconds)`` for compiled FlexAttention on ``layout``, or None without it."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    fn = torch.compile(flex_attention, dynamic=False)
    block_mask, score_mod = layout.to_block_mask(), layout.flex_score_mod()
    call = lambda: fn(q, k, v, block_mask=block_mask, score_mod=score_mod)  # noqa: E731
    t0 = time.perf_counter()
    call()
    return call, time.perf_counter() - t0


def _row(name, length, method, ms, spread, mib, gflop, dense_ms, extra=""):
    return (
        f"| {name} | {length} | {method} | {ms:.1f} | {spread:.1f} | {gflop / ms * 1e-6:.0f} "
        f"| {dense_ms / ms:.1f}x | {mib if mib is None else round(mib)} | {extra} |"
    )


def kernels_table(args: argparse.Namespace) -> None:
    cpu_dev = torch.device("cpu")
    h, d, bs = args.heads, args.head_dim, args.block_size
    methods = args.methods.split(",")
    print(f"\nB=1 H={h} D={d} fp32, block {bs}, threads {torch.get_num_threads()}, median of {args.repeats}\n")
    print("| pattern | L | method | median ms | spread ms | GFLOP/s | speedup vs SDPA | peak extra MiB | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, h, length, d) for _ in range(3))
        with torch.inference_mode():
            sdpa = partial(F.scaled_dot_product_attention, q, k, v)
            sdpa()
            dense_mib = peak_memory(sdpa, cpu_dev)[1]
            dense = time_calls(sdpa, args.repeats, 0, cpu_dev)
        dense_flops = 4.0 * h * length * length * d
        print(_row("dense", length, "sdpa", dense.median_ms, dense.spread_ms, dense_mib, dense_flops, dense.median_ms))
        for name, pattern in patterns(bs).items():
            t0 = time.perf_counter()
            layout = pattern.compile(q_len=length, num_heads=h, block_size=bs)
            compile_ms = (time.perf_counter() - t0) * 1e3
            work = flops(layout, d)
            for method in methods:
                note = ""
                with torch.inference_mode():
                    if method == "flex":
                        made = _flex(layout, q, k, v)
                        if made is None:
                            continue
                        call, secs = made
                        note = f"compile {secs:.1f} s"
                    elif method in ("gather", "cpu"):
                        call = partial(sparse_attention, q, k, v, layout, backend=method)
                        t0 = time.perf_counter()
                        call()
                        first = (time.perf_counter() - t0) * 1e3
                        note = f"first call {first:.0f} ms + layout {compile_ms:.0f} ms"
                    else:
                        continue
                    mib = peak_memory(call, cpu_dev)[1]
                    t = time_calls(call, args.repeats, 0, cpu_dev)
                print(_row(name, length, method, t.median_ms, t.spread_ms, mib, work, dense.median_ms, note))
                if method == "cpu":
                    print(
                        f"|  |  | (block density {layout.block_density:.4f}, 0.8 / density = {0.8 / layout.block_density:.1f}x) |||||||"
                    )


def decode_table(args: argparse.Namespace) -> None:
    """One query token against a cache of ``kv_len`` keys, sink + window causal layout."""
    cpu_dev = torch.device("cpu")
    h, d = args.heads, args.head_dim
    pattern = P.SlidingWindow(args.window, right=0) | P.Global(tokens=4)
    print(f"\nDecode: 1 query, {pattern!r}, causal, block 64, median of {args.decode_repeats} calls\n")
    print("| cache length | method | median µs | spread µs | visited tiles per head |")
    print("|---|---|---|---|---|")
    for kv_len in args.decode_lengths:
        torch.manual_seed(0)
        q = torch.randn(1, h, 1, d)
        k, v = torch.randn(1, h, kv_len, d), torch.randn(1, h, kv_len, d)
        layout = pattern.compile(q_len=1, num_heads=h, block_size=64, kv_len=kv_len, causal=True)
        calls = {
            "cpu": (partial(sparse_attention, q, k, v, layout, backend="cpu"), layout.nnz),
            "gather": (partial(sparse_attention, q, k, v, layout, backend="gather"), layout.nnz),
            "dense sdpa": (partial(F.scaled_dot_product_attention, q, k, v), layout.nk),
        }
        with torch.inference_mode():
            for method, (call, tiles) in calls.items():
                t = time_calls(call, args.decode_repeats, 3, cpu_dev)
                print(f"| {kv_len} | {method} | {t.median_ms * 1e3:.0f} | {t.spread_ms * 1e3:.0f} | {tiles} |")


def long_run(args: argparse.Namespace) -> None:
    h, d, length = args.heads, args.head_dim, args.long
    layout = P.SlidingWindow(1, unit="block").compile(q_len=length, num_heads=h, block_size=args.block_size)
    q, k, v = (torch.randn(1, h, length, d) for _ in range(3))
    inputs_mib = 4 * q.numel() * 4 / 2**20  # q, k, v and the output
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = sparse_attention(q, k, v, layout, backend="cpu")
        secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"\nLong: L={length}, sliding ±1 block, cpu kernel: {secs:.2f} s, output {tuple(out.shape)}, ")
    print(f"q + k + v + out = {inputs_mib:.0f} MiB, whole-process peak RSS {peak:.2f} GiB")
