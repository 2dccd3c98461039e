"""Fixed, BigBird and Longformer give DeepSpeed's block layouts for DeepSpeed's parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparseformer import patterns as P

from . import deepspeed_layouts as ds


def visited(pattern, nb, bs=16, heads=2):
    layout = pattern.compile(q_len=nb * bs, num_heads=heads, block_size=bs)
    return (layout.to_block_states() > 0).long().expand(heads, nb, nb)


@given(
    st.integers(1, 14),
    st.sampled_from([(1, 1), (2, 1), (4, 1), (4, 2), (6, 3), (3, 3)]),
    st.sampled_from(["bidirectional", "unidirectional"]),
    st.booleans(),
    st.integers(1, 3),
)
def test_fixed(nb, lg, attention, horizontal, patterns_):
    local, glob = lg
    horizontal = horizontal and attention == "bidirectional"
    patterns_ = min(patterns_, local // glob)
    kw = dict(
        num_local_blocks=local,
        num_global_blocks=glob,
        attention=attention,
        horizontal_global_attention=horizontal,
        num_different_global_patterns=patterns_,
        different_layout_per_head=patterns_ > 1,
    )
    heads = 3
    want = ds.fixed_layout(nb * 16, num_heads=heads, block=16, **kw)
    got = visited(P.Fixed(**kw), nb, heads=heads)
    if attention == "unidirectional":
        # DeepSpeed lets a summary group's first row see the group's later blocks (the future);
        # ours stays causal, so it equals DeepSpeed's layout restricted to c <= r.
        want = want.tril()
    assert torch.equal(got, want)


@given(st.integers(3, 14), st.integers(1, 7), st.integers(0, 3), st.sampled_from(["bidirectional", "unidirectional"]))
def test_bigbird_without_random(nb, window, glob, attention):
    if nb < window or nb < glob:
        return
    want = ds.bigbird_layout(
        nb * 16,
        num_heads=2,
        block=16,
        num_random_blocks=0,
        num_sliding_window_blocks=window,
        num_global_blocks=glob,
        attention=attention,
    )
    pattern = (
        P.BigBird(
            num_random_blocks=0, num_sliding_window_blocks=window, num_global_blocks=max(glob, 1), attention=attention
        )
        if glob
        else None
    )
    if pattern is None:
        return
    assert torch.equal(visited(pattern, nb), want)


def test_bigbird_random_blocks_add_per_head_blocks():
    nb = 12
    base = visited(P.BigBird(num_random_blocks=0), nb, heads=4)
    full = visited(P.BigBird(num_random_blocks=2, seed=3), nb, heads=4)
    extra = full - base
    assert (extra >= 0).all()
    assert (extra.sum(-1)[:, 1:] == 2).all()  # every non-global row draws 2 blocks outside the rest
    assert not all(torch.equal(extra[0], extra[h]) for h in range(1, 4))  # per-head draws


@given(
    st.integers(3, 14),
    st.sampled_from([1, 3, 5]),
    st.lists(st.integers(0, 16), min_size=1, max_size=3, unique=True),
    st.booleans(),
    st.sampled_from(["bidirectional", "unidirectional"]),
)
def test_longformer(nb, window, starts, ranges, attention):
    if nb < window:
        return
    ends = [s + 2 for s in starts] if ranges else None
    want = ds.longformer_layout(
        nb * 16,
        num_heads=2,
        block=16,
        num_sliding_window_blocks=window,
        global_block_indices=starts,
        global_block_end_indices=ends,
        attention=attention,
    )
    got = visited(P.Longformer(window, starts, ends, attention), nb)
    assert torch.equal(got, want)


def test_validation_matches_deepspeed():
    with pytest.raises(ValueError, match="divisible"):
        P.Fixed(num_local_blocks=4, num_global_blocks=3)
    with pytest.raises(ValueError, match="horizontal"):
        P.Fixed(attention="unidirectional", horizontal_global_attention=True)
    with pytest.raises(ValueError, match="different_layout_per_head"):
        P.Fixed(num_different_global_patterns=2)
    with pytest.raises(ValueError, match="num_different_global_patterns"):
        P.Fixed(
            num_local_blocks=4, num_global_blocks=2, num_different_global_patterns=3, different_layout_per_head=True
        )
    with pytest.raises(ValueError, match="attention"):
        P.BigBird(attention="sideways")
    with pytest.raises(ValueError, match="end index"):
        P.Longformer(global_block_indices=[3], global_block_end_indices=[3])


def test_from_deepspeed_reads_config_objects():
    class FixedSparsityConfig:  # duck-typed: the class name and attributes DeepSpeed uses
        block, num_local_blocks, num_global_blocks, attention = 32, 4, 1, "bidirectional"
        horizontal_global_attention, num_different_global_patterns, different_layout_per_head = False, 1, False

    pattern, block = P.from_deepspeed(FixedSparsityConfig())
    assert block == 32 and pattern == P.Fixed()
    with pytest.raises(TypeError, match="DeepSpeed sparsity config"):
        P.from_deepspeed(object())
