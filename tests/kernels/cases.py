"""Random attention problems shared by the kernel tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from sparseformer import patterns as P

PATTERNS = [
    P.BlockLocal(),
    P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
    P.SlidingWindow(20, right=3) | P.Global(tokens=(0, 5)),
    P.BigBird(num_random_blocks=2, seed=1),
    P.BlockLocal() | P.RandomBlocks(1, seed=3),
    P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.StridedSample(3),
    P.DistanceDecay(0.1, eps=1e-3),
    P.DistanceDecay((0.02, 0.5, 0.1, 1.0)),  # per-head slopes, dense
    P.DistanceDecay(0.3, eps=0.05) | P.Global(tokens=1),
    P.Strided(24),
    P.Fixed(num_local_blocks=2),
    P.Dilated(4, 3),
    P.Dense(),
    P.PerHead(P.BlockLocal(), P.SlidingWindow(9), P.Dense(), P.Strided(8)),
    P.Global(tokens=(3,), horizontal=False),  # most rows see a single key
    P.SlidingWindow(2, right=0) & P.Global(tokens=(40,)),  # most rows see nothing at all
]


@st.composite
def problems(draw, max_len: int = 80):
    """(q, k, v, layout, key_padding_mask) in float64, on fresh random values."""
    lq = draw(st.integers(1, max_len))
    lk = draw(st.integers(1, max_len))
    if draw(st.booleans()):
        lk = lq
    h = 4
    hk = draw(st.sampled_from([1, 2, 4]))
    d = draw(st.sampled_from([8, 16]))
    dv = draw(st.sampled_from([d, 5]))
    b = draw(st.integers(1, 2))
    bs = draw(st.sampled_from([16, 32]))
    causal = draw(st.booleans())
    pattern = draw(st.sampled_from(PATTERNS))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, lk, dv, generator=g, dtype=torch.float64)
    kpm = None
    if draw(st.booleans()):
        kpm = torch.rand(b, lk, generator=g) > 0.3
        if b > 1 and draw(st.booleans()):
            kpm[1] = False  # a fully padded batch row
    layout = pattern.compile(q_len=lq, num_heads=h, block_size=bs, kv_len=lk, causal=causal)
    return q, k, v, layout, kpm
