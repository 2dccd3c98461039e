"""The ``sparseformer`` command."""

from __future__ import annotations

import argparse
import sys

from .draw import ascii_picture, save_png
from .presets_cli import NAMED


def _patterns(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("patterns", help="print a pattern's density and draw its layout")
    p.add_argument("name", choices=sorted(NAMED))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--head", type=int, default=0, help="which head to draw")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--png", help="also draw it into this PNG file")
    p.set_defaults(func=_patterns)

    from .bench.command import add_parser as add_bench
    from .bench.kernels import add_parser as add_bench_kernels
    from .edge_commands import add_parser_export, add_parser_generate
    from .hf.commands import add_parser_distill, add_parser_quality

    for add in (
        add_bench,
        add_bench_kernels,
        add_parser_quality,
        add_parser_distill,
        add_parser_export,
        add_parser_generate,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "kernels"]:  # `sparseformer bench kernels` is `bench-kernels`
        argv = ["bench-kernels", *argv[2:]]
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, recorded by `bench` in its results
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"sparseformer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
