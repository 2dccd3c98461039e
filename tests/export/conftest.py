"""Small sparse models shared by the export tests (fresh random weights and inputs)."""

import pytest
import torch
from torch import nn

import sparseformer as sf
from sparseformer import patterns as P

PATTERN = P.SlidingWindow(1, unit="block") | P.Global(blocks=1)


def encoder(seed: int, layers: int = 2, d: int = 32, heads: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    layer = sf.nn.SparseTransformerEncoderLayer(
        d, heads, 2 * d, dropout=0.0, batch_first=True, pattern=PATTERN, block_size=16
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


def causal_lm(seed: int, layers: int = 2) -> sf.nn.SparseCausalLM:
    torch.manual_seed(seed)
    cfg = sf.nn.CausalLMConfig(
        d_model=32, n_layers=layers, n_heads=4, block_size=16, pattern=P.SlidingWindow(20, right=0) | P.Global(tokens=2)
    )
    return sf.nn.SparseCausalLM(cfg).eval()


@pytest.fixture
def rng_length():
    """A length that is not a multiple of the block size, drawn afresh per test."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    return int(torch.randint(33, 120, (), generator=g)) | 1


# Layouts that use every input and attribute of the custom ops (the ONNX Runtime and ExecuTorch
# front-ends): partial tiles (token windows, causal), random blocks (log_weight), per-head decays
# (slopes), per-head layouts, q_offset (Lq < Lk), grouped-query heads, key padding, soft-capping.
OP_CASES = [
    dict(pattern=P.SlidingWindow(1, unit="block") | P.Global(blocks=1), heads=4, kv_heads=4, causal=False),
    dict(pattern=P.SlidingWindow(21) | P.RandomBlocks(2, seed=3), heads=4, kv_heads=2, causal=False),
    dict(pattern=P.DistanceDecay([0.05, 0.1, 0.2, 0.4], eps=1e-3), heads=4, kv_heads=1, causal=True, softcap=5.0),
    dict(pattern=P.PerHead(P.BlockLocal(), P.SlidingWindow(9, right=0)), heads=2, kv_heads=2, causal=True, q_less=True),
]
