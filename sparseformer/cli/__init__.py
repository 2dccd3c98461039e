"""The ``sparseformer`` command: every subcommand lives in this folder, one file per group.

* ``patterns``: a pattern's density and picture (:mod:`.patterns`);
* ``bench`` and ``bench kernels``: measure the strategies here and recommend one (:mod:`.bench`,
  :mod:`.bench_kernels`);
* ``quality`` and ``distill``: a pretrained Hugging Face model made sparse (:mod:`.hf`);
* ``bench models``: models pretrained with local attention, stock vs native sparse (:mod:`.bench_models`);
* ``export`` and ``generate``: edge runtimes and streaming generation (:mod:`.edge`);
* ``train`` and ``study``: sparse models trained from scratch, alone or under torchrun (:mod:`.train`).

The library below parses no arguments: these files turn the command line into its calls.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from . import bench, bench_kernels, bench_models, edge, hf, patterns, train

    for add in (
        patterns.add_parser,
        bench.add_parser,
        bench_kernels.add_parser,
        bench_models.add_parser,
        hf.add_parser_quality,
        hf.add_parser_distill,
        edge.add_parser_export,
        edge.add_parser_generate,
        train.add_parser_train,
        train.add_parser_study,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] in (["bench", "kernels"], ["bench", "models"]):  # `bench kernels` is `bench-kernels`, ...
        argv = [f"bench-{argv[1]}", *argv[2:]]
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, recorded by `bench` in its results
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"sparseformer: error: {e}", file=sys.stderr)
        return 2
