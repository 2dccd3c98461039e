"""Every pattern's compiled layout equals its definition, by brute force on random sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseformer import patterns as P

from . import definitions as D

sizes = st.tuples(
    st.integers(1, 90),  # q_len
    st.integers(1, 90),  # kv_len
    st.sampled_from([16, 32]),  # block size
    st.integers(-20, 40),  # q_offset
    st.booleans(),  # causal
)


def check(pattern, pred, lq, lk, bs, off, causal, heads=1):
    layout = pattern.compile(q_len=lq, num_heads=heads, block_size=bs, kv_len=lk, causal=causal, q_offset=off)
    want = D.dense(lq, lk, off, (lambda p, j: pred(p, j) and p >= j) if causal else pred)
    got = layout.to_dense_mask().numpy()
    for h in range(got.shape[0]):
        np.testing.assert_array_equal(got[h], want, err_msg=f"{pattern!r} lq={lq} lk={lk} bs={bs} off={off}")
    assert layout.density == pytest.approx(want.mean())
    return layout


@given(sizes, st.one_of(st.none(), st.integers(1, 70)))
def test_block_local(s, size):
    lq, lk, bs, off, causal = s
    check(P.BlockLocal(size), D.block_local(size or bs), lq, lk, bs, off, causal)


@given(sizes, st.integers(0, 40), st.integers(0, 40))
def test_sliding_tokens(s, left, right):
    lq, lk, bs, off, causal = s
    check(P.SlidingWindow(left, right=right), D.sliding(left, right), lq, lk, bs, off, causal)


@given(sizes, st.integers(0, 3), st.integers(0, 3))
def test_sliding_blocks(s, left, right):
    lq, lk, bs, off, causal = s
    check(P.SlidingWindow(left, right=right, unit="block"), D.sliding(left, right, bs), lq, lk, bs, off, causal)


@given(sizes, st.lists(st.integers(0, 100), max_size=4), st.integers(0, 3), st.booleans())
def test_global(s, tokens, blocks, horizontal):
    lq, lk, bs, off, causal = s
    g = set(tokens) | {x for b in range(blocks) for x in range(b * bs, (b + 1) * bs)}
    if not g:
        return
    pattern = P.Global(tokens=tuple(tokens) or None, blocks=blocks or None, horizontal=horizontal)
    check(pattern, D.global_(g, horizontal), lq, lk, bs, off, causal)


@given(sizes, st.floats(0.01, 2.0), st.floats(1e-6, 0.9))
def test_decay_truncated(s, rate, eps):
    lq, lk, bs, off, causal = s
    check(P.DistanceDecay(rate, eps=eps), D.decay(rate, eps), lq, lk, bs, off, causal)


@given(sizes, st.integers(1, 40))
def test_strided(s, stride):
    lq, lk, bs, off, causal = s
    check(P.Strided(stride), D.strided(stride), lq, lk, bs, off, causal)


@given(sizes, st.integers(0, 8), st.integers(1, 6))
def test_dilated(s, window, dilation):
    lq, lk, bs, off, causal = s
    check(P.Dilated(window, dilation), D.dilated(window, dilation), lq, lk, bs, off, causal)


@given(sizes)
def test_dense_and_causal(s):
    lq, lk, bs, off, causal = s
    check(P.Dense(), lambda p, j: True, lq, lk, bs, off, causal)
    check(P.Causal(), D.causal, lq, lk, bs, off, False)


@given(sizes)
def test_per_head_decay_rates(s):
    lq, lk, bs, off, causal = s
    rates = (0.05, 0.3, 1.5)
    layout = P.DistanceDecay(rates, eps=1e-2).compile(
        q_len=lq, num_heads=3, block_size=bs, kv_len=lk, causal=causal, q_offset=off
    )
    got = layout.to_dense_mask().numpy()
    for h, r in enumerate(rates):
        pred = D.decay(r, 1e-2)
        want = D.dense(lq, lk, off, (lambda p, j, pred=pred: pred(p, j) and p >= j) if causal else pred)
        np.testing.assert_array_equal(got[h if got.shape[0] > 1 else 0], want)


def test_per_head_patterns():
    heads = [P.BlockLocal(), P.SlidingWindow(5), P.Strided(7)]
    preds = [D.block_local(16), D.sliding(5, 5), D.strided(7)]
    layout = P.PerHead(*heads).compile(q_len=70, num_heads=3, block_size=16)
    got = layout.to_dense_mask().numpy()
    assert got.shape[0] == 3
    for h in range(3):
        np.testing.assert_array_equal(got[h], D.dense(70, 70, 0, preds[h]))


def test_alibi_slopes():
    assert P.alibi_slopes(8) == tuple(2.0 ** (-(h + 1)) for h in range(8))
    s = P.alibi_slopes(6)
    assert len(s) == 6 and s[:4] == P.alibi_slopes(4)


@pytest.mark.parametrize("left,right", [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)])
def test_sliding_blocks_every_offset(left, right):
    """Unaligned query tiles (q_offset % bs != 0) are where block bands are subtle: sweep them."""
    for off in range(0, 17):
        check(P.SlidingWindow(left, right=right, unit="block"), D.sliding(left, right, 16), 75, 90, 16, off, False)
