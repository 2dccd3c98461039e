"""``sparseformer patterns NAME``: a named pattern's density and picture."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import patterns as P
from ..draw import ascii_picture, save_png

# name -> (builder of the pattern, the Python line that builds it)
NAMED: dict[str, tuple[Callable[[], P.Pattern], str]] = {
    "dense": (lambda: P.Dense(), "P.Dense()"),
    "block-local": (lambda: P.BlockLocal(), "P.BlockLocal()"),
    "sliding": (lambda: P.SlidingWindow(1, unit="block"), 'P.SlidingWindow(1, unit="block")'),
    "sliding-global": (
        lambda: P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
        'P.SlidingWindow(1, unit="block") | P.Global(blocks=1)',
    ),
    "bigbird": (lambda: P.BigBird(num_random_blocks=2), "P.BigBird(num_random_blocks=2)"),
    "longformer": (lambda: P.Longformer(), "P.Longformer()"),
    "random": (lambda: P.BlockLocal() | P.RandomBlocks(2), "P.BlockLocal() | P.RandomBlocks(2)"),
    "decay": (lambda: P.DistanceDecay(0.05, eps=1e-3), "P.DistanceDecay(0.05, eps=1e-3)"),
    "strided": (lambda: P.Strided(128), "P.Strided(128)"),
    "fixed": (lambda: P.Fixed(), "P.Fixed()"),
    "dilated": (lambda: P.Dilated(64, dilation=2), "P.Dilated(64, dilation=2)"),
}


def run(args: argparse.Namespace) -> int:
    build, code = NAMED[args.name]
    layout = build().compile(q_len=args.seq_len, num_heads=args.heads, block_size=args.block_size, causal=args.causal)
    print(f"{args.name}: {code}")
    print(f"seq_len={args.seq_len} block_size={args.block_size} heads={args.heads} causal={args.causal}")
    print(f"density {layout.density:.4f} (pairs), block density {layout.block_density:.4f} (tiles computed)")
    print(ascii_picture(layout, head=args.head))
    print("█ full tile  ▒ partial tile  · skipped")
    if args.png:
        save_png(layout, args.png, head=args.head, title=f"{args.name}, L={args.seq_len}, density {layout.density:.3f}")
        print(f"wrote {args.png}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("patterns", help="print a pattern's density and draw its layout")
    p.add_argument("name", choices=sorted(NAMED))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--head", type=int, default=0, help="which head to draw")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--png", help="also draw it into this PNG file")
    p.set_defaults(func=run)
