"""The portable backend: gather the visited key tiles, then dense math on them.

PyTorch ops only (index_select, matmul, softmax, where), so it runs on any device, trains with
autograd and exports with ``torch.export`` / ``torch.onnx.export``. Rows (a head's query tile)
are processed in buckets of similar length (``BlockLayout.row_buckets``), so time and memory
follow the number of visited tiles (at most twice it, with padding), never ``Lq * Lk``.
Layouts of band form (``BlockLayout.band``: sliding windows plus global prefix tokens) run
:func:`~sparseformer.kernels.band.band_attention` instead: contiguous K/V slices, no gathers;
band layouts plus a ``StridedSample`` (``BlockLayout.strided``) run
:func:`~sparseformer.kernels.strided.strided_band_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layout import BlockLayout, Bucket
from .band import band_attention
from .softmax import masked_attend, soft_cap
from .strided import strided_band_attention


def _tiles(x: torch.Tensor, n: int, bs: int) -> torch.Tensor:
    """``[B, H, L, D] -> [B, H * n, bs, D]``, zero-padding L up to ``n * bs``."""
    b, h, length, d = x.shape
    if n * bs != length:
        x = F.pad(x, (0, 0, 0, n * bs - length))
    return x.reshape(b, h * n, bs, d)


def _bucket(qt, kt, vt, kpm, bucket: Bucket, table, layout: BlockLayout, hk_ratio: int, dropout_p, softcap, sinks):
    """Attention for the rows of one bucket: ``[B, n, bs, Dv]``."""
    b, _, bs, d = qt.shape
    nq, nk = layout.nq, layout.nk
    rows, tiles = bucket.rows, bucket.kv_tiles  # [n], [n, R]
    n, r = tiles.shape
    head = rows // nq  # [n]
    flat = ((head // hk_ratio)[:, None] * nk + tiles).reshape(-1)  # [n*R] tiles of K/V
    q = qt.index_select(1, rows)  # [B, n, bs, D]
    k = kt.index_select(1, flat).view(b, n, r * bs, d)  # [B, n, R*bs, D]
    v = vt.index_select(1, flat).view(b, n, r * bs, vt.shape[-1])
    scores = soft_cap(q @ k.transpose(-1, -2), softcap)  # [B, n, bs, R*bs]
    keep = table[bucket.tile_ids].permute(0, 2, 1, 3).reshape(n, bs, r * bs)  # [n, bs, R*bs]
    if kpm is not None:  # [B, nk * bs]
        kidx = (tiles[:, :, None] * bs + torch.arange(bs, device=tiles.device)).reshape(-1)  # [n*R*bs]
        keep = keep & kpm.index_select(1, kidx).view(b, n, 1, r * bs)
    if bucket.log_weight is not None:
        scores = scores + bucket.log_weight.to(scores.dtype).repeat_interleave(bs, -1)[:, None, :]
    if layout.slopes is not None:
        qpos = (rows % nq)[:, None] * bs + torch.arange(bs, device=rows.device) + layout.q_offset  # [n, bs]
        kpos = (tiles[:, :, None] * bs + torch.arange(bs, device=rows.device)).reshape(n, 1, r * bs)
        dist = (qpos[:, :, None] - kpos).abs().to(scores.dtype)  # [n, bs, R*bs]
        scores = scores - layout.slopes.to(scores.device, scores.dtype)[head][:, None, None] * dist
    sink = None if sinks is None else sinks[head][:, None, None]  # [n, 1, 1]
    return masked_attend(scores, keep, v, dropout_p, sink)  # [B, n, bs, Dv]


def gather_attention(
    q: torch.Tensor,  # [B, H, Lq, D]
    k: torch.Tensor,  # [B, Hk, Lk, D]
    v: torch.Tensor,  # [B, Hk, Lk, Dv]
    layout: BlockLayout,
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, Lk], True = keep
    scale: float,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,  # [H]
) -> torch.Tensor:  # [B, H, Lq, Dv]
    terms = dict(key_padding_mask=key_padding_mask, scale=scale, dropout_p=dropout_p, softcap=softcap, sinks=sinks)
    if layout.band is not None:
        return band_attention(q, k, v, layout.band, **terms)
    if layout.strided is not None:
        band, sample = layout.strided
        return strided_band_attention(q, k, v, band, sample.stride, sample.reweight, sample.tiles.to(q.device), **terms)
    b, h, lq, _ = q.shape
    hk, dv = k.shape[1], v.shape[-1]
    bs, nq, nk = layout.block_size, layout.nq, layout.nk
    rb = layout.row_buckets(q.device)
    qt = _tiles(q * scale, nq, bs)  # [B, H*nq, bs, D]
    kt, vt = _tiles(k, nk, bs), _tiles(v, nk, bs)  # [B, Hk*nk, bs, D]
    kpm = None
    if key_padding_mask is not None:
        kpm = F.pad(key_padding_mask, (0, nk * bs - key_padding_mask.shape[-1]))  # [B, nk*bs]
    outs = [
        _bucket(qt, kt, vt, kpm, bk, rb.tile_table, layout, h // hk, dropout_p, softcap, sinks) for bk in rb.buckets
    ]
    out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]  # [B, H*nq, bs, Dv], bucket order
    if len(outs) > 1:
        out = out.index_select(1, rb.inverse)
    return out.view(b, h, nq * bs, dv)[:, :, :lq]
