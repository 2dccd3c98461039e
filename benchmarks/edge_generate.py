"""Streaming generation in fixed memory: tokens/s and resident memory (RSS) of the small causal
LM (random weights) with the sink + window KV cache, after 1k, 8k and 32k tokens. Prints the
markdown table of docs/edge.md.

    .venv/bin/python benchmarks/edge_generate.py [--checkpoints 1024 8192 32768] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.bench.info import machine_line
from sparseformer.generate import new_cache, rss_bytes, stream

MiB = 1 << 20


def main() -> int:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pattern = P.SlidingWindow(args.window, right=0) | P.Global(tokens=args.sinks)
    cfg = sf.nn.CausalLMConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, pattern=pattern)
    model = sf.nn.SparseCausalLM(cfg).eval()
    cache = new_cache(model)
    marks = sorted(set(args.checkpoints))
    gen = torch.Generator().manual_seed(0)
    rows, t_last, n_last = [], time.perf_counter(), 0
    rss0 = rss_bytes()
    tokens = stream(model, torch.tensor([list(b"def ")]), marks[-1], temperature=1.0, generator=gen, cache=cache)
    for n, _ in enumerate(tqdm(tokens, total=marks[-1], file=sys.stderr, mininterval=5), 1):
        if n in marks:
            now = time.perf_counter()
            rows.append((n, (n - n_last) / (now - t_last), rss_bytes()))
            t_last, n_last = now, n
    print(
        f"Causal LM d_model={args.d_model}, {args.layers} layers, {args.heads} heads, pattern "
        f"SlidingWindow({args.window}, right=0) | Global(tokens={args.sinks}); cache {cache.slots} slots = "
        f"{cache.nbytes / MiB:.2f} MiB; sampling (temperature 1); {args.threads} threads; RSS before "
        f"generating {rss0 / MiB:.1f} MiB.\n"
    )
    print("| tokens generated | tokens/s (since previous row) | RSS MiB | RSS vs first row |")
    print("|---|---|---|---|")
    for n, tps, rss in rows:
        print(f"| {n} | {tps:.0f} | {rss / MiB:.1f} | {rss / rows[0][2] - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
