"""Time of ``sliding ±1 block + global [CLS] + StridedSample`` (the ``sliding-cls-strided``
preset) against dense SDPA and the 6-random-block preset, forward and forward + backward.

    .venv/bin/python benchmarks/bench_strided.py [--lengths 512 2048 4096] [--repeats 7]

B=4, H=12, D=32 (all-MiniLM-L6-v2's attention), fp32, block 16, this machine's threads. Methods:
dense SDPA; the strided preset on ``gather`` (its grouped path) and on the native ``cpu`` kernel
(what ``auto`` runs on CPU: every candidate tile, each partial); the random-block preset on
``auto`` (the native kernel). Per row: median and spread (max - min) of ``--repeats`` timed calls after one
warm-up call. "fwd+bwd" backpropagates the sum of the output times a fixed random tensor.
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

import sparseformer as sf
from sparseformer.bench.info import machine_line
from sparseformer.bench.measure import time_calls
from sparseformer.hf.quality import preset


def timed(fn, q, k, v, weight, mode: str, repeats: int):
    """Median and spread of ``fn(q, k, v)`` (``mode="fwd"``, no autograd) or of its forward and
    backward (``"fwd+bwd"``)."""

    def forward():
        with torch.inference_mode():
            fn(q, k, v)

    def both():
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        (fn(qq, kk, vv) * weight).sum().backward()

    return time_calls(forward if mode == "fwd" else both, repeats, 1, torch.device("cpu"))


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    b, h, d, bs = 4, 12, 32, 16
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, B={b} H={h} D={d} fp32, block {bs}\n")
    print("| L | mode | method | density | block density | median ms | spread ms | speedup vs SDPA |")
    print("|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for length in args.lengths:
        q, k, v, weight = (torch.randn(b, h, length, d) for _ in range(4))
        strided = preset("sliding-cls-strided").compile(q_len=length, num_heads=h, block_size=bs)
        random = preset("sliding-cls-random").compile(q_len=length, num_heads=h, block_size=bs)
        methods = [
            ("dense SDPA", F.scaled_dot_product_attention, None),
            (
                "strided, gather (grouped)",
                functools.partial(sf.sparse_attention, layout=strided, backend="gather"),
                strided,
            ),
            ("strided, cpu (tiles)", functools.partial(sf.sparse_attention, layout=strided, backend="cpu"), strided),
            ("6 random blocks, auto", functools.partial(sf.sparse_attention, layout=random), random),
        ]
        for mode in ("fwd", "fwd+bwd"):
            base = None
            for name, fn, layout in methods:
                t = timed(fn, q, k, v, weight, mode, args.repeats)
                base = base or t.median_ms
                dens = "1" if layout is None else f"{layout.density:.3f}"
                bdens = "1" if layout is None else f"{layout.block_density:.3f}"
                print(
                    f"| {length} | {mode} | {name} | {dens} | {bdens} | {t.median_ms:.1f} | {t.spread_ms:.1f} "
                    f"| {base / t.median_ms:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
