"""Native CPU kernel vs dense SDPA on a sliding-window layout.

    python benchmarks/bench_cpu_kernel.py                      # L = 2048, 4096, 8192; threads 2, 1
    python benchmarks/bench_cpu_kernel.py --lengths 4096 --threads 2 --backward

Setup: B=1, H=8, D=64, float32, block 128, ``SlidingWindow(1, unit="block")`` (each query block
sees its own and the neighbouring key blocks: block density about 3/nb). Each time is the median
of ``--repeats`` runs after ``--warmup`` runs, dense and sparse runs alternating (the kernel's best
run is shown too: on a shared machine it is the least disturbed). "speedup" is dense
``scaled_dot_product_attention`` time over kernel time (medians); "target" is 0.8 / block density. GFLOP/s counts 4 * bs * bs * D per visited tile
per head (the two products of the tiles actually computed), so it measures the kernel's efficiency,
not the work it saved. With ``--backward`` also times forward + backward of both (the dense side
runs SDPA's own backward).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import torch
import torch.nn.functional as F

from sparseformer import patterns as P
from sparseformer.bench.info import machine_line
from sparseformer.kernels import cpu


def interleaved_times(fns, warmup: int, repeats: int) -> list[list[float]]:
    """Times of each fn over ``repeats`` rounds, the fns alternating within a round (so that a
    busy moment of the machine hits all of them alike), after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def fwd_bwd(fn, inputs, grad_out) -> None:
    fn(*inputs).backward(grad_out)


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--window", type=int, default=1, help="sliding window, in blocks each side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backward", action="store_true", help="also time forward + backward")
    args = ap.parse_args()

    if not cpu.is_available():
        raise SystemExit(f"native cpu kernel unavailable: {cpu.unavailable_reason()}")
    ext = cpu.load_extension()
    print(f"torch {torch.__version__}, kernel: {ext.build_info()}, {os.cpu_count()} CPUs")
    print(
        f"B=1, H={args.heads}, D={args.head_dim}, float32, block {args.block}, "
        f"SlidingWindow({args.window}, unit='block'); median of {args.repeats} after {args.warmup} warm-up\n"
    )

    H, D, bs = args.heads, args.head_dim, args.block
    cols = [
        "threads",
        "L",
        "block density",
        "dense SDPA ms",
        "cpu kernel ms",
        "kernel min ms",
        "speedup",
        "target",
        "GFLOP/s",
    ]
    if args.backward:
        cols += ["dense fwd+bwd ms", "cpu fwd+bwd ms", "fwd+bwd speedup"]
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes distort timings)")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for L in args.lengths:
            layout = P.SlidingWindow(args.window, unit="block").compile(q_len=L, num_heads=H, block_size=bs)
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, H, L, D, generator=g) for _ in range(3))
            scale = D**-0.5
            dense = functools.partial(F.scaled_dot_product_attention, q, k, v)
            sparse = functools.partial(cpu.attention, q, k, v, layout, scale=scale)
            td, tc = interleaved_times([dense, sparse], args.warmup, args.repeats)
            t_dense, t_cpu = statistics.median(td), statistics.median(tc)
            density = layout.block_density
            flops = 4.0 * layout.visited_tiles * bs * bs * D
            row = [
                threads,
                L,
                f"{density:.4f}",
                f"{t_dense * 1e3:.1f}",
                f"{t_cpu * 1e3:.2f}",
                f"{min(tc) * 1e3:.2f}",
                f"{t_dense / t_cpu:.1f}x",
                f"{0.8 / density:.1f}x",
                f"{flops / t_cpu / 1e9:.0f}",
            ]
            if args.backward:
                qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
                go = torch.randn(1, H, L, D, generator=g)

                dense_fb = functools.partial(fwd_bwd, F.scaled_dot_product_attention, (qg, kg, vg), go)
                cpu_fb = functools.partial(
                    fwd_bwd, functools.partial(cpu.attention, layout=layout, scale=scale), (qg, kg, vg), go
                )
                tdb, tcb = (statistics.median(t) for t in interleaved_times([dense_fb, cpu_fb], 1, args.repeats))
                row += [f"{tdb * 1e3:.1f}", f"{tcb * 1e3:.2f}", f"{tdb / tcb:.1f}x"]
            print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
