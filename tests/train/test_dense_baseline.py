"""``SparseCausalLM(pattern=None)``, the study's dense baseline (SDPA, ``is_causal=True``), equals
the same model through the dense reference with every causal pair attending: values and gradients,
float64, fresh random inputs."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseformer import patterns as P
from sparseformer.nn import CausalLMConfig, SparseCausalLM


@settings(max_examples=10)
@given(length=st.integers(2, 40), heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**31 - 1))
def test_dense_baseline_is_the_dense_reference(length, heads, seed):
    torch.manual_seed(seed)
    cfg = CausalLMConfig(d_model=8 * heads, n_layers=2, n_heads=heads, block_size=16, pattern=None)
    dense = SparseCausalLM(cfg).double()
    ref = SparseCausalLM(CausalLMConfig(**{**cfg.__dict__, "pattern": P.Dense(), "backend": "reference"})).double()
    ref.load_state_dict(dense.state_dict())
    idx = torch.randint(0, 256, (2, length + 1))
    a, b = dense.loss(idx), ref.loss(idx)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    ga = torch.autograd.grad(a, list(dense.parameters()))
    gb = torch.autograd.grad(b, list(ref.parameters()))
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-10)
