"""Band attention: sliding windows plus a prefix of global tokens, as contiguous K/V slices.

The ``gather`` backend's path for the most common edge pattern (``SlidingWindow | Global``),
written so that nothing in it depends on a compiled layout: every index is computed from the
sequence length at run time, so ``torch.export`` keeps the length symbolic and one exported
graph serves every length.

The pairs are those of a :class:`~sparseformer.band.Band` (:func:`~sparseformer.band.band_of`
resolves a pattern into one; see :mod:`sparseformer.band` for which pairs attend). A row that
keeps no key (all padded) gives zeros.

How it is computed (``bs`` the block size, ``n = ceil(L / bs)`` query tiles): query tile ``t``
reads the ``w = wl + 1 + wr`` key tiles ``t - wl .. t + wr`` (one slice of the padded keys per
offset, stacked) and the ``G`` global keys, in one softmax; keys ``j < G`` are taken from the
global part only, never twice. Rows ``i < Gr`` attend every key and are computed densely (``Gr``
rows of ``L`` keys). Cost: ``L * (w * bs + G) + Gr * L`` scores; memory: ``w + G / bs`` copies of
K and V.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..band import Band
from .softmax import attend, drop_bias, masked_attend, soft_cap


def _windows(x: torch.Tensor, n: int, bs: int, wl: int, wr: int, head: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., (n + wl + wr) * bs, C] -> [..., n, G + w*bs, C]``: for each query tile ``t`` the rows
    of ``head [..., n, G, C]`` (if any) then the (padded) key tiles ``t - wl .. t + wr``: one slice
    per offset, concatenated once."""
    span = n * bs
    tiles = [x[..., o * bs : o * bs + span, :].unflatten(-2, (n, bs)) for o in range(wl + wr + 1)]
    return torch.cat(tiles if head is None else [head, *tiles], -2)


class BandScores(NamedTuple):
    """The band's scores per query tile and what finishing the attention needs."""

    scores: torch.Tensor  # [B, Hk, g, n, bs, K]: K = G + w*bs keys per tile, key and pair terms included
    values: torch.Tensor  # [B, Hk, 1, n, K, Dv]
    seen: torch.Tensor | None  # bool, broadcastable to [B, Hk, g, n, bs, 1]; None: every row keeps a key
    qs: torch.Tensor  # [B, Hk, g, L, D]: the scaled queries
    k: torch.Tensor  # [B, Hk, L, D]
    v: torch.Tensor  # [B, Hk, L, Dv]


def band_scores(
    q: torch.Tensor,  # [B, H, L, D]
    k: torch.Tensor,  # [B, Hk, L, D]
    v: torch.Tensor,  # [B, Hk, L, Dv]
    band: Band,
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, L], True = keep
    scale: float,
    softcap: float | None = None,
) -> BandScores:
    """The scores of the window and global-key pairs of ``band``, per query tile (rows
    ``i < Gr`` included but wrong: :func:`band_finish` replaces them), soft-capped first when
    ``softcap`` is set.

    Conditions on the key alone (outside ``[0, L)``, padding, ``j < G`` in the window part) ride
    in the score product as an extra column (``[q, 1] . [k, bias_j]``; with ``softcap``, added
    after the capped product instead); conditions and score terms
    on the pair (token windows, causal, decay) add a ``[n, bs, G + w*bs]`` bias (per head for
    decay), only when the band has any (``not band.tile_full``)."""
    b, h, length, d = q.shape
    hk, bs, dt, dev = k.shape[1], band.block_size, q.dtype, q.device
    g = h // hk
    n = (length + bs - 1) // bs
    wl, wr = band.reach
    gk = min(band.global_keys, length)
    lp = (n + wl + wr) * bs  # padded key length: tile t's window starts at t * bs

    jp = torch.arange(lp, device=dev) - wl * bs  # key index of each padded slot
    valid = ((jp >= gk) & (jp < length))[None]  # [1 or B, Lp]: keys the window part may take
    valid_g = torch.ones(1, gk, dtype=torch.bool, device=dev)  # [1 or B, G]
    if key_padding_mask is not None:
        valid = valid & F.pad(key_padding_mask, (wl * bs, lp - wl * bs - length))
        valid_g = key_padding_mask[:, :gk]
    pad = (0, 0, wl * bs, lp - wl * bs - length)
    kp, vp = F.pad(k, pad), F.pad(v, pad)  # [B, Hk, Lp, D | Dv]
    k_ext = torch.cat([kp, drop_bias(valid, dt)[:, None, :, None].expand(b, hk, lp, 1)], -1)  # [B, Hk, Lp, D+1]
    heads = [None, None, None]  # the global keys join every tile's keys: G + w*bs keys per tile
    if gk:
        kg = torch.cat([k[:, :, :gk], drop_bias(valid_g, dt)[:, None, :, None].expand(b, hk, gk, 1)], -1)
        rows = max(valid.shape[0], valid_g.shape[0])
        heads = [
            kg[:, :, None].expand(-1, -1, n, -1, -1),
            v[:, :, None, :gk].expand(-1, -1, n, -1, -1),
            valid_g[:, None, None, :, None].expand(rows, 1, n, -1, -1),
        ]
        valid = valid.expand(rows, -1)
    kw = _windows(k_ext, n, bs, wl, wr, heads[0])  # [B, Hk, n, G + w*bs, D+1]
    vw = _windows(vp, n, bs, wl, wr, heads[1])  # [B, Hk, n, G + w*bs, Dv]

    qs = q.unflatten(1, (hk, g)) * scale  # [B, Hk, g, L, D]
    if softcap is None:
        q_ext = torch.cat([qs, torch.ones_like(qs[..., :1])], -1)
        qt = F.pad(q_ext, (0, 0, 0, n * bs - length)).unflatten(-2, (n, bs))  # [B, Hk, g, n, bs, D+1]
        scores = qt @ kw[:, :, None].transpose(-1, -2)  # [B, Hk, g, n, bs, G + w*bs], key terms included
    else:  # the key terms must not be capped: add them after
        qt = F.pad(qs, (0, 0, 0, n * bs - length)).unflatten(-2, (n, bs))  # [B, Hk, g, n, bs, D]
        scores = soft_cap(qt @ kw[:, :, None, ..., :d].transpose(-1, -2), softcap)  # [B, Hk, g, n, bs, G + w*bs]
        scores = scores + kw[:, :, None, :, None, :, d]
    pairs = None
    if not band.tile_full:
        i = torch.arange(n * bs, device=dev).view(n, bs, 1)  # query index
        j = (torch.arange(n, device=dev) - wl).view(n, 1, 1) * bs + torch.arange((wl + wr + 1) * bs, device=dev)
        pairs = band._window_pairs(i, j, length)  # [H or 1, n, bs, w*bs]
        if gk:
            jg = torch.arange(gk, device=dev).expand(n, 1, gk)
            pairs = torch.cat([band._ok(i, jg, length).expand(pairs.shape[0], -1, -1, -1), pairs], -1)
            j = torch.cat([jg, j.expand(n, 1, -1)], -1)  # [n, 1, G + w*bs]
        pairs = pairs.view(hk, g, n, bs, -1) if band.per_head else pairs[0]  # [Hk, g, n, bs, K] or [n, bs, K]
        bias = drop_bias(pairs, dt)
        if band.slopes is not None:
            bias = bias + band._bias(i, j, dt).view(hk, g, n, bs, -1)
        scores = scores + bias
    seen = None
    if key_padding_mask is not None or not band.windows:  # else every row keeps its own key
        keys = _windows(valid[:, None, :, None], n, bs, wl, wr, heads[2])[:, 0, :, :, 0]  # [1 or B, n, G + w*bs]
        keep = keys[:, None, None, :, None, :]  # [1 or B, 1, 1, n, 1, G + w*bs]
        seen = (keep if pairs is None else keep & pairs).any(-1, keepdim=True)
    # The keys of the padded copies (a plain [L, D] operand, which exporters fuse into products).
    kk, vv = kp[..., wl * bs : wl * bs + length, :], vp[..., wl * bs : wl * bs + length, :]
    return BandScores(scores, vw[:, :, None], seen, qs, kk, vv)


