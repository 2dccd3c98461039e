"""Band attention plus a :class:`~sparseformer.patterns.StridedSample`: the ``gather`` backend's
path for ``SlidingWindow | Global | StridedSample(s)`` (optionally causal), self-attention.

The pattern's pairs are the band's (:mod:`~sparseformer.kernels.band`) and, for head ``h``, the
sampled pairs: ``(p, j)`` with ``(p - j - h) mod s == 0`` in a candidate tile (a tile the band
leaves empty; ``tiles`` from the compiled layout), score ``+ log(s)`` when re-weighted (and the
band's decay term, which applies to every kept pair), all in one softmax per row.

How the sampled part skips the work: query ``p`` of head ``h`` reads the keys of one residue
class, ``j = c + s*m`` with ``c = (p - h) mod s``. Grouping queries by ``rho = p mod s`` gives
``s`` groups of ``M = ceil(L / s)`` queries that share their ``M`` keys, so the sampled scores are
``s`` products of ``[M, D] x [D, M]`` per head: ``L * M`` scores, a fraction ``1/s`` of dense,
computed whether or not a pair is in a candidate tile (non-candidates are dropped by a bias).
The band part costs what :func:`~sparseformer.kernels.band.band_attention` costs. It is 3-5x
faster than ``gather``'s tile path on such layouts, but materialises ``[B, H, L, L/s]`` scores
several times: on CPU the native kernel (every candidate tile) is faster, and neither beats dense
SDPA at ``s = 5`` (``benchmarks/bench_strided.py``); a fused kernel would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..band import Band
from .band import band_finish, band_scores
from .softmax import drop_bias, probs, soft_cap


def strided_band_attention(
    q: torch.Tensor,  # [B, H, L, D]
    k: torch.Tensor,  # [B, Hk, L, D]
    v: torch.Tensor,  # [B, Hk, L, Dv]
    band: Band,
    stride: int,
    reweight: bool,
    tiles: torch.Tensor,  # bool [H, nq, nk]: candidate tiles of the sampled part
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, L], True = keep
    scale: float,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,  # [H]
) -> torch.Tensor:  # [B, H, L, Dv]
    """Attention over the band's pairs and the sampled pairs (see the module docstring), with
    ``softcap`` and ``sinks`` as in :func:`sparseformer.sparse_attention`."""
    b, h, length, d = q.shape
    hk, bs, s, dev = k.shape[1], band.block_size, stride, q.device
    g = h // hk
    n = (length + bs - 1) // bs
    m = (length + s - 1) // s
    lp = m * s
    parts = band_scores(q, k, v, band, key_padding_mask=key_padding_mask, scale=scale, softcap=softcap)

    # Residue classes: kc[:, :, c] holds keys c, c + s, ...; head h's queries of residue rho read class (rho - h) mod s.
    head = torch.arange(h, device=dev)
    cls = torch.remainder(torch.arange(s, device=dev)[None, :] - head[:, None], s)  # [H, s]
    src = (head // g)[:, None]  # [H, 1]: the K/V head of each query head
    pad = (0, 0, 0, lp - length)
    kc = F.pad(k, pad).view(b, hk, m, s, d).transpose(2, 3)[:, src, cls]  # [B, H, s, M, D]
    vc = F.pad(v, pad).view(b, hk, m, s, v.shape[-1]).transpose(2, 3)[:, src, cls]  # [B, H, s, M, Dv]
    qc = F.pad(q * scale, pad).view(b, h, m, s, d).transpose(2, 3)  # [B, H, s, M, D]: queries p = rho + s*mq
    sampled = soft_cap(qc @ kc.transpose(-1, -2), softcap).transpose(2, 3).reshape(b, h, lp, m)  # [B, H, Lp, M]

    p = torch.arange(lp, device=dev)[None, :, None]  # [1, Lp, 1]
    j = torch.remainder(p - head[:, None, None], s) + s * torch.arange(m, device=dev)  # [H, Lp, M]: key of each score
    inside = (p < length) & (j < length)
    keep = inside & tiles[head[:, None, None], torch.clamp(p // bs, max=n - 1), torch.clamp(j // bs, max=n - 1)]
    if band.causal:
        keep = keep & (j <= p)
    keep = keep[None]  # [1, H, Lp, M]
    if key_padding_mask is not None:
        keep = keep & F.pad(key_padding_mask, (0, lp - length))[:, j]  # [B, H, Lp, M]
    bias = drop_bias(keep, q.dtype)
    if reweight:
        bias = bias + math.log(s)
    if band.slopes is not None:  # a decay part's score term applies to every kept pair
        slopes = torch.tensor(band.slopes, dtype=q.dtype, device=dev)
        bias = bias - slopes[:, None, None] * (p - j).abs().to(q.dtype)  # [H, Lp, M]
    sampled = sampled + bias

    def per_tile(x: torch.Tensor) -> torch.Tensor:  # [B, H, Lp, C] -> [B, Hk, g, n, bs, C]
        x = x[:, :, :length]
        return F.pad(x, (0, 0, 0, n * bs - length)).view(x.shape[0], hk, g, n, bs, x.shape[-1])

    nb = parts.scores.shape[-1]
    sink = None if sinks is None else sinks.view(hk, g, 1, 1, 1)
    p_all = probs(torch.cat([parts.scores, per_tile(sampled)], -1), sink)  # [B, Hk, g, n, bs, K + M]
    if dropout_p > 0:
        p_all = F.dropout(p_all, dropout_p)
    out = p_all[..., :nb] @ parts.values  # [B, Hk, g, n, bs, Dv]
    ps = p_all[..., nb:].reshape(b, h, n * bs, m)[:, :, :length]  # back to [B, H, L, M], then residue groups
    ps = F.pad(ps, (0, 0, 0, lp - length)).view(b, h, m, s, m).transpose(2, 3)  # [B, H, s, M, M]
    out_s = (ps @ vc).transpose(2, 3).reshape(b, h, lp, -1)  # [B, H, Lp, Dv], query order
    out = out + per_tile(out_s)
    if parts.seen is not None:
        out = out * (parts.seen | per_tile(keep.any(-1, keepdim=True)))
    return band_finish(out, parts, band, key_padding_mask, dropout_p, softcap, sinks)
