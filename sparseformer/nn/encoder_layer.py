"""``SparseTransformerEncoderLayer``: ``nn.TransformerEncoderLayer`` with sparse self-attention."""

from __future__ import annotations

import torch
from torch import nn

from ..patterns.base import Pattern
from .multihead_attention import SparseMultiheadAttention


class SparseTransformerEncoderLayer(nn.TransformerEncoderLayer):
    """Takes ``nn.TransformerEncoderLayer``'s arguments plus ``pattern`` (and ``block_size``,
    ``causal``, ``backend``); its state dict is the dense layer's, so a trained dense layer loads
    into it. Works inside ``nn.TransformerEncoder``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        pattern: Pattern,
        block_size: int = 64,
        causal: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation,
            layer_norm_eps,
            batch_first,
            norm_first,
            bias,
            device,
            dtype,
        )
        self.self_attn = SparseMultiheadAttention(
            d_model,
            nhead,
            dropout=dropout,
            bias=bias,
            batch_first=batch_first,
            device=device,
            dtype=dtype,
            pattern=pattern,
            block_size=block_size,
            causal=causal,
            backend=backend,
        )
        # PyTorch's fused fast paths (this layer's and nn.TransformerEncoder's nested tensors)
        # would run dense attention on our weights; this flag is what both test to stay off.
        self.activation_relu_or_gelu = 0

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x
