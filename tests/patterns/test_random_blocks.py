"""RandomBlocks: what is drawn, from where, with which weight, and that the weight helps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P


@given(st.integers(1, 12), st.integers(1, 4), st.integers(0, 1000), st.booleans())
def test_draws_among_uncovered_tiles(nb, n, seed, causal):
    base = P.SlidingWindow(1, unit="block")
    layout = (base | P.RandomBlocks(n, seed=seed)).compile(q_len=nb * 16, num_heads=3, block_size=16, causal=causal)
    plain = base.compile(q_len=nb * 16, num_heads=3, block_size=16, causal=causal)
    got = layout.to_block_states() > 0  # [3, nb, nb]
    kept = (plain.to_block_states() > 0).expand_as(got)
    drawn = got & ~kept
    assert (got >= kept).all()
    rows = torch.arange(nb)
    cand = ~kept & ((rows[:, None] >= rows[None, :]) if causal else torch.ones(nb, nb, dtype=torch.bool))
    c = cand.sum(-1)  # [3, nb]
    assert torch.equal(drawn.sum(-1), torch.clamp(c, max=n))
    assert not (drawn & ~cand).any()
    # every drawn tile carries log(C / min(n, C))
    w = torch.zeros(layout.layout_heads * layout.nq, layout.nk, dtype=torch.float64)
    rows_ = torch.repeat_interleave(torch.arange(layout.layout_heads * layout.nq), layout.row_counts.flatten())
    if layout.log_weight is not None:
        w[rows_, layout.col_idx] = layout.log_weight
    w = w.view(-1, nb, nb)
    want = torch.where(drawn, torch.log(c.double() / torch.clamp(c, max=n).clamp(min=1).double())[..., None], 0.0)
    assert torch.allclose(w.expand_as(want), want)


def test_deterministic_and_seed_dependent():
    def tiles(seed):
        p = P.BlockLocal() | P.RandomBlocks(2, seed=seed)
        return p.compile(q_len=512, num_heads=4, block_size=32).to_block_states()

    assert torch.equal(tiles(5), tiles(5))
    assert not torch.equal(tiles(5), tiles(6))


def test_reweight_off_has_no_log_weights():
    layout = (P.BlockLocal() | P.RandomBlocks(2, reweight=False)).compile(q_len=256, num_heads=2, block_size=32)
    assert layout.log_weight is None


def test_reweighting_makes_the_average_closer_to_full_attention():
    """Keys far away carry most of the mass here; without the correction the sparse output
    over-weights the local block. Averaged over seeds, the corrected output is much closer
    to full attention (the estimate is self-normalised IS, so only nearly unbiased)."""
    torch.manual_seed(0)
    lq, d, bs = 512, 16, 32
    q = torch.randn(1, 1, lq, d, dtype=torch.float64)
    k = torch.randn(1, 1, lq, d, dtype=torch.float64) * 0.3
    v = torch.randn(1, 1, lq, d, dtype=torch.float64) * 0.5 + 1.0
    v[..., : lq // 2, :] += 2.0  # local and distant values differ systematically
    full = sf.sparse_attention(q, k, v, P.Dense().compile(q_len=lq, num_heads=1, block_size=bs), backend="reference")

    def mean_out(reweight):
        outs = []
        for seed in range(60):
            p = P.BlockLocal() | P.RandomBlocks(3, seed=seed, reweight=reweight)
            outs.append(sf.sparse_attention(q, k, v, p.compile(q_len=lq, num_heads=1, block_size=bs), backend="gather"))
        return torch.stack(outs).mean(0)

    err_on = (mean_out(True) - full).norm() / full.norm()
    err_off = (mean_out(False) - full).norm() / full.norm()
    assert err_on < 0.5 * err_off, (err_on, err_off)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 1"):
        P.RandomBlocks(0)
    with pytest.raises(TypeError, match="n must be an int"):
        P.RandomBlocks(1.5)
