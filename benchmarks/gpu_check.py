"""The GPU check of the ``flex`` backend (issue #14): one prepared script, under 5 minutes.

.venv/bin/python benchmarks/gpu_check.py [--lengths 4096 16384] [--windows 256 1024]
                                         [--head-dims 64 128] [--heads 16] [--budget-s 200]
                                         [--device cuda|cpu]

1. Correctness (float32, CUDA): our ``flex`` backend against the float64 reference on one
   problem with everything on (GQA, causal, key padding, odd length, decay slopes, random blocks,
   soft-capping, sinks, block size 64 so that FlexAttention's 128-token tiles group the layout's);
   values and the gradients of q, k, v and sinks. Prints the largest errors and PASS/FAIL.
2. Timings, bf16, batch 1, causal sliding window (query ``i`` attends keys ``i - W .. i``): dense
   flash SDPA (``is_causal``), compiled FlexAttention with its own sliding-window ``mask_mod``
   (``create_block_mask``, 128-token tiles), our ``flex`` backend and our ``gather`` backend on
   ``SlidingWindow(W, right=0)`` compiled causal with block size 128; forward (inputs that
   require grad, as in training), then forward + backward. CUDA events, median of ``--repeats`` calls after one untimed call (which compiles;
   its time is printed apart). Configurations that would start after ``--budget-s`` seconds are
   listed as skipped.

Effective TFLOP/s counts only attending (query, key) pairs: ``4·D`` FLOPs per pair and head in
the forward, ``2.5x`` that in the backward (FlashAttention's convention); dense causal SDPA counts
``L(L+1)/2`` pairs per head, the sparse methods the window's pairs (``sum_i min(i, W) + 1``), not
the tiles they really compute. Exits with status 2 and a message where no CUDA device is present.

``--device cpu`` is the script's smoke run (``tests/kernels/test_gpu_check.py``, tiny sizes): the
same code on the CPU in float32, where FlexAttention compiles the forward only, so the check
compares values without sinks and times the forward; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from functools import partial
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

import sparseformer as sf
from sparseformer import patterns as P

DTYPES = {"cuda": torch.bfloat16, "cpu": torch.float32}  # the timings' dtype per device


def versions(device: str) -> str:
    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = "?"
    if device == "cuda":
        dev = torch.cuda.get_device_properties(0)
        where = f"GPU: {dev.name} (sm_{dev.major}{dev.minor}, {dev.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        where = f"CPU (smoke run): {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return (
        f"{where}, torch {torch.__version__}, triton {triton}, python {platform.python_version()}, "
        f"sparseformer {sf.__version__} at {commit or '?'}"
    )


def correctness(device: str) -> bool:
    """``flex`` (float32) against the float64 reference: values and gradients on CUDA; values
    without sinks on the CPU (FlexAttention compiles no backward and no logsumexp there)."""
    g = torch.Generator().manual_seed(0)
    b, h, hk, length, d = 2, 8, 2, 333, 64
    pattern = (
        P.SlidingWindow(100)
        | P.Global(tokens=1)
        | P.RandomBlocks(1, seed=1)
        | P.DistanceDecay(tuple(0.01 * (i + 1) for i in range(h)), eps=1e-3)
    )
    layout = pattern.compile(q_len=length, num_heads=h, block_size=64, causal=True)
    q = torch.randn(b, h, length, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, hk, length, d, generator=g, dtype=torch.float64) for _ in range(2))
    sinks = torch.randn(h, generator=g, dtype=torch.float64)
    kpm = torch.rand(b, length, generator=g) > 0.2
    w = torch.randn(b, h, length, d, generator=g, dtype=torch.float64)

    cuda = device == "cuda"

    def run(dtype, backend):
        leaves = [t.to(device, dtype).requires_grad_(cuda) for t in (q, k, v, sinks)]
        out = sf.sparse_attention(
            *leaves[:3],
            layout,
            key_padding_mask=kpm.to(device),
            softcap=20.0,
            sinks=leaves[3] if cuda else None,
            backend=backend,
        )
        if not cuda:
            return [out]
        return [out, *torch.autograd.grad((out * w.to(device, dtype)).sum(), leaves)]

    t0 = time.perf_counter()
    got = run(torch.float32, "flex")
    secs = time.perf_counter() - t0
    want = run(torch.float64, "reference")
    ok = True
    for name, a, ref in zip(("out", "dq", "dk", "dv", "dsinks"), got, want):
        err = (a.double() - ref).abs().max().item()
        tol = 1e-4 * max(1.0, ref.abs().max().item())
        ok &= err <= tol
        print(f"  {name:7s} max |flex fp32 - reference fp64| = {err:.2e} (tolerance {tol:.1e})")
    print(f"  correctness {'PASS' if ok else 'FAIL'} (first call with compilation: {secs:.1f} s)\n")
    return ok


def timed(fn, repeats: int, device: str) -> tuple[float, float]:
    """(seconds of the first call, median ms of ``repeats`` calls after it): CUDA events, or the
    wall clock on the CPU."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            sync()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return first, sorted(times)[len(times) // 2]


