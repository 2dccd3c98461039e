"""sparse_attention refuses bad input with a message that names the argument."""

from __future__ import annotations

import pytest
import torch

import sparseformer as sf
from sparseformer import patterns as P

LAYOUT = P.BlockLocal().compile(q_len=40, num_heads=4, block_size=16)


def args(**over):
    a = dict(
        q=torch.randn(2, 4, 40, 8),
        k=torch.randn(2, 2, 40, 8),
        v=torch.randn(2, 2, 40, 8),
        layout=LAYOUT,
    )
    a.update(over)
    return a


@pytest.mark.parametrize(
    "over,exc,text",
    [
        (dict(q=torch.randn(4, 40, 8)), ValueError, r"q must have 4 dims \[B, H, L, D\], got shape \(4, 40, 8\)"),
        (dict(q=torch.randint(0, 3, (2, 4, 40, 8))), TypeError, "q must be a floating-point tensor"),
        (dict(q=[1, 2]), TypeError, "q must be a torch.Tensor, got list"),
        (dict(k=torch.randn(2, 2, 40, 8, dtype=torch.float64)), TypeError, "share one dtype"),
        (
            dict(k=torch.randn(2, 3, 40, 8), v=torch.randn(2, 3, 40, 8)),
            ValueError,
            r"multiple of key/value heads \(3\)",
        ),
        (dict(k=torch.randn(2, 2, 40, 6)), ValueError, "head dim must equal q's"),
        (dict(v=torch.randn(2, 2, 39, 8)), ValueError, "k and v must agree"),
        (dict(k=torch.randn(1, 2, 40, 8)), ValueError, "batch sizes differ"),
        (dict(q=torch.randn(2, 4, 41, 8)), ValueError, r"compiled for \(num_heads, q_len, kv_len\) = \(4, 40, 40\)"),
        (dict(q=torch.randn(2, 8, 40, 8)), ValueError, "compiled for"),
        (dict(layout=P.BlockLocal()), TypeError, "call pattern.compile"),
        (dict(key_padding_mask=torch.ones(2, 40)), TypeError, "key_padding_mask must be a bool tensor"),
        (
            dict(key_padding_mask=torch.ones(2, 39, dtype=torch.bool)),
            ValueError,
            r"key_padding_mask must have shape \[B, Lk\]",
        ),
        (dict(dropout_p=1.0), ValueError, r"dropout_p must be a float in \[0, 1\)"),
        (dict(scale=0.0), ValueError, "scale must be a positive"),
        (dict(backend="fast"), ValueError, "backend must be one of"),
    ],
)
def test_bad_input(over, exc, text):
    a = args(**over)
    with pytest.raises(exc, match=text):
        sf.sparse_attention(a.pop("q"), a.pop("k"), a.pop("v"), a.pop("layout"), **a)


def test_meta_device_mismatch():
    with pytest.raises(ValueError, match="one device"):
        sf.sparse_attention(
            torch.randn(2, 4, 40, 8), torch.randn(2, 2, 40, 8, device="meta"), torch.randn(2, 2, 40, 8), LAYOUT
        )
