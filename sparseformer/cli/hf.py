"""The ``quality`` and ``distill`` subcommands of the ``sparseformer`` command."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from ..hf import data
from ..hf.data import default_model
from ..hf.quality import PRESETS, parse_preset


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="dense model directory (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", nargs="+", default=list(data.SOURCES), choices=data.SOURCES, help="text sources")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _preset_arg(text: str) -> str:
    try:
        parse_preset(text, 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_parser_quality(subparsers) -> None:
    p = subparsers.add_parser(
        "quality",
        help="cosine and nearest-neighbour agreement of sparse vs dense embeddings on held-out real text",
        description="Writes a markdown table: per pattern and length, the held-out mean and 5th-percentile cosine "
        "between sparse and dense mean-pooled embeddings and the nearest-neighbour agreement, with truncation beside it.",
    )
    _common(p)
    p.add_argument("--lengths", type=int, nargs="+", default=[512])
    p.add_argument(
        "--patterns",
        nargs="*",
        default=["sliding-global@32", "sliding-cls-random@16", "sliding-cls-strided@16"],
        type=_preset_arg,
        metavar="NAME[@BS]",
        help=f"presets, each with an optional block size (default: --block-size); NAME one of {', '.join(sorted(PRESETS))}",
    )
    p.add_argument("--passages", type=int, default=100, help="held-out passages per length")
    p.add_argument("--truncate", type=int, default=None, help="truncation baseline length (default: half the length)")
    p.add_argument("--student", nargs="*", default=[], help="directories written by `sparseformer distill`")
    p.add_argument("--long", type=int, default=None, help="also compare at this length against dense 512-token chunks")
    p.add_argument("--long-passages", type=int, default=12)
    p.add_argument("--out", default=None, help="markdown file to write (atomically)")
    p.set_defaults(func=run_quality)


def add_parser_distill(subparsers) -> None:
    from ..hf.distill import HIDDEN_LAYERS, TRAINABLE
    from ..hf.distill import DistillConfig as D

    p = subparsers.add_parser(
        "distill",
        help="fine-tune a sparse model to reproduce the dense model's embeddings (resumable)",
        description="Distil the dense model into its sparse version on CPython prose and docstrings (train topics); "
        "report held-out agreement. The output loads with sparseformer.hf.load_distilled(OUT).",
    )
    _common(p)
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--pattern", default=D.pattern, choices=sorted(PRESETS))
    p.add_argument("--length", type=int, default=D.length)
    p.add_argument("--steps", type=int, default=D.steps)
    p.add_argument("--batch-size", type=int, default=D.batch_size)
    p.add_argument("--lr", type=float, default=D.lr)
    p.add_argument("--warmup", type=int, default=D.warmup)
    p.add_argument("--loss", choices=("cos", "mse"), default=D.loss)
    p.add_argument(
        "--hidden-weight", type=float, default=D.hidden_weight, help="weight of the per-token hidden-state loss"
    )
    p.add_argument(
        "--hidden-layers",
        choices=HIDDEN_LAYERS,
        default=D.hidden_layers,
        help="hidden-state loss on the last layer or every layer",
    )
    p.add_argument("--trainable", choices=TRAINABLE, default=D.trainable, help="which parameters train")
    p.add_argument(
        "--sparse-layers", type=int, nargs="+", default=None, help="only these layers sparse (default: every layer)"
    )
    p.add_argument("--max-minutes", type=float, default=10.0, help="stop training after this many minutes")
    p.add_argument("--eval-passages", type=int, default=100, help="held-out passages for the final figures (0: skip)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.set_defaults(func=run_distill)


def _setup(args) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.model or default_model()


def run_distill(args) -> int:
    from ..hf.distill import DistillConfig, distill

    cfg = DistillConfig(
        base=_setup(args),
        pattern=args.pattern,
        block_size=args.block_size,
        length=args.length,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        loss=args.loss,
        hidden_weight=args.hidden_weight,
        hidden_layers=args.hidden_layers,
        trainable=args.trainable,
        max_minutes=args.max_minutes,
        seed=args.seed,
        sources=tuple(args.sources),
        sparse_layers=args.sparse_layers,
    )
    state = distill(cfg, args.out, resume=args.resume, eval_passages=args.eval_passages)
    print(f"trained {state['step']} steps in {state['seconds'] / 60:.1f} min on {torch.get_num_threads()} threads")
    if "heldout" in state:
        h = state["heldout"]
        print(
            f"held-out ({h['passages']} passages of {cfg.length} tokens): mean cos {h['mean_cos']:.4f}, "
            f"p5 cos {h['p5_cos']:.4f}, NN agree {h['nn_agree']:.3f}"
        )
    print(f"checkpoint: {args.out}  (load with sparseformer.hf.load_distilled({args.out!r}))")
    return 0


def run_quality(args) -> int:
    from ..hf.report import quality_report

    started = time.monotonic()
    text = quality_report(_setup(args), args)
    text += f"\n_{torch.get_num_threads()} torch threads, {time.monotonic() - started:.0f} s._\n"
    print(text)
    if args.out:
        from ..files import write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, text)
    return 0
