"""The throughput benchmark's parts: the interleaved measurement and the FLOP count of its bound."""

from __future__ import annotations

import dataclasses

import pytest

from sparseformer import patterns as P
from sparseformer.train.throughput import forward_flops, measure

from .conftest import replace


def test_forward_flops_counts_linear_layers_and_computed_pairs():
    dense = replace(pattern=None, context=128, d_model=32, n_heads=2, n_layers=1, batch_size=4, block_size=16)
    tokens, d = 4 * 128, 32
    linear = 2 * tokens * (d * 3 * d + d * d + d * 4 * d + 4 * d * d + d * 256)  # qkv, proj, MLP, output layer
    head_dim = 16
    assert forward_flops(dense) == linear + 4 * 4 * (2 * 128 * 129 / 2) * head_dim  # batch 4, 2 heads, causal pairs
    # a window of one block: per head the 8 diagonal tiles and the 7 below them, each in full
    local = dataclasses.replace(dense, pattern=P.SlidingWindow(1, unit="block", right=0))
    assert forward_flops(local) == linear + 4 * 4 * (2 * 15 * 16 * 16) * head_dim


def test_measure_times_every_configuration():
    cfgs = {"dense": replace(pattern=None, steps=2), "sparse": replace(steps=2)}
    out = measure(cfgs, rounds=2, warmup=1)
    assert set(out) == {"dense", "sparse"}
    for r in out.values():
        assert r["steps_timed"] == 1 and r["median_tokens_per_s"] > 0
        assert r["best_tokens_per_s"] >= r["median_tokens_per_s"]
    with pytest.raises(ValueError, match="rounds must exceed warmup >= 0, got rounds 1, warmup 1"):
        measure(cfgs, rounds=1, warmup=1)
