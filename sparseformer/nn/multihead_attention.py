"""``SparseMultiheadAttention``: ``nn.MultiheadAttention`` with a sparse pattern."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import pattern_attention
from ..kernels.reference import reference_attention
from ..patterns.base import Pattern


def keep_mask(mask: torch.Tensor | None, name: str) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s key padding mask (bool True = pad, or float additive with
    0 / -inf) as our keep mask (bool True = keep)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return ~mask
    if mask.is_floating_point():
        finite = torch.isfinite(mask)
        if bool((finite & (mask != 0)).any()) or bool((mask[~finite] > 0).any()):
            raise ValueError(f"{name} as a float mask must hold only 0 (keep) and -inf (drop)")
        return finite
    raise TypeError(f"{name} must be a bool or float tensor, got {mask.dtype}")


def causal_from_mask(attn_mask: torch.Tensor | None, is_causal: bool, length: int) -> bool:
    """Whether ``attn_mask`` is exactly the causal mask (then the pattern is compiled causal);
    any other dense mask would defeat sparsity and is refused."""
    if attn_mask is None:
        return bool(is_causal)
    if attn_mask.shape[-2:] == (length, length) and attn_mask.dim() == 2:
        upper = torch.ones(length, length, dtype=torch.bool, device=attn_mask.device).triu(1)
        drop = attn_mask if attn_mask.dtype == torch.bool else torch.isneginf(attn_mask)
        kept_zero = attn_mask.dtype == torch.bool or bool((attn_mask[~drop] == 0).all())
        if kept_zero and torch.equal(drop, upper):
            return True
    raise ValueError(
        "attn_mask must be None or the causal mask: an arbitrary dense mask would make attention "
        "O(L^2); express it as a pattern (sparseformer.patterns) instead"
    )


class SparseMultiheadAttention(nn.Module):
    """Accepts ``nn.MultiheadAttention``'s constructor and call arguments, plus ``pattern``.

    Parameters have ``nn.MultiheadAttention``'s names (``in_proj_weight``, ``in_proj_bias`` or
    ``q/k/v_proj_weight``, ``out_proj``), so its state dict loads. The layout is compiled per
    input length (cached). ``need_weights`` defaults to False here; when True the weights are
    computed densely (O(L²)) from the layout, for inspection. ``add_bias_kv`` and
    ``add_zero_attn`` are not supported (they append keys outside any pattern).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        pattern: Pattern,
        block_size: int = 64,
        causal: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(pattern, Pattern):
            raise TypeError(f"pattern must be a sparseformer Pattern, got {type(pattern).__name__}")
        if add_bias_kv or add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported by sparse attention; got True")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.pattern, self.block_size, self.causal, self.backend = pattern, block_size, causal, backend
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw)) if bias else None
        if not bias:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The same initialisation as nn.MultiheadAttention.
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query, key, value, self_attention: bool):
        e = self.embed_dim
        if self._qkv_same_embed_dim and self_attention:
            # Self-attention: one linear on the packed weight (a constant weight for exporters,
            # so XNNPACK and ONNX Runtime's quantizer take it whole), then split the output.
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).split(e, dim=-1)
        b = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.split(e)
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight.split(e)
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return F.linear(query, w[0], b[0]), F.linear(key, w[1], b[1]), F.linear(value, w[2], b[2])

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        self_attention = query is key and key is value
        if unbatched:  # [L, E]
            query, key, value = query[None], key[None], value[None]
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        elif not self.batch_first:  # [L, B, E] -> [B, L, E]
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"query must be [L, E], [L, B, E] or [B, L, E] with E={self.embed_dim}, got {tuple(query.shape)}"
            )
        bsz, lq, _ = query.shape
        lk = key.shape[1]
        causal = self.causal or causal_from_mask(attn_mask, is_causal, lq)
        keep = keep_mask(key_padding_mask, "key_padding_mask")
        q, k, v = self._project(query, key, value, self_attention)
        h, d = self.num_heads, self.head_dim
        q, k, v = (x.view(bsz, -1, h, d).transpose(1, 2) for x in (q, k, v))  # [B, H, L, d]
        p = self.dropout if self.training else 0.0
        out = pattern_attention(
            q, k, v, self.pattern, block_size=self.block_size, causal=causal, key_padding_mask=keep, dropout_p=p,
            backend=self.backend,
        )  # fmt: skip
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, lq, self.embed_dim))
        weights = None
        if need_weights:
            eye = torch.eye(lk, dtype=q.dtype, device=q.device).expand(bsz, h, lk, lk)
            layout = self.pattern.compile(q_len=lq, num_heads=h, block_size=self.block_size, kv_len=lk, causal=causal)
            weights = reference_attention(q, k, eye, layout, key_padding_mask=keep, scale=d**-0.5)  # [B, H, Lq, Lk]
            weights = weights.mean(1) if average_attn_weights else weights
            if unbatched:
                weights = weights[0]
        if unbatched:
            return out[0], weights
        return (out if self.batch_first else out.transpose(0, 1)), weights
