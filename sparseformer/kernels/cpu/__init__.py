"""``cpu`` backend: native block-sparse attention (C++, ATen, OpenMP).

The kernel visits only the key tiles a :class:`~sparseformer.layout.BlockLayout` lists, with an
online softmax (FlashAttention style), element masks only on partial tiles, the decay bias and the
log-weights applied in the inner loop, K and V read in place, and a FlashAttention-2 style backward
that recomputes the scores from the saved logsumexp. It is compiled on first use (see
:mod:`.build`) and registered as the custom op ``sparseformer::block_sparse_attention`` (see
:mod:`.ops`), so ``torch.compile`` and ``torch.export`` see one op.

>>> from sparseformer.kernels import cpu
>>> if cpu.is_available():
...     out = cpu.attention(q, k, v, layout, scale=q.shape[-1] ** -0.5)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from . import ops
from .build import build_directory, extension_or_none, load_extension, unavailable_reason

__all__ = ["attention", "is_available", "unavailable_reason", "build_directory", "load_extension"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def is_available() -> bool:
    """True if the extension builds (first call) and loads. Logs once why not."""
    return extension_or_none() is not None


def _fail(name: str, got: Any, expected: str) -> None:
    raise ValueError(f"sparseformer cpu attention: {name}: expected {expected}, got {got}")


def _check_tensor(name: str, t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        _fail(name, type(t).__name__, "a torch.Tensor")
    if t.device.type != "cpu":
        _fail(name, f"device {t.device}", "a CPU tensor (the cpu backend runs on the CPU)")
    return t


def _float64_or_none(name: str, t: Any, shape: tuple[int, ...]) -> Tensor | None:
    if t is None:
        return None
    t = _check_tensor(name, t)
    if not t.is_floating_point():
        _fail(name, f"dtype {t.dtype}", "a floating-point tensor (used as float64)")
    if tuple(t.shape) != shape:
        _fail(name, f"shape {list(t.shape)}", f"shape {list(shape)}")
    return t.to(torch.float64).contiguous()


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Any,
    *,
    key_padding_mask: Tensor | None = None,
    scale: float,
    softcap: float | None = None,
    sinks: Tensor | None = None,
) -> Tensor:
    """Block-sparse attention over ``layout`` with the native CPU kernel.

    Args:
        q: ``[B, H, Lq, D]``; float32, float64 or bfloat16 (bfloat16 accumulates in float32).
        k: ``[B, Hk, Lk, D]``, ``H % Hk == 0`` (query head ``h`` reads kv head ``h // (H // Hk)``).
        v: ``[B, Hk, Lk, Dv]``.
        layout: a ``BlockLayout`` compiled for ``q_len=Lq, kv_len=Lk, num_heads=H``.
        key_padding_mask: optional bool ``[B, Lk]``, True = keep.
        scale: multiplies ``q @ k^T`` (the caller resolves the default ``1/sqrt(D)``).
        softcap: ``None`` or ``c > 0``: scores ``c * tanh(scale * <q_i, k_j> / c)`` (in the
            kernel, forward and backward), before the layout's score terms and the masks.
        sinks: ``None`` or a float ``[H]``: one extra logit per query head in the softmax
            denominator, no value row; applied as ``out * sigmoid(lse - sinks[h])`` on the op's
            outputs (differentiable in ``sinks``, and in q, k, v through ``lse``).

    Returns:
        ``[B, H, Lq, Dv]`` in the dtype of ``q``; rows that attend to no key are 0.

    Raises:
        ValueError: naming the argument, when a tensor or layout field has the wrong type, dtype,
            device, shape or (checked in the kernel before any work) an index out of range.
        RuntimeError: when the extension cannot be built here (see :func:`is_available`).
    """
    q = _check_tensor("q", q)
    k = _check_tensor("k", k)
    v = _check_tensor("v", v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            _fail(name, f"shape {list(t.shape)}", "a 4-D tensor [B, heads, length, head_dim]")
    if q.dtype not in _DTYPES:
        _fail("q", f"dtype {q.dtype}", "float32, float64 or bfloat16")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _fail(name, f"dtype {t.dtype}", f"the dtype of q ({q.dtype})")
    B, H, Lq, D = q.shape
    Hk, Lk = k.shape[1], k.shape[2]
    if k.shape[0] != B or k.shape[3] != D:
        _fail("k", f"shape {list(k.shape)}", f"[{B}, Hk, Lk, {D}] (batch and head_dim of q)")
    if tuple(v.shape[:3]) != (B, Hk, Lk):
        _fail("v", f"shape {list(v.shape)}", f"[{B}, {Hk}, {Lk}, Dv] (batch, heads, length of k)")
    if Hk == 0 or H % Hk != 0:
        _fail("k", f"{Hk} key/value heads", f"a divisor of the {H} query heads")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        _fail("scale", repr(scale), "a finite float")
    if softcap is not None and (
        isinstance(softcap, bool)
        or not isinstance(softcap, (int, float))
        or not (math.isfinite(softcap) and softcap > 0)
    ):
        _fail("softcap", repr(softcap), "None or a positive finite float")
    if sinks is not None:
        sinks = _check_tensor("sinks", sinks)
        if not sinks.is_floating_point() or tuple(sinks.shape) != (H,):
            _fail("sinks", f"{sinks.dtype} tensor of shape {list(sinks.shape)}", f"a float tensor of shape [{H}]")

    # layout fields
    for attr in (
        "block_size",
        "q_len",
        "kv_len",
        "num_heads",
        "layout_heads",
        "row_ptr",
        "col_idx",
        "mask_id",
        "masks",
        "q_offset",
    ):
        if not hasattr(layout, attr):
            _fail("layout", type(layout).__name__, f"a BlockLayout (missing attribute {attr!r})")
    bs = layout.block_size
    if isinstance(bs, bool) or not isinstance(bs, int) or not 1 <= bs <= 1024:
        _fail("layout.block_size", repr(bs), "an int in [1, 1024]")
    if layout.num_heads != H:
        _fail("layout.num_heads", layout.num_heads, f"the {H} heads of q")
    if layout.q_len != Lq:
        _fail("layout.q_len", layout.q_len, f"the query length of q ({Lq})")
    if layout.kv_len != Lk:
        _fail("layout.kv_len", layout.kv_len, f"the key length of k ({Lk})")
    Hl = layout.layout_heads
    if Hl not in (1, H):
        _fail("layout.layout_heads", Hl, f"1 or num_heads ({H})")
    nq = (Lq + bs - 1) // bs  # as LayoutPrefix computes it, so that a traced length needs no guard
    row_ptr = _check_tensor("layout.row_ptr", layout.row_ptr)
    col_idx = _check_tensor("layout.col_idx", layout.col_idx)
    mask_id = _check_tensor("layout.mask_id", layout.mask_id)
    for name, t in (("layout.row_ptr", row_ptr), ("layout.col_idx", col_idx), ("layout.mask_id", mask_id)):
        if t.dtype != torch.int64:
            _fail(name, f"dtype {t.dtype}", "int64")
        if t.dim() != 1:
            _fail(name, f"shape {list(t.shape)}", "a 1-D tensor")
    if row_ptr.numel() != Hl * nq + 1:
        _fail(
            "layout.row_ptr", f"{row_ptr.numel()} entries", f"layout_heads * nq + 1 = {Hl} * {nq} + 1 = {Hl * nq + 1}"
        )
    nnz = col_idx.numel()
    if mask_id.numel() != nnz:
        _fail("layout.mask_id", f"{mask_id.numel()} entries", f"nnz = len(col_idx) = {nnz}")
    masks = layout.masks
    if masks is None:
        masks = torch.zeros((0, bs, bs), dtype=torch.bool)
    masks = _check_tensor("layout.masks", masks)
    if masks.dtype != torch.bool:
        _fail("layout.masks", f"dtype {masks.dtype}", "bool")
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (bs, bs):
        _fail("layout.masks", f"shape {list(masks.shape)}", f"[P, {bs}, {bs}]")
    log_weight = _float64_or_none("layout.log_weight", getattr(layout, "log_weight", None), (nnz,))
    slopes = _float64_or_none("layout.slopes", getattr(layout, "slopes", None), (H,))
    q_offset = layout.q_offset
    if isinstance(q_offset, Tensor):
        q_offset = int(q_offset)
    if isinstance(q_offset, bool) or not isinstance(q_offset, int):
        _fail("layout.q_offset", repr(q_offset), "an int")

    if key_padding_mask is not None:
        key_padding_mask = _check_tensor("key_padding_mask", key_padding_mask)
        if key_padding_mask.dtype != torch.bool:
            _fail("key_padding_mask", f"dtype {key_padding_mask.dtype}", "bool (True = keep)")
        if tuple(key_padding_mask.shape) != (B, Lk):
            _fail("key_padding_mask", f"shape {list(key_padding_mask.shape)}", f"[{B}, {Lk}]")
        key_padding_mask = key_padding_mask.contiguous()

    out, lse = ops.block_sparse_attention(
        q,
        k,
        v,
        row_ptr.contiguous(),
        col_idx.contiguous(),
        mask_id.contiguous(),
        masks.contiguous(),
        log_weight,
        slopes,
        key_padding_mask,
        int(bs),
        int(Hl),
        int(q_offset),
        float(scale),
        None if softcap is None else float(softcap),
    )
    if sinks is None:
        return out
    keep = torch.sigmoid(lse - sinks.to(lse.dtype)[:, None])  # [B, H, Lq]: 0 on rows with lse = -inf
    return (out * keep[..., None]).to(out.dtype)
