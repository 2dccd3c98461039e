"""The workload: an encoder of MiniLM's shape fed with real text.

Every strategy runs the same weights. The dense baseline is :class:`SDPAEncoderLayer`:
PyTorch's ``nn.TransformerEncoderLayer`` (post-norm, GELU, batch_first, dropout 0, eval mode)
with its self-attention computed by ``F.scaled_dot_product_attention`` (PyTorch's fused
attention kernels). Each sparse model is a stack of ``sf.nn.SparseTransformerEncoderLayer``
that loads the baseline's state dict.

The input is real English: the bytes of ``pydoc_data.topics`` (CPython's help texts), each byte
mapped by a fixed random embedding (seed 0, std 1) plus sinusoidal positions, ``[1, L, hidden]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import SparseTransformerEncoderLayer
from ..patterns.base import Pattern


@dataclass(frozen=True)
class Workload:
    layers: int = 6
    heads: int = 12
    head_dim: int = 32
    batch: int = 1
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "auto"
    seed: int = 0

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": self.hidden, "ffn": 4 * self.hidden}


DTYPES = ("float32", "bfloat16", "float16", "float64")


def _layer_args(w: Workload) -> dict:
    return {
        "d_model": w.hidden,
        "nhead": w.heads,
        "dim_feedforward": 4 * w.hidden,
        "dropout": 0.0,
        "activation": "gelu",
        "batch_first": True,
        "device": w.device,
        "dtype": w.torch_dtype,
    }


class SDPAEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (same arguments, same state dict) whose self-attention calls
    ``F.scaled_dot_product_attention``. The stock layer's inference fast path computes attention
    on CPU with ``bmm`` and ``softmax`` over the whole ``L x L`` score matrix, which is slower than
    PyTorch's best dense attention and so too easy a baseline."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.activation_relu_or_gelu = 0  # what the stock forward tests to stay off its fast path

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or key_padding_mask is not None:
            raise ValueError("SDPAEncoderLayer (the benchmark's dense baseline) takes no masks")
        b, length, e = x.shape
        a = self.self_attn
        h = a.num_heads
        qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias).view(b, length, 3, h, e // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=is_causal)  # [B, H, L, D]
        return self.dropout1(a.out_proj(out.transpose(1, 2).reshape(b, length, e)))


def dense_model(w: Workload) -> nn.Sequential:
    """The baseline: ``w.layers`` of :class:`SDPAEncoderLayer`, random weights from ``w.seed``."""
    torch.manual_seed(w.seed)
    return nn.Sequential(*[SDPAEncoderLayer(**_layer_args(w)) for _ in range(w.layers)]).eval()


def sparse_model(w: Workload, dense: nn.Sequential, patterns: list[Pattern | None], block_size: int) -> nn.Sequential:
    """The same weights as ``dense``, layer ``i``'s attention restricted to ``patterns[i]`` (None:
    that layer stays a dense :class:`SDPAEncoderLayer`)."""
    if len(patterns) != w.layers:
        raise ValueError(f"patterns must give one pattern per layer ({w.layers}), got {len(patterns)}")
    layers = [
        SDPAEncoderLayer(**_layer_args(w))
        if p is None
        else SparseTransformerEncoderLayer(**_layer_args(w), pattern=p, block_size=block_size, backend=w.backend)
        for p in patterns
    ]
    model = nn.Sequential(*layers).eval()
    model.load_state_dict(dense.state_dict())
    return model


def text_bytes(length: int) -> torch.Tensor:
    """The first ``length`` bytes of CPython's help topics (repeated if ever too short), ``int64 [length]``."""
    from pydoc_data.topics import topics

    data = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    data = data * (length // len(data) + 1)
    return torch.tensor(list(data[:length]), dtype=torch.int64)


def text_input(w: Workload, length: int) -> torch.Tensor:
    """Real text as encoder input, ``[batch, length, hidden]`` (batch row ``b`` starts ``b * length`` bytes in)."""
    gen = torch.Generator().manual_seed(w.seed + 1)
    table = torch.randn(256, w.hidden, generator=gen)  # the fixed byte embedding
    ids = text_bytes(w.batch * length).view(w.batch, length)
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, w.hidden, 2, dtype=torch.float64) / w.hidden)
    pe = torch.zeros(length, w.hidden, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : w.hidden // 2]
    return (table[ids] + pe.float()).to(w.device, w.torch_dtype)
