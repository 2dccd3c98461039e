"""``SparseCausalLM``: a small decoder-only language model on sparse causal attention.

Byte-level by default (vocabulary 256), rotary position embeddings (RoPE, Su et al. 2021), so
no learned table limits the length, pre-norm blocks as in GPT-2/nanoGPT.

``pattern=None`` gives the dense baseline: the same model with every causal pair attending,
computed by ``F.scaled_dot_product_attention(is_causal=True)`` (what a dense model pays).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import pattern_attention
from ..patterns import Global, SlidingWindow
from ..patterns.base import Pattern


@dataclass(frozen=True)
class CausalLMConfig:
    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    rope_base: float = 10000.0
    block_size: int = 64
    pattern: Pattern | None = field(default_factory=lambda: SlidingWindow(256, right=0) | Global(tokens=4))
    backend: str = "auto"  # the sparse kernel; unused when pattern is None (dense SDPA)


def rotate(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE on ``x [B, H, L, D]`` at integer positions ``pos [L]`` (pairs ``(x[2m], x[2m+1])``)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [D/2]
    ang = pos.to(torch.float32)[:, None] * inv[None, :]  # [L, D/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: CausalLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, E]
        b, length, e = x.shape
        h = self.cfg.n_heads
        q, k, v = (t.view(b, length, h, e // h).transpose(1, 2) for t in self.qkv(x).split(e, dim=-1))
        pos = torch.arange(length, device=x.device)
        q, k = rotate(q, pos, self.cfg.rope_base), rotate(k, pos, self.cfg.rope_base)
        p = self.cfg.dropout if self.training else 0.0
        if self.cfg.pattern is None:  # the dense baseline
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # [B, H, L, d]
        else:
            y = pattern_attention(
                q,
                k,
                v,
                self.cfg.pattern,
                block_size=self.cfg.block_size,
                causal=True,
                dropout_p=p,
                backend=self.cfg.backend,
            )  # [B, H, L, d]
        return self.proj(y.transpose(1, 2).reshape(b, length, e))


class Block(nn.Module):
    def __init__(self, cfg: CausalLMConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SparseCausalLM(nn.Module):
    """``forward(idx [B, L]) -> logits [B, L, vocab]``; ``loss(idx)`` is next-token cross-entropy."""

    def __init__(self, cfg: CausalLMConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = cfg or CausalLMConfig(**overrides)
        if cfg.pattern is not None and not isinstance(cfg.pattern, Pattern):
            raise TypeError(f"pattern must be a sparseformer Pattern or None (dense), got {type(cfg.pattern).__name__}")
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError(f"d_model ({cfg.d_model}) / n_heads ({cfg.n_heads}) must be an even integer")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be an integer tensor [B, L], got {idx.dtype} {tuple(idx.shape)}")
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self(idx[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
