"""The ``train`` and ``study`` subcommands of the ``sparseformer`` command.

Both run unchanged under ``torchrun --nproc-per-node N`` (``train`` with DDP; ``study`` trains its
runs one after another, each with DDP): ``torchrun --nproc-per-node 2 -m sparseformer.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..train.config import TrainConfig
from ..train.distributed import DEVICES
from ..train.strategies import NAMES, Geometry, build

T = TrainConfig  # the defaults


def _geometry_args(p: argparse.ArgumentParser) -> None:
    g = Geometry()
    p.add_argument("--block-size", type=int, default=g.block_size, help="attention block size (tokens)")
    p.add_argument(
        "--window-blocks", type=int, default=g.window_blocks, help="sliding window: key blocks before the own block"
    )
    p.add_argument(
        "--random-blocks", type=int, default=g.random_blocks, help="bigbird: random key blocks per query block"
    )
    p.add_argument("--stride", type=int, default=g.stride, help="strided-sample: keep every s-th remaining key")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context", type=int, default=T.context, help="bytes per training context (1024-4096 intended)")
    p.add_argument("--d-model", type=int, default=T.d_model)
    p.add_argument("--layers", type=int, default=T.n_layers)
    p.add_argument("--heads", type=int, default=T.n_heads)
    p.add_argument("--dropout", type=float, default=T.dropout)
    p.add_argument("--backend", default=T.backend, help="sparse attention backend (auto, cpu, gather, reference)")
    p.add_argument("--batch-size", type=int, default=T.batch_size, help="global batch (split over torchrun processes)")
    p.add_argument("--steps", type=int, default=T.steps)
    p.add_argument("--lr", type=float, default=T.lr)
    p.add_argument("--min-lr-ratio", type=float, default=T.min_lr_ratio)
    p.add_argument("--warmup", type=int, default=T.warmup)
    p.add_argument("--weight-decay", type=float, default=T.weight_decay)
    p.add_argument("--grad-clip", type=float, default=T.grad_clip)
    p.add_argument("--eval-every", type=int, default=T.eval_every)
    p.add_argument("--eval-contexts", type=int, default=T.eval_contexts, help="fixed contexts per evaluation split")
    p.add_argument("--checkpoint-every", type=int, default=T.checkpoint_every)
    p.add_argument("--seed", type=int, default=T.seed)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: CUDA when available; cpu: also for several torchrun processes on fewer GPUs (gloo)",
    )


def _geometry(args) -> Geometry:
    return Geometry(args.block_size, args.window_blocks, args.random_blocks, args.stride)


def config(args, pattern) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments, with ``pattern`` (a Pattern or None)."""
    return TrainConfig(
        pattern=pattern,
        context=args.context,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        block_size=args.block_size,
        dropout=args.dropout,
        backend=args.backend,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        min_lr_ratio=args.min_lr_ratio,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        eval_contexts=args.eval_contexts,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )


def parse_pattern(text: str, geometry: Geometry):
    """A strategy name (:mod:`sparseformer.train.strategies`) or a pattern's JSON spec
    (:func:`sparseformer.hf.to_spec`, e.g. ``{"type": "SlidingWindow", "left": 256, "right": 0}``)."""
    if text.lstrip().startswith("{"):
        from ..hf.spec import from_spec

        try:
            return from_spec(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"--pattern is not valid JSON ({e}): {text!r}") from None
    if text not in NAMES:
        raise ValueError(f"--pattern must be one of {list(NAMES)} or a pattern's JSON spec, got {text!r}")
    return build(text, geometry)


def add_parser_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a byte-level SparseCausalLM from scratch on the standard library's .py files (resumable; torchrun)",
        description="Trains sf.nn.SparseCausalLM on CPython's standard-library sources (held-out split by file), "
        "writes OUT/metrics.jsonl, OUT/config.json and OUT/checkpoint.safetensors. Runs unchanged under "
        "torchrun --nproc-per-node N (DDP: gloo on CPU, nccl on CUDA).",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--pattern",
        default="sliding+global",
        help=f"one of {', '.join(NAMES)} (built from the sizes below), or a pattern's JSON spec",
    )
    _geometry_args(p)
    _run_args(p)
    p.add_argument(
        "--resume", action="store_true", help="continue the checkpoint in --out (a fresh run if there is none)"
    )
    p.add_argument("--crash-after-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: SIGKILL after it
    p.set_defaults(func=run_train)


def add_parser_study(subparsers) -> None:
    p = subparsers.add_parser(
        "study",
        help="train dense and every sparse strategy at equal steps and equal wall-clock; write a report with plots",
        description="Trains dense attention and each strategy of sparseformer.train.strategies with the same seeds, "
        "first for --steps steps each, then each for the wall-clock the dense run took (its step count from its "
        "measured time per step), and writes OUT/report.md, OUT/study.json and PNG plots.",
    )
    p.add_argument("--out", required=True, help="study directory (runs already finished there are reused)")
    p.add_argument("--strategies", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--budget-seconds", type=float, default=None, help="equal wall-clock budget (default: dense's)")
    p.add_argument("--no-equal-time", action="store_true", help="only the equal-steps arm")
    _geometry_args(p)
    _run_args(p)
    p.set_defaults(func=run_study)


def _setup(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def run_train(args) -> int:
    from ..train import distributed
    from ..train.loop import train

    _setup(args)
    cfg = config(args, parse_pattern(args.pattern, _geometry(args)))
    last = train(
        cfg,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        crash_after=args.crash_after_step,
        device=args.device,
    )
    world = distributed.init(args.device)
    if world.is_main:
        print(
            f"step {last['step']}: held-out loss {last['heldout_loss']:.4f} nats/byte "
            f"({last['heldout_bpb']:.4f} bits/byte), {last['seconds']:.1f} s training, {world.world_size} process(es)"
        )
        print(f"run: {args.out}")
    distributed.close(world)
    return 0


def run_study(args) -> int:
    from ..train import distributed
    from ..train.study import StudyConfig, run

    _setup(args)
    names = [x.strip() for x in args.strategies.split(",") if x.strip()]
    base = config(args, None)
    study = StudyConfig(
        base=base,
        geometry=_geometry(args),
        strategies=tuple(names),
        equal_time=not args.no_equal_time,
        budget_seconds=args.budget_seconds,
    )
    command = " ".join(["sparseformer", *getattr(args, "argv", sys.argv[1:])])
    report = run(study, args.out, command=command, progress=not args.no_progress, device=args.device)
    world = distributed.init(args.device)
    if world.is_main:
        print(f"report: {report}")
    distributed.close(world)
    return 0
