"""How close a sparse model's sentence embeddings are to the dense model's.

Definitions (every figure in ``docs/quality.md``):

* embedding of a passage: mean of the model's last hidden states over its non-padding tokens
  (the sentence-transformers pooling of all-MiniLM-L6-v2), float32.
* ``mean cos`` / ``p5 cos``: mean and 5th percentile (linear interpolation) over passages of
  ``cos(e_ref[i], e[i])``, ``e_ref`` the dense model's embedding.
* ``NN agree``: fraction of passages ``i`` whose nearest other passage by cosine,
  ``argmax_{j != i} cos(e[i], e[j])``, is the same under ``e`` as under ``e_ref``.
* ``density``: attending (query, key) pairs over all pairs of the compiled layout (one layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import patterns as P
from ._deps import progress

RANDOM_BLOCKS = 6  # with block 16 at 512 tokens: 3 window + 6 random of 32 key blocks: 27.7% density
STRIDE = 5  # with block 16 at 512 tokens: 3 window blocks + [CLS] + a fifth of the other keys: 26.5% density

PRESETS = {
    "block-local": ("block-local", lambda: P.BlockLocal()),
    "sliding": ("sliding ±1 block", lambda: P.SlidingWindow(1, unit="block")),
    "sliding-global": (
        "sliding ±1 block + global first block",
        lambda: P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
    ),
    "sliding-cls": ("sliding ±1 block + global [CLS]", lambda: P.SlidingWindow(1, unit="block") | P.Global(tokens=1)),
    "sliding2-cls": ("sliding ±2 blocks + global [CLS]", lambda: P.SlidingWindow(2, unit="block") | P.Global(tokens=1)),
    "sliding-cls-random": (
        f"sliding ±1 block + global [CLS] + {RANDOM_BLOCKS} re-weighted random blocks",
        lambda: P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.RandomBlocks(RANDOM_BLOCKS, seed=0),
    ),
    "sliding-cls-strided": (
        f"sliding ±1 block + global [CLS] + every {STRIDE}th key re-weighted",
        lambda: P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.StridedSample(STRIDE),
    ),
    "bigbird": ("BigBird (3 window, 1 global, 1 random block)", lambda: P.BigBird(num_random_blocks=1)),
    "dense": ("dense (P.Dense())", lambda: P.Dense()),
}


def preset(name: str) -> P.Pattern:
    """The pattern of a preset name (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"pattern preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name][1]()


def parse_preset(text: str, default_block_size: int) -> tuple[str, int]:
    """``"NAME"`` or ``"NAME@BS"`` (a preset with its own block size) -> ``(name, block_size)``."""
    name, at, bs = str(text).partition("@")
    preset(name)
    if not at:
        return name, default_block_size
    if not bs.isdigit() or int(bs) < 1:
        raise ValueError(f"pattern must be NAME or NAME@BLOCK_SIZE with BLOCK_SIZE an int >= 1, got {text!r}")
    return name, int(bs)


@torch.no_grad()
def embed(model, ids: torch.Tensor, *, batch_size: int = 4, desc: str | None = None) -> torch.Tensor:
    """Mean-pooled last hidden states, ``ids: int64 [N, L]`` (unpadded passages) -> ``float32 [N, hidden]``."""
    model.eval()
    out = []
    starts = range(0, ids.shape[0], batch_size)
    for s in progress(starts, desc=desc, leave=False, disable=desc is None):
        out.append(pool(model(input_ids=ids[s : s + batch_size]).last_hidden_state).float())
    return torch.cat(out)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over tokens: ``[B, L, D]`` (and optional ``[B, L]`` 1 = token) -> ``[B, D]``."""
    if attention_mask is None:
        return hidden.mean(1)
    w = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1)


def agreement(ref: torch.Tensor, emb: torch.Tensor) -> dict[str, float]:
    """``{"mean_cos", "p5_cos", "nn_agree"}`` of ``emb`` against ``ref`` (both ``[N, D]``, N >= 2)."""
    if ref.shape != emb.shape or ref.dim() != 2 or ref.shape[0] < 2:
        raise ValueError(f"ref and emb must both be [N >= 2, D], got {tuple(ref.shape)} and {tuple(emb.shape)}")
    cos = F.cosine_similarity(ref.double(), emb.double(), dim=-1)
    return {
        "mean_cos": float(cos.mean()),
        "p5_cos": float(torch.quantile(cos, 0.05)),
        "nn_agree": float((_nearest(ref) == _nearest(emb)).double().mean()),
    }


def _nearest(e: torch.Tensor) -> torch.Tensor:
    n = F.normalize(e.double(), dim=-1)
    sim = n @ n.T
    sim.fill_diagonal_(-2.0)
    return sim.argmax(-1)


def truncate(ids: torch.Tensor, length: int, sep_id: int) -> torch.Tensor:
    """What a tokenizer with ``truncation=True, max_length=length`` gives: the first
    ``length - 1`` tokens and ``[SEP]``. ``[N, L] -> [N, length]``."""
    return torch.cat([ids[:, : length - 1], torch.full((ids.shape[0], 1), sep_id, dtype=ids.dtype)], 1)


def chunk_mean(
    model, ids: torch.Tensor, chunk: int, cls_id: int, sep_id: int, *, desc: str | None = None
) -> torch.Tensor:
    """Token-weighted mean of the embeddings of the consecutive pieces of each passage, each piece
    ``[CLS] + up to chunk - 2 tokens + [SEP]`` (the passage's own [CLS]/[SEP] dropped; a piece of
    ``n`` tokens weighs ``n + 2``). ``[N, L] -> [N, hidden]``: the dense reference for passages
    longer than the dense model reads."""
    body = ids[:, 1:-1]
    n = chunk - 2
    total, weight = 0.0, 0
    for s in range(0, body.shape[1], n):
        piece = body[:, s : s + n]
        wrap = torch.cat([torch.full((ids.shape[0], 1), cls_id), piece, torch.full((ids.shape[0], 1), sep_id)], 1)
        total = total + embed(model, wrap.to(ids.dtype), desc=desc) * wrap.shape[1]
        weight += wrap.shape[1]
    return total / weight
