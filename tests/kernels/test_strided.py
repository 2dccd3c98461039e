"""The band + StridedSample path (queries grouped by residue) against the dense reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P

from .test_band import band_patterns


@st.composite
def strided_problems(draw, max_len: int = 90):
    """(q, k, v, layout, key_padding_mask), float64, self-attention, a band pattern | StridedSample."""
    length = draw(st.integers(1, max_len))
    h, hk = 4, draw(st.sampled_from([1, 2, 4]))
    d, dv, b = draw(st.sampled_from([8, 16])), draw(st.sampled_from([8, 5])), draw(st.integers(1, 2))
    sample = P.StridedSample(draw(st.integers(1, 7)), reweight=draw(st.booleans()))
    layout = (draw(band_patterns()) | sample).compile(
        q_len=length, num_heads=h, block_size=draw(st.sampled_from([16, 32])), causal=draw(st.booleans())
    )
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(b, h, length, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, length, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, length, dv, generator=g, dtype=torch.float64)
    kpm = None
    if draw(st.booleans()):
        kpm = torch.rand(b, length, generator=g) > 0.3
        kpm[-1, : draw(st.integers(0, length))] = False  # padded prefixes, up to a fully padded row
    return q, k, v, layout, kpm


@given(strided_problems())
def test_float64_matches_reference(case):
    q, k, v, layout, kpm = case
    assert layout.strided is not None, layout.pattern
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="gather")
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@given(strided_problems(max_len=50))
def test_float32_and_gradients_match_reference(case):
    q, k, v, layout, kpm = case
    grads = []
    for backend, dtype in (("reference", torch.float64), ("gather", torch.float64), ("gather", torch.float32)):
        qq, kk, vv = (t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v))
        out = sf.sparse_attention(qq, kk, vv, layout, key_padding_mask=kpm, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        grads.append([out.detach(), qq.grad, kk.grad, vv.grad])
    for ref, f64, f32 in zip(*grads):
        assert not f64.isnan().any()
        torch.testing.assert_close(f64, ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(f32.double(), ref, rtol=1e-4, atol=1e-5)


def test_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    pattern = P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.StridedSample(3)
    layout = pattern.compile(q_len=70, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 70, 8, dtype=torch.float64).expand(3000, -1, -1, -1) for _ in range(3))
    want = sf.sparse_attention(q[:1], k[:1], v[:1], layout, backend="reference")
    got = sf.sparse_attention(q, k, v, layout, dropout_p=0.3, backend="gather").mean(0, keepdim=True)
    assert (got - want).abs().max() < 0.1


@pytest.mark.parametrize(
    "pattern",
    [
        P.BlockLocal() | P.RandomBlocks(1) | P.StridedSample(3),  # the rest is not a band
        P.StridedSample(3),  # nothing but the sample
        P.BlockLocal() | P.StridedSample(3) | P.StridedSample(5),
    ],
)
def test_other_layouts_take_the_tile_path(pattern):
    layout = pattern.compile(q_len=64, num_heads=2, block_size=16)
    assert layout.strided is None
    q, k, v = (torch.randn(1, 2, 64, 8, dtype=torch.float64) for _ in range(3))
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(sf.sparse_attention(q, k, v, layout, backend="gather"), want, rtol=0, atol=1e-10)


def test_needs_self_attention():
    pattern = P.BlockLocal() | P.StridedSample(3)
    assert pattern.compile(q_len=32, kv_len=64, num_heads=2, block_size=16).strided is None
    assert pattern.compile(q_len=64, num_heads=2, block_size=16).strided is not None