def methods(length: int, window: int, heads: int, device: str):
    """name -> attention function ``(q, k, v) -> out`` for one length and window."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    w = torch.tensor(window, device=device)  # a tensor: one compiled graph for every window

    def sliding(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= w)

    own_mask = create_block_mask(sliding, None, None, length, length, device=device, BLOCK_SIZE=128)
    own = torch.compile(flex_attention, fullgraph=True, dynamic=False)
    layout = P.SlidingWindow(window, right=0).compile(q_len=length, num_heads=heads, block_size=128, causal=True)
    return layout, {
        "sdpa flash (dense)": sdpa,
        "FlexAttention, own mask": lambda q, k, v: own(q, k, v, block_mask=own_mask),
        "sparseformer flex": lambda q, k, v: sf.sparse_attention(q, k, v, layout, backend="flex"),
        "sparseformer gather": lambda q, k, v: sf.sparse_attention(q, k, v, layout, backend="gather"),
    }


def forward(fn, q, k, v):
    return fn(q, k, v)


def forward_backward(fn, q, k, v, grad):
    return torch.autograd.grad(fn(q, k, v), (q, k, v), grad)


def measure(args: argparse.Namespace, length: int, d: int, window: int, dense_ms: dict[str, float]) -> None:
    """Print the rows of one (length, head dim, window); the dense rows only once per (length, head dim)."""
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    q, k, v = (
        torch.randn(1, args.heads, length, d, device=args.device, dtype=DTYPES[args.device], requires_grad=cuda)
        for _ in range(3)
    )
    grad = torch.randn_like(q)
    layout, fns = methods(length, window, args.heads, args.device)
    for name, fn in fns.items():
        dense = name.startswith("sdpa")
        pairs = length * (length + 1) / 2 if dense else layout.pair_count / args.heads
        for mode, flops_per_pair in (("fwd", 4.0 * d), ("fwd+bwd", 4.0 * d * 3.5))[: 2 if cuda else 1]:
            if dense and mode in dense_ms:  # the dense rows do not depend on the window
                continue
            call = partial(forward, fn, q, k, v) if mode == "fwd" else partial(forward_backward, fn, q, k, v, grad)
            first, ms = timed(call, args.repeats, args.device)
            if dense:
                dense_ms[mode] = ms
            tflops = flops_per_pair * pairs * args.heads / (ms * 1e-3) / 1e12
            print(
                f"| {length} | {'-' if dense else window} | {d} | {name} | {mode} | {first:.1f} "
                f"| {ms:.2f} | {tflops:.1f} | {dense_ms[mode] / ms:.1f}x |",
                flush=True,
            )


def timings(args: argparse.Namespace) -> None:
    print("| L | W | D | method | pass | first call s | median ms | TFLOP/s | vs SDPA |")
    print("|---|---|---|---|---|---|---|---|---|")
    start, skipped = time.perf_counter(), []
    for length in args.lengths:
        for d in args.head_dims:
            dense_ms: dict[str, float] = {}
            for window in args.windows:
                if time.perf_counter() - start > args.budget_s:
                    skipped.append(f"L={length} D={d} W={window}")
                    continue
                measure(args, length, d, window, dense_ms)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    if skipped:
        print(f"\nskipped (past --budget-s {args.budget_s:.0f} s): {', '.join(skipped)}")
    print(f"\ntimings took {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--windows", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=200.0, help="start no configuration after this")
    parser.add_argument("--device", choices=DTYPES, default="cuda", help="cpu: the smoke run (module doc)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "nothing was measured. Run it on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        return 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    print(versions(args.device))
    print(f"B=1, H={args.heads}, {DTYPES[args.device]}, causal sliding window, block 128, median of {args.repeats}\n")
    ok = correctness(args.device)
    timings(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
