"""StridedSample: which pairs it keeps (brute force from the docstring), with which weight, and
that the weight makes the output an estimate of attention over every candidate key."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P

from . import definitions as D


def _tiles(keep: np.ndarray, lq: int, lk: int, bs: int) -> np.ndarray:
    """``bool [nq, nk]``: whether ``keep [lq, lk]`` holds a pair in each tile."""
    nq, nk = -(-lq // bs), -(-lk // bs)
    out = np.zeros((nq, nk), dtype=bool)
    for a in range(nq):
        for b in range(nk):
            out[a, b] = keep[a * bs : (a + 1) * bs, b * bs : (b + 1) * bs].any()
    return out


@given(
    st.integers(1, 90), st.integers(1, 90), st.sampled_from([16, 32]), st.integers(-20, 40), st.booleans(),
    st.integers(0, 2), st.integers(1, 7),
)  # fmt: skip
def test_keeps_every_stride_th_key_of_the_empty_tiles(lq, lk, bs, off, causal, w, stride):
    heads = 3
    window = D.dense(lq, lk, off, D.sliding(w, w, bs))
    allowed = D.dense(lq, lk, off, D.causal if causal else lambda p, j: True)
    cand = _tiles(allowed, lq, lk, bs) & ~_tiles(window & allowed, lq, lk, bs)  # [nq, nk]
    layout = (P.SlidingWindow(w, unit="block") | P.StridedSample(stride)).compile(
        q_len=lq, kv_len=lk, num_heads=heads, block_size=bs, causal=causal, q_offset=off
    )
    got, bias = layout.to_dense_mask().numpy(), layout.to_dense_bias(torch.float64).numpy()
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    in_cand = cand[i // bs, j // bs]
    for h in range(heads):
        sampled = in_cand & ((i + off - j - h) % stride == 0) & allowed
        np.testing.assert_array_equal(got[h if got.shape[0] > 1 else 0], (window & allowed) | sampled)
        want_bias = np.where(sampled, math.log(stride), 0.0)
        np.testing.assert_allclose(np.where(got[h], bias[h if bias.shape[0] > 1 else 0], 0.0), want_bias)


def test_alone_keeps_a_stride_th_of_the_pairs_and_heads_shift():
    layout = P.StridedSample(4).compile(q_len=64, num_heads=4, block_size=16)
    mask = layout.to_dense_mask()  # [4, 64, 64]
    assert layout.density == pytest.approx(0.25)
    assert (mask.sum(0) == 1).all()  # the four heads' offsets partition the pairs


def test_reweight_off_and_stride_one():
    off = (P.BlockLocal() | P.StridedSample(3, reweight=False)).compile(q_len=64, num_heads=2, block_size=16)
    assert off.log_weight is None
    one = (P.BlockLocal() | P.StridedSample(1)).compile(q_len=64, num_heads=2, block_size=16)
    assert one.log_weight is None and one.density == 1.0


def test_reweighting_estimates_attention_over_the_candidates():
    """Far keys carry most of the mass; the re-weighted output is far closer to full attention
    than the same keys without the weight (which over-weights the window)."""
    torch.manual_seed(0)
    lq, d, bs = 512, 16, 32
    q = torch.randn(1, 2, lq, d, dtype=torch.float64)
    k = torch.randn(1, 2, lq, d, dtype=torch.float64) * 0.3
    v = torch.randn(1, 2, lq, d, dtype=torch.float64) * 0.5 + 1.0
    v[..., : lq // 2, :] += 2.0
    full = sf.sparse_attention(q, k, v, P.Dense().compile(q_len=lq, num_heads=2, block_size=bs), backend="reference")

    def err(reweight):
        layout = (P.BlockLocal() | P.StridedSample(5, reweight=reweight)).compile(q_len=lq, num_heads=2, block_size=bs)
        return ((sf.sparse_attention(q, k, v, layout, backend="gather") - full).norm() / full.norm()).item()

    assert err(True) < 0.05 and err(True) < 0.5 * err(False), (err(True), err(False))


def test_bad_arguments():
    with pytest.raises(ValueError, match="stride must be >= 1"):
        P.StridedSample(0)
    with pytest.raises(TypeError, match="stride must be an int"):
        P.StridedSample(2.5)
