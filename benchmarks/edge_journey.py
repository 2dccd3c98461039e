"""The whole edge journey, measured: all-MiniLM-L6-v2 -> sparse -> distilled (``sparseformer distill``)
-> positions extended -> ONNX -> ONNX Runtime, against what users run today. Prints the table of
docs/edge.md ("The journey").

    .venv/bin/python benchmarks/edge_journey.py --distilled DIR [--length 4096] [--passages 8] \
        [--repeats 5] [--threads 2]

Rows, each an ONNX file run by ONNX Runtime (CPU provider) on ``--passages`` held-out passages of
``--length`` tokens (CPython's own text, ``sparseformer.hf.data``), batch 1, mean-pooled:

* the distilled sparse model, portable graph (the default export), custom op (the native kernel,
  ``custom_op=True``), and int8 (``quantize_onnx`` of the portable file);
* the stock dense model with its positions extended to ``--length`` (tiled, as for the student);
* the stock dense model in 512-token chunks (one batch of the passage's chunks, the last one
  padded; the token-weighted mean of the chunks' embeddings): what users do today;
* the distilled model in PyTorch (native kernel), for reference.

Quality: mean and 5th-percentile cosine of each row's embeddings to the reference, the dense
model's 512-token chunk mean computed in PyTorch (``sparseformer.hf.quality.chunk_mean``), and
nearest-neighbour agreement. Latency: passage 0, ``--repeats`` timed runs after a warm-up, rows
interleaved; median and [min, max] in ms.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sparseformer.bench.info import machine_line  # noqa: E402
from sparseformer.export import OnnxRunner, quantize, to_onnx  # noqa: E402

MiB = 1 << 20


def chunk_inputs(ids: torch.Tensor, chunk: int, cls_id: int, sep_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A passage ``[L]`` (with its [CLS] and [SEP]) as the batch of its consecutive pieces
    ``[CLS] + up to chunk - 2 tokens + [SEP]`` (as ``chunk_mean``), right-padded to ``chunk``:
    ``(input_ids, attention_mask)``, both ``[pieces, chunk]``."""
    body, n = ids[1:-1], chunk - 2
    pieces = math.ceil(body.numel() / n)
    out = torch.zeros(pieces, chunk, dtype=torch.int64)
    mask = torch.zeros(pieces, chunk, dtype=torch.int64)
    for p in range(pieces):
        piece = torch.cat([torch.tensor([cls_id]), body[p * n : (p + 1) * n], torch.tensor([sep_id])])
        out[p, : piece.numel()] = piece
        mask[p, : piece.numel()] = 1
    return out, mask


def pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-weighted mean over every real token of every row: ``[N, L, E], [N, L] -> [E]``
    (one row: the mean pool; chunks: each chunk's mean weighted by its token count)."""
    w = mask.to(hidden.dtype)[..., None]
    return (hidden * w).sum((0, 1)) / w.sum()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distilled", required=True, help="a directory written by `sparseformer distill`")
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--passages", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    import sparseformer.hf as sfh
    from sparseformer.hf import data
    from sparseformer.hf.attention import settings
    from sparseformer.hf.quality import agreement, chunk_mean

    print(machine_line())
    base = data.default_model()
    tok = AutoTokenizer.from_pretrained(base)
    dense = AutoModel.from_pretrained(base, attn_implementation="sdpa").eval()
    chunk = dense.config.max_position_embeddings
    passages = data.passages(tok, args.length, "heldout", limit=args.passages, seed=args.seed)
    ids = torch.stack([p for _, p in passages])  # [N, L]
    with torch.no_grad():
        ref = chunk_mean(dense, ids, chunk, tok.cls_token_id, tok.sep_token_id)  # [N, E]
    student = sfh.load_distilled(args.distilled, max_positions=args.length)
    entry = settings(student.config)
    long_dense = sfh.extend_positions(AutoModel.from_pretrained(base, attn_implementation="sdpa").eval(), args.length)
    one = (ids[:1], torch.ones_like(ids[:1]))
    chunks = [chunk_inputs(row, chunk, tok.cls_token_id, tok.sep_token_id) for row in ids]

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        steps = [
            ("sparse, portable graph", lambda p: to_onnx(student, one, p), "single"),
            ("sparse, custom op (native kernel)", lambda p: to_onnx(student, one, p, custom_op=True), "single"),
            (
                "sparse, int8 (portable graph)",
                lambda p: quantize.quantize_onnx(to_onnx(student, one, p.with_suffix(".fp32.onnx")), p),
                "single",
            ),
            (f"dense, positions extended to {args.length}", lambda p: to_onnx(long_dense, one, p), "single"),
            (f"dense, chunks of {chunk} tokens (today)", lambda p: to_onnx(dense, chunks[0], p), "chunks"),
        ]
        for i, (name, export, kind) in enumerate(tqdm(steps, desc="export")):
            path = tmp / f"{i}.onnx"
            t0 = time.perf_counter()
            export(path)
            rows[name] = {
                "run": OnnxRunner(path, threads=args.threads),
                "kind": kind,
                "mib": path.stat().st_size / MiB,
                "export_s": time.perf_counter() - t0,
            }
        rows["sparse, PyTorch (native kernel)"] = {"run": lambda i, m: _torch(student, i, m), "kind": "single"}

        def call(row: dict, n: int) -> torch.Tensor:
            inputs = chunks[n] if row["kind"] == "chunks" else (ids[n : n + 1], torch.ones_like(ids[n : n + 1]))
            return pooled(row["run"](*inputs), inputs[1])

        for row in tqdm(rows.values(), desc="quality"):
            row["emb"] = torch.stack([call(row, n) for n in range(len(ids))])
            row["times"] = []
        for _ in tqdm(range(args.repeats), desc="latency"):
            for row in rows.values():
                t0 = time.perf_counter()
                call(row, 0)
                row["times"].append(time.perf_counter() - t0)
    report(rows, ref, args, entry, agreement)
    return 0


@torch.no_grad()
def _torch(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


def report(rows: dict, ref: torch.Tensor, args, entry, agreement) -> None:
    dense_ms, chunks_ms = (
        statistics.median(next(r for name, r in rows.items() if name.startswith(start))["times"]) * 1e3
        for start in ("dense, positions", "dense, chunks")
    )
    print(
        f"\n{args.passages} held-out passages of {args.length} tokens; student {args.distilled} "
        f"(pattern {entry.pattern!r}, block {entry.block_size}); {args.threads} threads; latency of passage 0, "
        f"median [min, max] of {args.repeats}\n"
    )
    print("| model | file MiB | latency ms | speed-up vs dense | vs dense chunks | mean cos | p5 cos | NN agree |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        ms = [t * 1e3 for t in row["times"]]
        med = statistics.median(ms)
        q = agreement(ref, row["emb"])
        mib = f"{row['mib']:.1f}" if "mib" in row else "—"
        print(
            f"| {name} | {mib} | {med:.0f} [{min(ms):.0f}, {max(ms):.0f}] | {dense_ms / med:.2f}x | {chunks_ms / med:.2f}x | "
            f"{q['mean_cos']:.4f} | {q['p5_cos']:.4f} | {q['nn_agree']:.3f} |"
        )
    print("\ncommand: " + " ".join(["benchmarks/edge_journey.py", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
