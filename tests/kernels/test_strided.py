"""The band + StridedSample path (queries grouped by residue) against the dense reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P

from .test_band import assert_gather_matches_reference_with_gradients, band_patterns, band_problems


@st.composite
def strided_patterns(draw):
    """A band pattern | a StridedSample."""
    return draw(band_patterns()) | P.StridedSample(draw(st.integers(1, 7)), reweight=draw(st.booleans()))


def strided_problems(max_len: int = 90):
    """(q, k, v, layout, key_padding_mask), float64, self-attention, a band pattern | StridedSample."""
    return band_problems(max_len, strided_patterns())


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
    assert_gather_matches_reference_with_gradients(case)


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
