"""Training throughput of the sparse strategies against dense SDPA on the same model (docs/training.md).

    .venv/bin/python benchmarks/train_throughput.py [--context 4096] [--widths 64:1 128:2 256:4] [--rounds 6]

Per model width (d_model:heads, 2 layers, block 64, window 3 blocks, batch 1): tokens/s of the
whole training step (forward, backward, clipping, AdamW), the strategies taking turns on the same
batches (``sparseformer.train.throughput``), each one's speed-up over dense, and the FLOP bound
of that speed-up: dense's matrix-multiply FLOPs over the strategy's
(``sparseformer.train.throughput.forward_flops``; the backward scales both alike), the speed-up
if time followed those FLOPs.
"""

from __future__ import annotations

import argparse
import dataclasses

from sparseformer.bench.info import machine_line
from sparseformer.train import NAMES, Geometry, TrainConfig
from sparseformer.train.strategies import build
from sparseformer.train.throughput import forward_flops, measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--widths", nargs="+", default=["64:1", "128:2", "256:4"], help="d_model:heads")
    ap.add_argument("--strategies", nargs="+", default=[n for n in NAMES if n != "bigbird-noreweight"])
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per strategy, plus one warm-up")
    args = ap.parse_args()
    g = Geometry(block_size=64)
    print(machine_line())
    print(
        f"context {args.context}, batch 1, 2 layers, block 64; median (best) over {args.rounds} steps after 1 warm-up\n"
    )
    print("| d_model, heads | strategy | tokens/s median (best) | speed-up vs dense (median) | FLOP bound |")
    print("|---|---|---|---|---|")
    for width in args.widths:
        d, h = (int(x) for x in width.split(":"))
        base = TrainConfig(pattern=None, context=args.context, d_model=d, n_heads=h, n_layers=2, batch_size=1)
        cfgs = {n: dataclasses.replace(base, pattern=build(n, g)) for n in args.strategies}
        res = measure(cfgs, rounds=args.rounds + 1, warmup=1)
        dense = res.get("dense", {}).get("median_tokens_per_s")
        dense_flops = forward_flops(base)
        for n, r in res.items():
            up = f"{r['median_tokens_per_s'] / dense:.2f}x" if dense else "n/a"
            bound = dense_flops / forward_flops(cfgs[n])
            print(
                f"| {d}, {h} | {n} | {r['median_tokens_per_s']:.0f} ({r['best_tokens_per_s']:.0f}) | {up} | {bound:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
