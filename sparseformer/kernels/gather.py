"""The portable backend: gather the visited key tiles, then dense math on them.

PyTorch ops only (index_select, matmul, exp, where), so it runs on any device, trains with
autograd and exports with ``torch.export`` / ``torch.onnx.export``. Time and memory follow the
number of visited tiles (``[B, H, nq, bs, R*bs]`` scores, R = longest row of the layout), never
``Lq * Lk``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layout import BlockLayout
from .softmax import masked_softmax


def _tiles(x: torch.Tensor, n: int, bs: int) -> torch.Tensor:
    """``[B, H, L, D] -> [B, H, n, bs, D]``, zero-padding L up to ``n * bs``."""
    b, h, length, d = x.shape
    x = F.pad(x, (0, 0, 0, n * bs - length))
    return x.view(b, h, n, bs, d)


def gather_attention(
    q: torch.Tensor,  # [B, H, Lq, D]
    k: torch.Tensor,  # [B, Hk, Lk, D]
    v: torch.Tensor,  # [B, Hk, Lk, Dv]
    layout: BlockLayout,
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, Lk], True = keep
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:  # [B, H, Lq, Dv]
    b, h, lq, d = q.shape
    hk, dv = k.shape[1], v.shape[-1]
    bs, nq, nk, hl = layout.block_size, layout.nq, layout.nk, layout.layout_heads
    kv_tiles, tile_masks, logw = layout.padded(q.device)  # [Hl,nq,R], [Hl,nq,bs,R*bs], [Hl,nq,R]
    r = kv_tiles.shape[-1]

    # Index of each visited tile in the flattened [Hk * nk] tiles of K and V.
    kv_head = torch.arange(h, device=q.device) // (h // hk)  # [H]
    flat = (kv_head[:, None, None] * nk + kv_tiles).expand(h, nq, r).reshape(-1)  # [H*nq*R]
    kt = _tiles(k, nk, bs).reshape(b, hk * nk, bs, d).index_select(1, flat)  # [B, H*nq*R, bs, D]
    vt = _tiles(v, nk, bs).reshape(b, hk * nk, bs, dv).index_select(1, flat)
    kt = kt.view(b, h, nq, r * bs, d)
    vt = vt.view(b, h, nq, r * bs, dv)
    qt = _tiles(q, nq, bs)  # [B, H, nq, bs, D]

    scores = qt @ kt.transpose(-1, -2) * scale  # [B, H, nq, bs, R*bs]
    keep = tile_masks[None]  # [1, Hl, nq, bs, R*bs]
    if key_padding_mask is not None:
        kpm = F.pad(key_padding_mask, (0, nk * bs - key_padding_mask.shape[-1])).view(b, nk, bs)
        kpm = kpm[:, kv_tiles].reshape(b, hl, nq, 1, r * bs)  # [B, Hl, nq, 1, R*bs]
        keep = keep & kpm
    if logw is not None:
        scores = scores + logw.to(q.dtype).repeat_interleave(bs, -1)[None, :, :, None, :]
    if layout.slopes is not None:
        qpos = torch.arange(nq * bs, device=q.device).view(nq, bs) + layout.q_offset  # [nq, bs]
        kpos = (kv_tiles[..., None] * bs + torch.arange(bs, device=q.device)).reshape(hl, nq, 1, r * bs)
        dist = (qpos[None, :, :, None] - kpos).abs().to(q.dtype)  # [Hl, nq, bs, R*bs]
        scores = scores - layout.slopes.to(q.device, q.dtype)[:, None, None, None] * dist
    out = masked_softmax(scores, keep, dropout_p) @ vt  # [B, H, nq, bs, Dv]
    return out.view(b, h, nq * bs, dv)[:, :, :lq]
