"""Union, intersection and causal obey set algebra on the compiled masks."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparseformer import patterns as P

atoms = st.sampled_from(
    [
        P.BlockLocal(),
        P.BlockLocal(24),
        P.SlidingWindow(7),
        P.SlidingWindow(1, right=0, unit="block"),
        P.Global(tokens=(0, 33)),
        P.Global(blocks=1, horizontal=False),
        P.DistanceDecay(0.2, eps=1e-2),
        P.Strided(11),
        P.Dilated(3, 4),
        P.Fixed(num_local_blocks=2),
        P.Causal(),
    ]
)
shapes = st.tuples(st.integers(1, 80), st.integers(1, 80), st.integers(-10, 30), st.booleans())


def mask(p, s):
    lq, lk, off, causal = s
    return p.compile(q_len=lq, num_heads=1, block_size=16, kv_len=lk, q_offset=off, causal=causal).to_dense_mask()[0]


@given(atoms, atoms, atoms, shapes)
def test_union_intersection(a, b, c, s):
    ma, mb, mc = mask(a, s), mask(b, s), mask(c, s)
    assert torch.equal(mask(a | b, s), ma | mb)
    assert torch.equal(mask(a & b, s), ma & mb)
    assert torch.equal(mask((a | b) & c, s), (ma | mb) & mc)
    assert torch.equal(mask(a | (b & c), s), ma | (mb & mc))
    assert torch.equal(mask(a | a, s), ma) and torch.equal(mask(a & a, s), ma)


@given(atoms, shapes)
def test_causal_is_intersection_with_causal(a, s):
    lq, lk, off, _ = s
    assert torch.equal(mask(a, (lq, lk, off, True)), mask(a & P.Causal(), (lq, lk, off, False)))
    assert torch.equal(
        mask(a, (lq, lk, off, True)), mask(a, (lq, lk, off, False)) & mask(P.Causal(), (lq, lk, off, False))
    )


def test_composition_is_flat_and_hashable():
    a, b, c = P.BlockLocal(), P.SlidingWindow(3), P.Global(tokens=1)
    assert (a | b) | c == a | (b | c)
    assert len(((a | b) | c).parts) == 3
    assert hash(a | b) == hash(P.BlockLocal() | P.SlidingWindow(3))


def test_decay_slopes_add_in_compositions():
    p = P.DistanceDecay(0.1, eps=1e-3) | P.DistanceDecay(0.2)
    layout = p.compile(q_len=40, num_heads=2, block_size=16)
    assert torch.allclose(layout.slopes, torch.tensor([0.3, 0.3], dtype=torch.float64))
