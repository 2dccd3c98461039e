"""Why the 512-token targets of docs/quality.md are hard: two measurements (all-MiniLM-L6-v2, CPU).

    python benchmarks/quality_ceiling.py --out runs/quality_ceiling.md [--passages 100] [--preset NAME]

1. *How much NN agreement a cosine allows.* On the held-out passages, the gap between each
   passage's most and second-most similar other passage (dense embeddings), and the NN agreement
   of embeddings made by moving every dense embedding to cosine ``c`` from itself in a uniformly
   random direction (20 draws per ``c``): ``e = c * n + sqrt(1 - c^2) * u``, ``n`` the unit
   dense embedding, ``u`` a random unit vector orthogonal to it.
2. *Where the error comes from.* A preset (``--preset``, default ``sliding-cls-strided``; block
   16) in one layer only (``sparsify(..., layers=[i])``; the other layers dense), then in every
   layer.

Definitions of the figures: :mod:`sparseformer.hf.quality`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from sparseformer.bench.info import machine_line
from sparseformer.hf import data
from sparseformer.hf._deps import progress
from sparseformer.hf.checkpoint import write_text
from sparseformer.hf.data import default_model
from sparseformer.hf.model import sparsify
from sparseformer.hf.quality import agreement, embed, preset

BLOCK = 16
COSINES = (0.98, 0.99, 0.995, 0.998, 0.999)
DRAWS = 20


def noise_at(ref: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    """Unit embeddings at cosine exactly ``c`` from ``ref`` ``[N, D]``, in random directions."""
    n = F.normalize(ref.double(), dim=-1)
    u = torch.randn(n.shape, generator=gen, dtype=torch.float64)
    u = F.normalize(u - (u * n).sum(-1, keepdim=True) * n, dim=-1)
    return c * n + (1 - c * c) ** 0.5 * u


def gaps(ref: torch.Tensor) -> torch.Tensor:
    """Per passage: cosine to its nearest other passage minus cosine to its second nearest."""
    n = F.normalize(ref.double(), dim=-1)
    sim = n @ n.T
    sim.fill_diagonal_(-2.0)
    top = sim.topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def main() -> int:
    print(machine_line(), flush=True)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality_ceiling.md")
    p.add_argument("--passages", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="sliding-cls-strided", help="a preset of sparseformer.hf.quality.PRESETS")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    import transformers

    started = time.monotonic()
    base = default_model()
    tok = transformers.AutoTokenizer.from_pretrained(base)
    ids = torch.stack([x for _, x in data.passages(tok, 512, "heldout", limit=a.passages, seed=0)])
    ref = embed(transformers.AutoModel.from_pretrained(base).eval(), ids, desc="dense")
    g = gaps(ref)
    out = [f"Held-out topics, {a.passages} passages of 512 tokens, seed 0.\n\n"]
    qs = (0.05, 0.10, 0.25, 0.50)
    out.append("**Gap between the nearest and the second-nearest other passage (dense)**\n\n")
    out.append("| " + " | ".join(f"{q:.0%} quantile" for q in qs) + " |\n|" + "---|" * len(qs) + "\n")
    out.append("| " + " | ".join(f"{float(torch.quantile(g, q)):.4f}" for q in qs) + " |\n\n")
    out.append(f"**NN agreement of the dense embeddings moved to cosine c in random directions** ({DRAWS} draws)\n\n")
    out.append("| c | NN agree, mean | min | max |\n|---|---|---|---|\n")
    gen = torch.Generator().manual_seed(0)
    for c in COSINES:
        nn = [agreement(ref, noise_at(ref, c, gen).float())["nn_agree"] for _ in range(DRAWS)]
        out.append(f"| {c} | {sum(nn) / len(nn):.3f} | {min(nn):.3f} | {max(nn):.3f} |\n")
    out.append(f"\n**`{a.preset}` (block {BLOCK}) in some layers, the others dense**\n\n")
    out.append("| sparse layers | mean cos | p5 cos | NN agree |\n|---|---|---|---|\n")
    layers = transformers.AutoConfig.from_pretrained(base).num_hidden_layers
    for which in progress([[i] for i in range(layers)] + [None], desc="layers"):
        model = sparsify(
            transformers.AutoModel.from_pretrained(base).eval(), preset(a.preset), block_size=BLOCK, layers=which
        )
        r = agreement(ref, embed(model, ids))
        name = "all" if which is None else str(which[0])
        out.append(f"| {name} | {r['mean_cos']:.4f} | {r['p5_cos']:.4f} | {r['nn_agree']:.3f} |\n")
    out.append(f"\n_{a.threads} torch threads, {time.monotonic() - started:.0f} s._\n")
    text = "".join(out)
    print(text)
    write_text(a.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
