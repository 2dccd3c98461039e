"""One command for every table of docs/quality.md (all-MiniLM-L6-v2, offline, CPU).

    python benchmarks/quality_minilm.py --out-dir runs/quality [--minutes 10]

1. ``sparseformer distill`` of the sliding ±1 block + global first block pattern (block 32,
   29% density at 512 tokens) for ``--minutes`` minutes on 512-token training passages (loss: pooled cosine + per-token
   hidden-state cosine, AdamW 5e-5);
2. ``sparseformer quality`` at 512 tokens (zero-shot patterns, the distilled model, truncation)
   and at 2048 tokens (positions extended by tiling; reference: dense 512-token chunks).

Writes ``<out-dir>/student`` (the checkpoint) and ``<out-dir>/quality.md`` (the tables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparseformer.hf.commands import add_parser_distill, add_parser_quality


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparseformer")
    sub = parser.add_subparsers(required=True)
    add_parser_quality(sub)
    add_parser_distill(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="runs/quality")
    p.add_argument("--minutes", default="10")
    p.add_argument("--passages", default="100")
    a = p.parse_args()
    out = Path(a.out_dir)
    student = str(out / "student")
    resume = ["--resume"] if (out / "student" / "state.json").exists() else []
    distill = ["distill", "--out", student, "--pattern", "sliding-global", "--block-size", "32", "--length", "512",
               "--steps", "40", "--lr", "5e-5", "--warmup", "3", "--hidden-weight", "1.0", "--max-minutes", a.minutes,
               *resume]  # fmt: skip
    quality = ["quality", "--lengths", "512", "--patterns", "block-local", "sliding", "sliding-global",
               "--block-size", "32", "--passages", a.passages, "--student", student, "--long", "2048",
               "--long-passages", "12", "--out", str(out / "quality.md")]  # fmt: skip
    return _run(distill) or _run(quality)


if __name__ == "__main__":
    sys.exit(main())
