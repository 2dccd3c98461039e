"""Causal block layouts on ONNX Runtime's com.microsoft.SparseAttention, against the dense reference."""

import pytest
import torch

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.export.ort_sparse import OrtSparseAttention, ort_block_csr

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize(
    "pattern",
    [
        P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
        P.PerHead([P.BlockLocal(), P.SlidingWindow(2, unit="block")] * 2),
    ],
)
def test_parity(pattern, rng_length):
    h, d = 4, 16
    layout = pattern.compile(q_len=rng_length, num_heads=h, block_size=16, causal=True)
    attn = OrtSparseAttention(layout, d, batch=2)
    q, k, v = (torch.randn(2, h, rng_length, d) for _ in range(3))
    ref = sf.sparse_attention(q.double(), k.double(), v.double(), layout, backend="reference").float()
    torch.testing.assert_close(attn(q, k, v), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "layout",
    [
        P.SlidingWindow(1, unit="block").compile(q_len=64, num_heads=2, block_size=16),  # not causal
        P.SlidingWindow(20, right=0).compile(q_len=64, num_heads=2, block_size=16, causal=True),  # token window
        P.DistanceDecay(0.1).compile(q_len=64, num_heads=2, block_size=16, causal=True),  # score terms
    ],
)
def test_unmappable_layouts_are_refused(layout):
    with pytest.raises(ValueError, match="SparseAttention|block mask"):
        ort_block_csr(layout)
