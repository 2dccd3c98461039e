"""The native kernels as ``torch.library`` custom ops.

Two ops, both taking plain tensors (the fields of a :class:`~sparseformer.layout.BlockLayout`), so
that ``torch.compile`` and ``torch.export`` see one opaque op each and never a layout object:

``sparseformer::block_sparse_attention(q, k, v, row_ptr, col_idx, mask_id, masks, log_weight,
slopes, key_padding_mask, block_size, layout_heads, q_offset, scale, softcap=None) -> (out, lse)``

``sparseformer::block_sparse_attention_backward(grad_out, grad_lse, q, k, v, out, lse, <layout>,
scale, softcap=None) -> (dq, dk, dv)``

``softcap`` (``None`` or ``c > 0``): a listed pair's score is ``c * tanh(scale * <q_i, k_j> / c)``
before the log-weight and decay terms and the masks.

``out`` is ``[B, H, Lq, Dv]`` in the dtype of ``q``; ``lse`` is the row logsumexp ``[B, H, Lq]``
in float32 (float64 for float64 inputs), ``-inf`` for rows that attend to nothing. The forward op
is differentiable in q, k and v (and through ``lse``); the layout tensors get no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .build import load_extension

__all__ = ["block_sparse_attention", "block_sparse_attention_backward"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("sparseformer::block_sparse_attention", mutates_args=(), device_types="cpu")
def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    row_ptr: Tensor,
    col_idx: Tensor,
    mask_id: Tensor,
    masks: Tensor,
    log_weight: Tensor | None,
    slopes: Tensor | None,
    key_padding_mask: Tensor | None,
    block_size: int,
    layout_heads: int,
    q_offset: int,
    scale: float,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    ext = load_extension()
    out, lse = ext.forward(
        q,
        k,
        v,
        row_ptr,
        col_idx,
        mask_id,
        masks,
        log_weight,
        slopes,
        key_padding_mask,
        block_size,
        layout_heads,
        q_offset,
        scale,
        softcap,
    )
    return out, lse


@block_sparse_attention.register_fake
def _(
    q,
    k,
    v,
    row_ptr,
    col_idx,
    mask_id,
    masks,
    log_weight,
    slopes,
    key_padding_mask,
    block_size,
    layout_heads,
    q_offset,
    scale,
    softcap=None,
):
    B, H, Lq, _ = q.shape
    Dv = v.shape[-1]
    out = q.new_empty((B, H, Lq, Dv))
    lse = q.new_empty((B, H, Lq), dtype=_acc_dtype(q.dtype))
    return out, lse


@torch.library.custom_op("sparseformer::block_sparse_attention_backward", mutates_args=(), device_types="cpu")
def block_sparse_attention_backward(
    grad_out: Tensor,
    grad_lse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    row_ptr: Tensor,
    col_idx: Tensor,
    mask_id: Tensor,
    masks: Tensor,
    log_weight: Tensor | None,
    slopes: Tensor | None,
    key_padding_mask: Tensor | None,
    block_size: int,
    layout_heads: int,
    q_offset: int,
    scale: float,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    ext = load_extension()
    dq, dk, dv = ext.backward(
        grad_out,
        grad_lse,
        q,
        k,
        v,
        out,
        lse,
        row_ptr,
        col_idx,
        mask_id,
        masks,
        log_weight,
        slopes,
        key_padding_mask,
        block_size,
        layout_heads,
        q_offset,
        scale,
        softcap,
    )
    return dq, dk, dv


@block_sparse_attention_backward.register_fake
def _(
    grad_out,
    grad_lse,
    q,
    k,
    v,
    out,
    lse,
    row_ptr,
    col_idx,
    mask_id,
    masks,
    log_weight,
    slopes,
    key_padding_mask,
    block_size,
    layout_heads,
    q_offset,
    scale,
    softcap=None,
):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_LAYOUT_ARGS = ("row_ptr", "col_idx", "mask_id", "masks", "log_weight", "slopes", "key_padding_mask")


def _setup_context(ctx, inputs, output):
    (
        q,
        k,
        v,
        row_ptr,
        col_idx,
        mask_id,
        masks,
        log_weight,
        slopes,
        key_padding_mask,
        block_size,
        layout_heads,
        q_offset,
        scale,
        softcap,
    ) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, row_ptr, col_idx, mask_id, masks, log_weight, slopes, key_padding_mask)
    ctx.block_size = block_size
    ctx.layout_heads = layout_heads
    ctx.q_offset = q_offset
    ctx.scale = scale
    ctx.softcap = softcap


def _backward(ctx, grad_out, grad_lse):
    (q, k, v, out, lse, row_ptr, col_idx, mask_id, masks, log_weight, slopes, key_padding_mask) = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = block_sparse_attention_backward(
        grad_out,
        grad_lse,
        q,
        k,
        v,
        out,
        lse,
        row_ptr,
        col_idx,
        mask_id,
        masks,
        log_weight,
        slopes,
        key_padding_mask,
        ctx.block_size,
        ctx.layout_heads,
        ctx.q_offset,
        ctx.scale,
        ctx.softcap,
    )
    return (dq, dk, dv) + (None,) * (len(_LAYOUT_ARGS) + 5)


block_sparse_attention.register_autograd(_backward, setup_context=_setup_context)
