"""``sparseformer bench models`` (also ``bench-models``): models pretrained with local attention
(Gemma 3, ModernBERT, Mistral, GPT-OSS shapes), stock ``sdpa`` / ``eager`` against
``sfh.sparsify(model)``; what is measured is :mod:`sparseformer.bench.models`'."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ..bench import models as M
from ..bench.info import machine_line

# --quick: tiny lengths, one sample each, so the whole command runs in seconds per model
QUICK = {"lengths": (64, 160), "decode_contexts": (48, 96), "repeats": 1, "decode_steps": 2}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def options(args: argparse.Namespace) -> M.Options:
    """The run's options: given flags, else the ``--quick`` values, else the library defaults."""
    quick = QUICK if args.quick else {}

    def pick(name: str):
        given = getattr(args, name)
        return given if given is not None else quick.get(name, getattr(M.Options, name))

    return M.Options(
        models=_csv(args.models) if args.models is not None else tuple(M.model_names(args.configs)),
        impls=_csv(args.impls),
        lengths=tuple(pick("lengths")),
        repeats=pick("repeats"),
        budget_s=args.budget_s,
        decode_models=_csv(args.decode_models) if args.decode_models is not None else M.Options.decode_models,
        decode_contexts=tuple(pick("decode_contexts")),
        decode_steps=pick("decode_steps"),
        threads=args.threads if args.threads is not None else torch.get_num_threads(),
        configs=args.configs,
    )


def run(args: argparse.Namespace) -> int:
    opt = options(args)
    M.check_options(opt)
    print(machine_line(), flush=True)
    os.makedirs(args.out, exist_ok=True)
    json_path, png_path = os.path.join(args.out, "results.json"), os.path.join(args.out, "latency.png")
    results = M.run(opt, show_progress=not args.no_progress, on_row=lambda r: M.write_results(r, json_path))
    M.write_plot(results, png_path)
    print(f"\n{M.load_line(results)}")
    print(f"command: sparseformer {' '.join(args.argv)}\n")
    print("Prefill, batch 1 (median of the timed calls; each row a fresh process):\n")
    print(M.prefill_table(results))
    if results["decode"]:
        print("\nDecode, greedy, the model's own cache (context filled by chunked prefill, same impl):\n")
        print(M.decode_table(results))
    print(f"\nwrote {json_path} and {png_path}", file=sys.stderr)
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(subparsers) -> None:
    """Register ``bench-models`` (the CLI also accepts ``bench models``)."""
    p = subparsers.add_parser(
        "bench-models", help="pretrained local-attention model shapes: stock sdpa/eager vs sparseformer"
    )
    p.add_argument("--models", help="comma-separated model names (default: every file in --configs)")
    p.add_argument("--impls", default=",".join(M.IMPLS), help=f"comma-separated subset of {','.join(M.IMPLS)}")
    p.add_argument("--lengths", type=int, nargs="+", help="prefill lengths in tokens (default 2048 8192 32768)")
    p.add_argument("--repeats", type=int, help="timed prefill calls per measurement, at most (default 3)")
    p.add_argument(
        "--budget-s",
        type=_positive,
        default=M.Options.budget_s,
        help="seconds of timed calls per measurement (default 120)",
    )
    p.add_argument(
        "--decode-models", help="comma-separated causal models to time decoding for ('' for none; default gemma-3-270m)"
    )
    p.add_argument("--decode-contexts", type=int, nargs="+", help="decode context lengths (default 1024 8192 32768)")
    p.add_argument("--decode-steps", type=int, help="timed decode steps per measurement (default 16)")
    p.add_argument("--threads", type=int, help="torch CPU threads in every measurement (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny lengths and one sample: seconds per model, for tests")
    p.add_argument("--configs", default=M.CONFIG_DIR, help="folder of model JSON files (default: the shipped ones)")
    p.add_argument("--out", default="sparseformer-bench-models", help="folder for results.json and latency.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
