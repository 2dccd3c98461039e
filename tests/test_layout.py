"""BlockLayout: CSR invariants, sizes, conversions, caching, argument checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparseformer import patterns as P
from sparseformer.layout import flops

from .kernels.cases import PATTERNS


@given(
    st.sampled_from(PATTERNS), st.integers(1, 120), st.integers(1, 120), st.sampled_from([16, 32, 64]), st.booleans()
)
def test_csr_invariants(pattern, lq, lk, bs, causal):
    layout = pattern.compile(q_len=lq, num_heads=4, block_size=bs, kv_len=lk, causal=causal)
    nq, nk = -(-lq // bs), -(-lk // bs)
    assert layout.nq == nq and layout.nk == nk and layout.layout_heads in (1, 4)
    assert layout.row_ptr.shape == (layout.layout_heads * nq + 1,) and layout.row_ptr[0] == 0
    assert (layout.row_ptr[1:] >= layout.row_ptr[:-1]).all() and layout.row_ptr[-1] == layout.nnz
    assert ((layout.col_idx >= 0) & (layout.col_idx < nk)).all()
    for r in range(layout.layout_heads * nq):  # ascending columns within a row
        cols = layout.col_idx[layout.row_ptr[r] : layout.row_ptr[r + 1]]
        assert (cols[1:] > cols[:-1]).all()
    assert ((layout.mask_id >= -1) & (layout.mask_id < layout.masks.shape[0])).all()
    if lk % bs:  # a tile holding padded keys is never full
        assert (layout.mask_id[layout.col_idx == nk - 1] >= 0).all()
    m = layout.masks
    assert m.shape[1:] == (bs, bs) and m.flatten(1).any(-1).all()  # stored masks are never empty
    dense = layout.to_dense_mask()
    assert layout.density == pytest.approx(float(dense.float().mean()))
    # every attending pair lies in a visited tile
    tiles = torch.nn.functional.pad(dense, (0, nk * bs - lk, 0, nq * bs - lq))
    visited = tiles.view(-1, nq, bs, nk, bs).any(2).any(-1)
    assert torch.equal(visited, layout.to_block_states() > 0)


def test_cached_and_sizes():
    p = P.SlidingWindow(1, unit="block")
    assert p.compile(q_len=1000, num_heads=2) is p.compile(q_len=1000, num_heads=2)
    layout = p.compile(q_len=1024, num_heads=8, block_size=128)
    assert layout.visited_tiles == 8 * (3 * 8 - 2)
    assert layout.block_density == pytest.approx(22 / 64)
    assert flops(layout, head_dim=64) == 4.0 * 8 * 22 * 128 * 128 * 64


def test_block_mask_for_flex_attention():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    import sparseformer as sf

    torch.manual_seed(0)
    pattern = P.SlidingWindow(20) | P.Global(tokens=1) | P.RandomBlocks(1) | P.DistanceDecay((0.1, 0.3))
    layout = pattern.compile(q_len=150, num_heads=2, block_size=32, kv_len=130, causal=True)
    bm = layout.to_block_mask()
    assert torch.equal(bm.to_dense()[0].bool(), (layout.to_block_states() > 0).expand(2, -1, -1))
    q, k, v = (torch.randn(1, 2, n, 16) for n in (150, 130, 130))
    ref = sf.sparse_attention(q, k, v, layout, backend="reference")
    out = flex.flex_attention(q, k, v, block_mask=bm, score_mod=layout.flex_score_mod())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,exc,text",
    [
        (dict(q_len=0, num_heads=1), ValueError, "q_len must be >= 1, got 0"),
        (dict(q_len=-5, num_heads=1), ValueError, "q_len"),
        (dict(q_len=10, num_heads=0), ValueError, "num_heads"),
        (dict(q_len=10, num_heads=1, block_size=48), ValueError, "power of two"),
        (dict(q_len=10, num_heads=1, block_size=8), ValueError, "from 16 to 512"),
        (dict(q_len=10, num_heads=1, block_size=1024), ValueError, "from 16 to 512"),
        (dict(q_len=10.0, num_heads=1), TypeError, "q_len must be an int"),
        (dict(q_len=10, num_heads=1, kv_len=0), ValueError, "kv_len"),
        (dict(q_len=10, num_heads=1, causal="yes"), TypeError, "causal"),
    ],
)
def test_compile_argument_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        P.BlockLocal().compile(**kwargs)


@pytest.mark.parametrize(
    "build,exc,text",
    [
        (lambda: P.DistanceDecay(0.0), ValueError, "rate must be > 0"),
        (lambda: P.DistanceDecay(-1.0), ValueError, "rate must be > 0"),
        (lambda: P.DistanceDecay(0.1, eps=0.0), ValueError, r"eps must lie in the open interval \(0, 1\)"),
        (lambda: P.DistanceDecay(0.1, eps=1.0), ValueError, "eps"),
        (lambda: P.DistanceDecay("fast"), TypeError, "rate"),
        (lambda: P.SlidingWindow(-1), ValueError, "left must be >= 0"),
        (lambda: P.SlidingWindow(2, unit="page"), ValueError, "unit must be one of"),
        (lambda: P.BlockLocal(0), ValueError, "size must be >= 1"),
        (lambda: P.Global(), ValueError, "tokens or blocks"),
        (lambda: P.Global(tokens=(-1,)), ValueError, "tokens"),
        (lambda: P.Strided(0), ValueError, "stride"),
        (lambda: P.Dilated(2, 0), ValueError, "dilation"),
        (lambda: P.BlockLocal() | 3, TypeError, "Pattern"),
        (lambda: P.PerHead(), ValueError, "at least one"),
    ],
)
def test_pattern_argument_errors(build, exc, text):
    with pytest.raises(exc, match=text):
        build()


def test_head_count_mismatches():
    with pytest.raises(ValueError, match="3 rates but the layout has num_heads=2"):
        P.DistanceDecay((0.1, 0.2, 0.3)).compile(q_len=10, num_heads=2)
    with pytest.raises(ValueError, match="PerHead has 2 patterns"):
        P.PerHead(P.Dense(), P.Dense()).compile(q_len=10, num_heads=3)
