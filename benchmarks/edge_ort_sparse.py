"""Causal sparse attention alone on ONNX Runtime (CPU): ORT's com.microsoft.SparseAttention op
vs our decomposed ``gather`` graph (sf.export.to_onnx) vs dense causal SDPA exported the same
way. Heads 12, head dim 32 (MiniLM's attention), batch 1, causal SlidingWindow(1, unit='block') |
Global(blocks=1), block 64. Prints the markdown table of docs/edge.md.

    .venv/bin/python benchmarks/edge_ort_sparse.py [--lengths 1024 2048 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.bench.info import machine_line
from sparseformer.export import OnnxRunner, to_onnx
from sparseformer.export.ort_sparse import OrtSparseAttention

H, D, BS = 12, 32, 64
PATTERN = P.SlidingWindow(1, unit="block") | P.Global(blocks=1)


class Sparse(nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.layout = layout

    def forward(self, q, k, v):
        return sf.sparse_attention(q, k, v, self.layout, backend="gather")


class Dense(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def median_ms(fn, inputs: tuple, repeat: int) -> float:
    fn(*inputs)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*inputs)
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> int:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge_ort_sparse_"))
    rows = []
    for L in tqdm(args.lengths, file=sys.stderr):
        layout = PATTERN.compile(q_len=L, num_heads=H, block_size=BS, causal=True)
        q, k, v = (torch.randn(1, H, L, D) for _ in range(3))
        ref = sf.sparse_attention(q, k, v, layout, backend="gather")
        op = OrtSparseAttention(layout, D, threads=args.threads)
        gather = OnnxRunner(
            to_onnx(Sparse(layout), (q, k, v), tmp / f"gather_{L}.onnx", seq_dim=2), threads=args.threads
        )
        dense = OnnxRunner(to_onnx(Dense(), (q, k, v), tmp / f"dense_{L}.onnx", seq_dim=2), threads=args.threads)
        err = max(float((op(q, k, v) - ref).abs().max()), float((gather(q, k, v) - ref).abs().max()))
        ms = [median_ms(run, (q, k, v), args.repeat) for run in (op, gather, dense)]
        rows.append((L, layout.density, *ms, err))
    print(f"Causal attention only, B=1, H={H}, D={D}, {args.threads} threads, median of {args.repeat} (ms).\n")
    print(
        "| L | density | ORT SparseAttention op | decomposed gather graph | dense causal SDPA graph | max abs err vs PyTorch |"
    )
    print("|---|---|---|---|---|---|")
    for L, dens, a, g, d, err in rows:
        print(f"| {L} | {dens:.3f} | {a:.1f} | {g:.1f} | {d:.1f} | {err:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
