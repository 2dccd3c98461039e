"""``flex`` backend: PyTorch's FlexAttention over a :class:`~sparseformer.layout.BlockLayout`.

``torch.nn.attention.flex_attention`` visits only the key tiles of the layout's ``BlockMask``
(:meth:`~sparseformer.layout.BlockLayout.to_block_mask`; per head when the layout is per head,
with a batch dimension when there is key padding), evaluates the element masks of partial tiles
in its ``mask_mod`` and adds the score terms in a ``score_mod``. On CUDA its tiles are at least
128 tokens (``MIN_BLOCK``): a layout with smaller blocks is visited in groups of its tiles (a
group is visited if one of its tiles is; the pairs stay exactly the layout's). Scores:

    s_ij = softcap(scale * <q_i, k_j>) - slopes[h] * |i + q_offset - j| + log_weight[tile(i, j)]

with ``softcap(x) = c * tanh(x / c)`` when ``softcap = c`` is given. Sinks use the returned
logsumexp: ``out * sigmoid(lse_i - sinks[h])`` (rows with no key: ``lse = -inf``, output 0).

FlexAttention is fast only when compiled; uncompiled it runs an O(L²) reference. This backend
always calls it through one ``torch.compile(fullgraph=True, dynamic=False)`` callable, on inputs
zero-padded to a shape bucket: the layout's tile grid grown to a power of two of FlexAttention
tiles each way (``padded=True`` of :meth:`~sparseformer.layout.BlockLayout.to_block_mask`; the
padded keys are masked, the padded queries' rows dropped). Dynamo caches one graph per bucket and
layout structure, so lengths 1025 to 2048 at 128-token tiles share one compilation; hitting the
recompile limit raises instead of falling back to eager. (Not automatic dynamic shapes: torch
2.13's CPU FlexAttention template fails to compile some of them, ``cur_kvSplitSize0``
undeclared.) Whatever FlexAttention cannot compile here raises a ``ValueError``, never an eager
run. Limits of torch 2.13 on the CPU: forward only (no backward, no logsumexp, so no ``sinks``),
float32/bfloat16/float16, x86 with AVX2.
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F

from ..layout import BlockLayout

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_RECOMPILE_LIMIT = 64  # compiled graphs kept for this backend's call site (shapes x layout structures)
# Smallest FlexAttention tile per device type: the CUDA kernels' tiles (up to 128 in the forward and
# backward defaults of torch 2.13) must divide it. Smaller layout blocks are grouped (see to_block_mask).
MIN_BLOCK = {"cuda": 128}


def unavailable_reason(device: torch.device) -> str | None:
    """Why compiled FlexAttention cannot run on ``device`` here, or None when it can."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError as e:
        return f"torch {torch.__version__} has no FlexAttention ({e})"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "FlexAttention on CUDA compiles with Triton, which is not installed"
    if device.type == "cpu":
        if sys.platform == "darwin" or not torch.cpu._is_avx2_supported():
            return "FlexAttention compiles on the CPU only for x86 with AVX2 (not macOS)"
        return None
    return f"FlexAttention is not supported here on {device.type} tensors"


def _flex_call(q, k, v, block_mask, score_mod, scale: float, enable_gqa: bool, with_lse: bool):
    """The one call site that gets compiled: FlexAttention, with its logsumexp when asked."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    aux = AuxRequest(lse=True) if with_lse else None
    return flex_attention(
        q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa, return_aux=aux
    )


@functools.cache
def _compiled():
    return torch.compile(_flex_call, fullgraph=True, dynamic=False)


def _score_mod(layout: BlockLayout, device: torch.device, block: int, softcap: float | None):
    """The layout's score terms (on the padded grid) after soft-capping, or None when there is
    nothing to add."""
    terms = layout.flex_score_mod(device, block, padded=True)
    if softcap is None:
        return terms

    def score_mod(score, b, h, q_idx, kv_idx):
        score = softcap * torch.tanh(score / softcap)
        return score if terms is None else terms(score, b, h, q_idx, kv_idx)

    return score_mod


def _run(q, k, v, block_mask, score_mod, scale: float, enable_gqa: bool, with_lse: bool):
    """The compiled call; compile failures and the recompile limit become a ValueError."""
    if torch.compiler.is_compiling():  # inside the caller's own torch.compile: it compiles this too
        return _flex_call(q, k, v, block_mask, score_mod, scale, enable_gqa, with_lse)
    limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    try:
        with torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True, suppress_errors=False):
            return _compiled()(q, k, v, block_mask, score_mod, scale, enable_gqa, with_lse)
    except (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"backend='flex': FlexAttention could not be compiled for q {tuple(q.shape)} {q.dtype} on {q.device} "
            f"({type(e).__name__}: {first}); it is never run uncompiled (O(L^2)): use backend='gather' or 'auto'"
        ) from e


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """``t [B, H, L, D]`` zero-padded to ``length`` rows (no copy when it has them)."""
    return t if t.shape[2] == length else F.pad(t, (0, 0, 0, length - t.shape[2]))


def flex_sparse_attention(
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
    """Compiled FlexAttention over ``layout``; arguments as :func:`sparseformer.sparse_attention`
    (which checks them). Raises ``ValueError`` for dropout (FlexAttention has none), and for what
    compiled FlexAttention cannot do on this device (see the module docstring)."""
    if dropout_p > 0:
        raise ValueError(f"backend='flex' has no dropout (FlexAttention has none), got dropout_p={dropout_p}")
    why = unavailable_reason(q.device)
    if why is not None:
        raise ValueError(f"backend='flex' is not available: {why}; use backend='gather' or 'auto'")
    if q.dtype not in DTYPES:
        raise ValueError(f"backend='flex' takes q, k, v in float32, bfloat16 or float16, got {q.dtype}")
    if q.device.type == "cpu":
        leaves = [t for t in (q, k, v, sinks) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
            raise ValueError(
                "backend='flex' on the CPU is inference only (torch compiles no FlexAttention backward for the "
                "CPU): call it under torch.no_grad(), or train with backend='cpu' or 'gather'"
            )
        if sinks is not None:
            raise ValueError(
                "backend='flex' needs FlexAttention's logsumexp for sinks, which torch compiles only on CUDA; "
                "use backend='cpu' or 'gather' for sinks on the CPU"
            )
    block = max(layout.block_size, MIN_BLOCK.get(q.device.type, 0))
    block_mask = layout.to_block_mask(q.device, key_padding_mask, block, padded=True)
    score_mod = _score_mod(layout, q.device, block, softcap)
    enable_gqa = k.shape[1] != q.shape[1]
    lq, (pq, pk) = q.shape[2], block_mask.seq_lengths  # the bucket's lengths
    q, k, v = _pad(q, pq), _pad(k, pk), _pad(v, pk)  # [B, H, pq, D], [B, Hk, pk, D]
    if sinks is None:
        return _run(q, k, v, block_mask, score_mod, scale, enable_gqa, False)[:, :, :lq]
    out, aux = _run(q, k, v, block_mask, score_mod, scale, enable_gqa, True)
    keep = torch.sigmoid(aux.lse[:, :, :lq] - sinks.to(aux.lse.dtype)[:, None])  # [B, H, Lq]: 0 where lse = -inf
    return (out[:, :, :lq] * keep[..., None]).to(out.dtype)
