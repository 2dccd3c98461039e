"""The dense reference: masked attention over the layout's dense mask. The oracle of every
kernel; O(L²) time and memory by design, and written independently of the fast paths."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..layout import BlockLayout

_bmm_products = False  # set within bmm_products()


@contextlib.contextmanager
def bmm_products() -> Iterator[None]:
    """Within the block, :func:`masked_attention` multiplies with 3-D ``torch.bmm`` on reshaped
    views instead of 4-D matmuls: the same values, another graph. The ExecuTorch exports trace
    with it: ExecuTorch's edge dialect turns each operand of a 4-D matmul into an ``expand_copy``
    (for a decode step's full layers, a copy of the whole KV cache) and transposes K with a copy.
    The ONNX exports must not: torch.onnx's graph optimizer fuses ``Reshape -> MatMul -> Reshape``
    into one broadcasting MatMul that pairs the wrong batches (docs/edge.md, the decode step)."""
    global _bmm_products
    saved, _bmm_products = _bmm_products, True
    try:
        yield
    finally:
        _bmm_products = saved


def reference_attention(
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
    """Attention over the pairs of ``layout.to_dense_mask()`` with its score terms
    (``layout.to_dense_bias``): :func:`masked_attention`."""
    mask = layout.to_dense_mask().to(q.device)[None]  # [1, Hl, Lq, Lk]
    bias = layout.to_dense_bias(q.dtype).to(q.device)[None]
    return masked_attention(
        q, k, v, mask, bias, key_padding_mask=key_padding_mask, scale=scale, dropout_p=dropout_p, softcap=softcap,
        sinks=sinks,
    )  # fmt: skip


def masked_attention(
    q: torch.Tensor,  # [B, H, Lq, D]
    k: torch.Tensor,  # [B, Hk, Lk, D]
    v: torch.Tensor,  # [B, Hk, Lk, Dv]
    mask: torch.Tensor,  # bool, broadcastable to [B, H, Lq, Lk], True = the pair attends
    bias: torch.Tensor | None = None,  # broadcastable to [B, H, Lq, Lk], added to the scores
    *,
    key_padding_mask: torch.Tensor | None = None,  # bool [B, Lk], True = keep
    scale: float,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,  # [H]
) -> torch.Tensor:  # [B, H, Lq, Dv]
    """Softmax attention over the pairs of ``mask`` (and ``key_padding_mask``): scores
    ``scale * <q_i, k_j>``, soft-capped ``c * tanh(s / c)`` with ``softcap``, plus ``bias``; the
    sinks' logits in the denominator; a row with no key gives 0. O(Lq * Lk) time and memory."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    group = h // hk  # query head i reads key/value head i // group; grouped, not copied
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :]
    qg = q.reshape(b, hk, group * lq, d)
    if _bmm_products:  # (see bmm_products)
        scores = torch.bmm(qg.reshape(b * hk, group * lq, d), k.reshape(b * hk, lk, d).transpose(1, 2))
    else:
        scores = qg @ k.transpose(-1, -2)
    scores = scores.reshape(b, h, lq, lk) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is not None:  # one more logit per row, without a value: its probability is dropped below
        scores = torch.cat([scores, sinks.to(q.dtype).view(1, h, 1, 1).expand(b, h, lq, 1)], -1)
    seen = mask.any(-1, keepdim=True)  # rows that attend to something
    p = torch.softmax(torch.where(seen, scores, torch.zeros_like(scores)), dim=-1)[..., :lk]
    p = torch.where(seen, p, torch.zeros_like(p))  # a row with no key gives 0
    if dropout_p > 0:
        p = torch.nn.functional.dropout(p, dropout_p)
    pg = p.reshape(b, hk, group * lq, lk)
    if _bmm_products:
        out = torch.bmm(pg.reshape(b * hk, group * lq, lk), v.reshape(b * hk, lk, v.shape[-1]))
    else:
        out = pg @ v
    return out.reshape(b, h, lq, v.shape[-1])
