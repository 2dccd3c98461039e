"""The portable ``gather`` backend against the dense reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import sparseformer as sf
from sparseformer import patterns as P

from .cases import problems


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@given(problems())
def test_float64_matches_reference(case):
    q, k, v, layout, kpm = case
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="gather")
    assert not got.isnan().any()
    assert rel_err(got, want) <= 1e-10
    assert (got.abs() > 0).any() or (want == 0).all()


@given(problems())
def test_float32_matches_reference(case):
    q, k, v, layout, kpm = case
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = sf.sparse_attention(q.float(), k.float(), v.float(), layout, key_padding_mask=kpm, backend="gather")
    assert rel_err(got.double(), want) <= 1e-5


@given(problems(max_len=40))
def test_gradients_match_reference(case):
    q, k, v, layout, kpm = case
    grads = []
    for backend in ("reference", "gather"):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out = sf.sparse_attention(qq, kk, vv, layout, key_padding_mask=kpm, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([t.grad for t in (qq, kk, vv)])
    for g_ref, g in zip(*grads):
        assert not g.isnan().any()
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)


def test_gradcheck_small():
    torch.manual_seed(0)
    layout = (P.SlidingWindow(5) | P.Global(tokens=1) | P.DistanceDecay(0.2)).compile(
        q_len=21, num_heads=2, block_size=16, kv_len=19, causal=True
    )
    q = torch.randn(1, 2, 21, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 19, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 19, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: sf.sparse_attention(q, k, v, layout, backend="gather"), (q, k, v))


def test_empty_rows_and_padded_batches_give_zeros():
    torch.manual_seed(0)
    layout = (P.SlidingWindow(2, right=0) & P.Global(tokens=(10,))).compile(q_len=40, num_heads=2, block_size=16)
    q, k, v = (torch.randn(2, 2, 40, 8, requires_grad=True) for _ in range(3))
    kpm = torch.ones(2, 40, dtype=torch.bool)
    kpm[1] = False
    out = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="gather")
    rows_seeing_10 = torch.zeros(40, dtype=torch.bool)
    rows_seeing_10[10:13] = True
    assert (out[0][:, ~rows_seeing_10] == 0).all() and (out[0][:, rows_seeing_10] != 0).all()
    assert (out[1] == 0).all()
    out.sum().backward()
    assert all(not t.grad.isnan().any() for t in (q, k, v))


def test_matches_sdpa_when_dense():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 100, 16) for _ in range(3))
    for causal in (False, True):
        layout = P.Dense().compile(q_len=100, num_heads=4, block_size=32, causal=causal)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(sf.sparse_attention(q, k, v, layout, backend="gather"), want, rtol=1e-5, atol=1e-5)


def test_dropout_is_applied_and_scaled():
    torch.manual_seed(0)
    layout = P.Dense().compile(q_len=64, num_heads=1, block_size=16)
    q, k = torch.zeros(1, 1, 64, 8), torch.zeros(1, 1, 64, 8)
    v = torch.ones(1, 1, 64, 8)
    out = sf.sparse_attention(q, k, v, layout, dropout_p=0.5, backend="gather")
    assert 0.8 < float(out.mean()) < 1.2 and float(out.std()) > 0.05  # rescaled by 1/(1-p), random


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precisions_run(dtype):
    torch.manual_seed(0)
    layout = P.BigBird().compile(q_len=100, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 100, 16) for _ in range(3))
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    got = sf.sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), layout, backend="gather")
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)