def band_finish(
    out: torch.Tensor, parts: BandScores, band: Band, key_padding_mask, dropout_p: float, softcap, sinks
) -> torch.Tensor:
    """``out [B, Hk, g, n, bs, Dv]`` (per query tile) -> ``[B, H, L, Dv]``, with the rows
    ``i < Gr`` computed over every key."""
    b, hk, g, length, _ = parts.qs.shape
    out = out.flatten(-3, -2)[..., :length, :]  # [B, Hk, g, L, Dv]
    gr = min(band.global_rows, length)
    if gr:
        rows = _global_rows(parts.qs[..., :gr, :], parts.k, parts.v, band, key_padding_mask, dropout_p, softcap, sinks)
        out = torch.cat([rows, out[..., gr:, :]], -2)
    return out.reshape(b, hk * g, length, out.shape[-1])


def band_attention(
    q: torch.Tensor,  # [B, H, L, D]
    k: torch.Tensor,  # [B, Hk, L, D]
    v: torch.Tensor,  # [B, Hk, L, Dv]
    band: Band,
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, L], True = keep
    scale: float,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,  # [H]
) -> torch.Tensor:  # [B, H, L, Dv]
    """Attention over the pairs of ``band`` (see the module docstring and :func:`band_scores`),
    with ``softcap`` and ``sinks`` as in :func:`sparseformer.sparse_attention`."""
    parts = band_scores(q, k, v, band, key_padding_mask=key_padding_mask, scale=scale, softcap=softcap)
    sink = None if sinks is None else sinks.view(*parts.qs.shape[1:3], 1, 1, 1)  # [Hk, g, 1, 1, 1]
    out = attend(parts.scores, parts.values, parts.seen, dropout_p, sink)  # [B, Hk, g, n, bs, Dv]
    return band_finish(out, parts, band, key_padding_mask, dropout_p, softcap, sinks)


def _global_rows(qg, k, v, band: Band, key_padding_mask, dropout_p: float, softcap, sinks) -> torch.Tensor:
    """Rows ``i < Gr``: every key (causal: ``j <= i``). ``qg [B, Hk, g, Gr, D]`` (scaled)."""
    length = k.shape[-2]
    i = torch.arange(qg.shape[-2], device=qg.device)[:, None]
    keep = band._ok(i, torch.arange(length, device=qg.device)[None, :], length)  # [Gr, L]
    if key_padding_mask is not None:
        keep = keep & key_padding_mask[:, None, None, None, :]
    scores = soft_cap(qg @ k[:, :, None].transpose(-1, -2), softcap)  # [B, Hk, g, Gr, L]
    if band.slopes is not None:
        scores = scores + band._bias(i, torch.arange(length, device=qg.device)[None, :], qg.dtype).view(
            *qg.shape[1:3], -1, length
        )
    sink = None if sinks is None else sinks.view(*qg.shape[1:3], 1, 1)  # [Hk, g, 1, 1]
    return masked_attend(scores, keep, v[:, :, None], dropout_p, sink)
