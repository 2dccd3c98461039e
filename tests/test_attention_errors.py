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
        (dict(softcap=0.0), ValueError, "softcap must be a positive finite float or None, got 0.0"),
        (dict(softcap=-2.0), ValueError, "softcap must be a positive"),
        (dict(softcap=float("nan")), ValueError, "softcap must be a positive finite float or None, got nan"),
        (dict(softcap=float("inf")), ValueError, "softcap must be a positive finite float or None, got inf"),
        (dict(softcap="50"), TypeError, "softcap must be a positive finite float or None, got str"),
        (dict(softcap=True), TypeError, "softcap must be .* got bool"),
        (dict(softcap=torch.tensor(50.0)), TypeError, "softcap must be .* got Tensor"),
        (dict(sinks=torch.zeros(2)), ValueError, r"sinks must have shape \[H\] = \(4,\) .* got \(2,\)"),
        (dict(sinks=torch.zeros(1, 4)), ValueError, r"sinks must have shape \[H\] = \(4,\)"),
        (
            dict(sinks=torch.zeros(4, dtype=torch.int64)),
            TypeError,
            "sinks must be a floating-point tensor .* got dtype torch.int64",
        ),
        (dict(sinks=[0.0] * 4), TypeError, r"sinks must be a floating-point tensor \[H\] .* got list"),
        (dict(sinks=torch.zeros(4, device="meta")), ValueError, "sinks must be on cpu like q, got meta"),
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


@pytest.mark.parametrize("over", [dict(softcap=0.0), dict(sinks=torch.zeros(3)), dict(softcap="1")])
def test_pattern_attention_checks_softcap_and_sinks(over):
    q = torch.randn(1, 4, 40, 8)
    with pytest.raises((ValueError, TypeError), match="softcap|sinks"):
        sf.pattern_attention(q, q, q, P.SlidingWindow(4), backend="gather", **over)
