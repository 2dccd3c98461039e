"""``sparseformer bench kernels`` (also ``bench-kernels``): dense SDPA, FlexAttention, ``gather`` and
the native kernel side by side; the tables are :mod:`sparseformer.bench.kernels`'."""

from __future__ import annotations

import argparse

import torch

from ..bench.info import machine_line
from ..bench.kernels import METHODS, decode_table, kernels_table, long_run


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    if args.lengths:
        kernels_table(args)
    if args.decode_lengths:
        decode_table(args)
    if args.long:
        long_run(args)
    return 0


def add_parser(subparsers) -> None:
    """Register ``bench-kernels`` (the CLI also accepts ``bench kernels``)."""
    p = subparsers.add_parser("bench-kernels", help="dense SDPA, FlexAttention, gather and cpu side by side")
    p.add_argument("--lengths", type=int, nargs="*", default=[2048, 8192, 32768])
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--decode-lengths", type=int, nargs="*", default=[4096, 32768])
    p.add_argument("--window", type=int, default=1024, help="decode window in tokens")
    p.add_argument("--decode-repeats", type=int, default=50)
    p.add_argument("--long", type=int, default=0, help="also run the cpu kernel once at this length")
    p.set_defaults(func=run)
