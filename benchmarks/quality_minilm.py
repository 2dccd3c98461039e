"""One command for every table of docs/quality.md (all-MiniLM-L6-v2, offline, CPU).

    python benchmarks/quality_minilm.py --out-dir runs/quality [--minutes 10]

1. ``sparseformer distill`` of the sliding ±1 block + global [CLS] + every 5th key re-weighted
   pattern (``sliding-cls-strided``, block 16, 26.5% density at 512 tokens) for ``--minutes``
   minutes on 512-token training passages (loss: pooled cosine + per-token hidden-state cosine on
   every layer's output; only attention and LayerNorm parameters train; AdamW 3e-5, 10 warm-up
   steps, cosine decay over 380 steps);
2. ``sparseformer quality`` at 512 tokens (zero-shot patterns, the distilled model, truncation)
   and at 2048 tokens (positions extended by tiling; reference: dense 512-token chunks).

Writes ``<out-dir>/student`` (the checkpoint) and ``<out-dir>/quality.md`` (the tables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparseformer.bench.info import machine_line
from sparseformer.cli.hf import add_parser_distill, add_parser_quality

PATTERNS = ["block-local@32", "sliding@32", "sliding-global@32", "sliding-cls@32", "sliding2-cls@32",
            "sliding-cls-random@16", "sliding-cls-strided@16"]  # fmt: skip


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparseformer")
    sub = parser.add_subparsers(required=True)
    add_parser_quality(sub)
    add_parser_distill(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def main() -> int:
    print(machine_line(), flush=True)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="runs/quality")
    p.add_argument("--minutes", default="10")
    p.add_argument("--passages", default="100")
    p.add_argument("--threads", default="2", help="torch threads (the target: 2 CPU cores)")
    a = p.parse_args()
    out = Path(a.out_dir)
    student = str(out / "student")
    resume = ["--resume"] if (out / "student" / "state.json").exists() else []
    distill = ["distill", "--out", student, "--pattern", "sliding-cls-strided", "--block-size", "16", "--length", "512",
               "--steps", "380", "--lr", "3e-5", "--warmup", "10", "--hidden-weight", "1.0", "--hidden-layers", "all",
               "--trainable", "attention", "--max-minutes", a.minutes, "--threads", a.threads, *resume]  # fmt: skip
    quality = ["quality", "--lengths", "512", "--patterns", *PATTERNS, "--passages", a.passages, "--student", student,
               "--long", "2048", "--long-passages", "12", "--threads", a.threads, "--out", str(out / "quality.md")]  # fmt: skip
    return _run(distill) or _run(quality)


if __name__ == "__main__":
    sys.exit(main())
