"""Logit soft-capping (``softcap``) and attention sinks (``sinks``) in every backend.

Oracles: the reference backend in float64, itself checked against the eager formulas of the
models that use them, written here from their definitions (transformers' Gemma 2 and GPT-OSS
``eager_attention_forward``: scores ``* scaling``, ``softcap * tanh(s / softcap)``, the additive
mask, a sink column concatenated per head, the max subtracted, softmax, the sink column dropped).
Tolerances: float64 1e-10 (values) and 1e-9 relative (gradients), float32 1e-5, bfloat16 2e-2.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.kernels import cpu

from .cases import problems
from .test_band import band_problems
from .test_strided import strided_problems

needs_cpu = pytest.mark.skipif(not cpu.is_available(), reason="native cpu kernel unavailable")


def eager(q, k, v, keep, bias, *, scale, softcap=None, sinks=None):
    """Gemma 2 / GPT-OSS eager attention on a dense ``keep [B or 1, H or 1, Lq, Lk]`` mask and
    score ``bias``: the models' formula, the mask added as the dtype's lowest value."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    w = q @ k.transpose(2, 3) * scale
    if softcap is not None:
        w = torch.tanh(w / softcap) * softcap
    w = w + bias + torch.zeros((), dtype=q.dtype).masked_fill(~keep, torch.finfo(q.dtype).min)
    if sinks is not None:
        w = torch.cat([w, sinks.reshape(1, -1, 1, 1).expand(q.shape[0], -1, q.shape[2], -1)], -1)
    w = w - w.max(-1, keepdim=True).values
    p = torch.softmax(w, -1)
    return p[..., : k.shape[2]] @ v


@st.composite
def terms(draw, heads: int = 4):
    """(softcap, sinks): each None or a value that changes the result (caps near the scores'
    size, sinks around the rows' logsumexp)."""
    softcap = draw(st.one_of(st.none(), st.sampled_from([0.3, 1.0, 2.5, 50.0])))
    sinks = None
    if draw(st.booleans()):
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        sinks = torch.randn(heads, generator=g, dtype=torch.float64) * 2
    return softcap, sinks


def run(q, k, v, layout, kpm, softcap, sinks, backend, **kw):
    return sf.sparse_attention(
        q, k, v, layout, key_padding_mask=kpm, softcap=softcap, sinks=sinks, backend=backend, **kw
    )


def grads(q, k, v, layout, kpm, softcap, sinks, backend, dtype=torch.float64):
    """Output and gradients of q, k, v (and sinks) under a fixed random output weighting."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    if sinks is not None:
        leaves.append(sinks.detach().to(dtype).requires_grad_())
    s = leaves[3] if sinks is not None else None
    out = run(*leaves[:3], layout, kpm, softcap, s, backend)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    return [out.detach(), *torch.autograd.grad((out * w).sum(), leaves)]


# -- the reference against the models' formulas ----------------------------------------------------


@given(problems(), terms())
def test_reference_matches_the_eager_formula(case, st_terms):
    q, k, v, layout, kpm = case
    softcap, sinks = st_terms
    keep = layout.to_dense_mask()[None]
    if kpm is not None:
        keep = keep & kpm[:, None, None, :]
    want = eager(q, k, v, keep, layout.to_dense_bias(), scale=q.shape[-1] ** -0.5, softcap=softcap, sinks=sinks)
    got = run(q, k, v, layout, kpm, softcap, sinks, "reference")
    seen = keep.any(-1, keepdim=True).expand_as(got[..., :1])
    torch.testing.assert_close(got, torch.where(seen, want, torch.zeros_like(want)), rtol=0, atol=1e-10)
    assert torch.equal(got * ~seen, torch.zeros_like(got))  # rows that see nothing: 0 (eager: a mean of v)


def test_terms_change_the_result():
    """Neither term is a no-op at the values the tests draw (a test of them could not fail otherwise)."""
    layout = P.SlidingWindow(1, unit="block").compile(q_len=40, num_heads=4, block_size=16)
    q, k, v = (torch.randn(1, 4, 40, 16, dtype=torch.float64) * 2 for _ in range(3))
    plain = run(q, k, v, layout, None, None, None, "reference")
    assert (run(q, k, v, layout, None, 2.5, None, "reference") - plain).abs().max() > 1e-2
    assert (
        run(q, k, v, layout, None, None, torch.zeros(4, dtype=torch.float64), "reference") - plain
    ).abs().max() > 1e-2


def test_sinks_match_sigmoid_of_lse():
    """``out = out_without_sinks * sigmoid(lse - sink)``, the form the native path uses."""
    layout = (P.SlidingWindow(9) | P.Global(tokens=2)).compile(q_len=30, num_heads=2, block_size=16, causal=True)
    q, k, v = (torch.randn(2, 2, 30, 8, dtype=torch.float64) for _ in range(3))
    sinks = torch.tensor([0.5, -1.0], dtype=torch.float64)
    s = q @ k.transpose(-1, -2) * 8**-0.5
    lse = torch.logsumexp(s.masked_fill(~layout.to_dense_mask()[None], float("-inf")), -1)
    want = run(q, k, v, layout, None, None, None, "reference") * torch.sigmoid(lse - sinks[:, None])[..., None]
    torch.testing.assert_close(run(q, k, v, layout, None, None, sinks, "reference"), want, rtol=0, atol=1e-12)


# -- every backend against the reference -----------------------------------------------------------


def assert_backend_matches_reference(case, st_terms, backend):
    q, k, v, layout, kpm = case
    softcap, sinks = st_terms
    want = run(q, k, v, layout, kpm, softcap, sinks, "reference")
    got = run(q, k, v, layout, kpm, softcap, sinks, backend)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    got32 = run(
        q.float(), k.float(), v.float(), layout, kpm, softcap, None if sinks is None else sinks.float(), backend
    )
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-5)


@given(problems(), terms())
def test_gather_float64_and_float32(case, st_terms):
    assert_backend_matches_reference(case, st_terms, "gather")


@given(band_problems(), terms())
def test_gather_band_path(case, st_terms):
    assert case[3].band is not None
    assert_backend_matches_reference(case, st_terms, "gather")


@given(strided_problems(), terms())
def test_gather_strided_path(case, st_terms):
    assert case[3].strided is not None
    assert_backend_matches_reference(case, st_terms, "gather")


@needs_cpu
@given(problems(), terms())
def test_cpu_float64_and_float32(case, st_terms):
    assert_backend_matches_reference(case, st_terms, "cpu")


@needs_cpu
@settings(max_examples=20)
@given(problems(), terms())
def test_cpu_bfloat16(case, st_terms):
    q, k, v, layout, kpm = case
    softcap, sinks = st_terms
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    sb = None if sinks is None else sinks.to(torch.bfloat16)
    want = run(
        qb.double(), kb.double(), vb.double(), layout, kpm, softcap, None if sb is None else sb.double(), "reference"
    )
    got = run(qb, kb, vb, layout, kpm, softcap, sb, "cpu")
    assert got.dtype == torch.bfloat16
    assert float((got.double() - want).abs().max()) <= 2e-2 * float(want.abs().max())


@needs_cpu
def test_cpu_softcap_large_and_tiny_scores():
    """The native tanh over its whole range: scores far beyond the cap, near 0 and across the
    switch between its two formulas (|s / c| = 0.35)."""
    g = torch.Generator().manual_seed(1)
    layout = P.Dense().compile(q_len=64, num_heads=1, block_size=16)
    q = torch.randn(1, 1, 64, 4, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 64, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 1, 64, 4, generator=g, dtype=torch.float64)
    for scale in (1e-4, 0.05, 0.35, 1.0, 30.0):
        want = run(q, k, v, layout, None, 1.0, None, "reference", scale=scale)
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            got = run(q.to(dtype), k.to(dtype), v.to(dtype), layout, None, 1.0, None, "cpu", scale=scale)
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_pattern_attention_band_path():
    """``pattern_attention`` on ``gather`` with a band pattern (no layout compiled) takes the terms too."""
    pattern = P.SlidingWindow(9, right=2) | P.Global(tokens=3)
    q = torch.randn(2, 4, 45, 8, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 45, 8, dtype=torch.float64) for _ in range(2))
    kpm = torch.rand(2, 45) > 0.2
    sinks = torch.randn(4, dtype=torch.float64)
    layout = pattern.compile(q_len=45, num_heads=4, block_size=16, causal=True)
    want = run(q, k, v, layout, kpm, 1.5, sinks, "reference")
    for backend in ("gather", "auto"):
        got = sf.pattern_attention(
            q, k, v, pattern, block_size=16, causal=True, key_padding_mask=kpm, softcap=1.5, sinks=sinks,
            backend=backend,
        )  # fmt: skip
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# -- gradients ---------------------------------------------------------------------------------------


def assert_gradients_match_reference(case, st_terms, backend):
    q, k, v, layout, kpm = case
    softcap, sinks = st_terms
    want = grads(q, k, v, layout, kpm, softcap, sinks, "reference")
    for a, b in zip(grads(q, k, v, layout, kpm, softcap, sinks, backend), want):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    atol = 2e-5 * max(1.0, *(float(g.abs().max()) for g in want))
    for a, b in zip(grads(q, k, v, layout, kpm, softcap, sinks, backend, torch.float32), want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=atol)


@settings(max_examples=30)
@given(problems(max_len=48), terms())
def test_gather_gradients(case, st_terms):
    assert_gradients_match_reference(case, st_terms, "gather")


@settings(max_examples=20)
@given(band_problems(max_len=50), terms())
def test_gather_band_path_gradients(case, st_terms):
    assert_gradients_match_reference(case, st_terms, "gather")


@settings(max_examples=20)
@given(strided_problems(max_len=50), terms())
def test_gather_strided_path_gradients(case, st_terms):
    assert_gradients_match_reference(case, st_terms, "gather")


@needs_cpu
@settings(max_examples=30)
@given(problems(max_len=48), terms())
def test_cpu_gradients(case, st_terms):
    assert_gradients_match_reference(case, st_terms, "cpu")


@needs_cpu
def test_cpu_gradcheck_tiny():
    g = torch.Generator().manual_seed(8)
    layout = (P.SlidingWindow(5) | P.Global(tokens=1) | P.DistanceDecay(0.2)).compile(
        q_len=21, num_heads=2, block_size=16, kv_len=19, causal=True
    )
    q = torch.randn(1, 2, 21, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 19, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 19, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sinks = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[True] * 15 + [False] * 4])
    fn = lambda q, k, v, s: run(q, k, v, layout, kpm, 0.7, s, "cpu", scale=0.9)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, sinks))


@needs_cpu
def test_cpu_empty_rows_give_zero_and_finite_gradients():
    layout = (P.SlidingWindow(2, right=0) & P.Global(tokens=(40,))).compile(q_len=60, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 60, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    sinks = torch.randn(2, dtype=torch.float64, requires_grad=True)
    out = run(q, k, v, layout, None, 2.0, sinks, "cpu")
    empty = ~layout.to_dense_mask().any(-1)[0]  # [Lq]
    assert empty.any() and torch.equal(out[:, :, empty], torch.zeros_like(out[:, :, empty]))
    out.square().sum().backward()
    for t in (q, k, v, sinks):
        assert torch.isfinite(t.grad).all()


# -- dropout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [P.SlidingWindow(1, unit="block") | P.Global(tokens=2), P.BigBird(seed=0)])
def test_dropout_with_sinks_keeps_the_expectation(pattern):
    """Dropout applies to the sink-normalised probabilities (GPT-OSS): the mean over draws is the
    output without dropout."""
    torch.manual_seed(0)
    layout = pattern.compile(q_len=40, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 40, 8, dtype=torch.float64).expand(3000, -1, -1, -1) for _ in range(3))
    sinks = torch.tensor([0.0, 1.0], dtype=torch.float64)
    want = run(q[:1], k[:1], v[:1], layout, None, 2.0, sinks, "reference")
    mean = run(q, k, v, layout, None, 2.0, sinks, "gather", dropout_p=0.3).mean(0)
    assert float((mean - want[0]).abs().max()) < 0.1


# -- registration and errors -------------------------------------------------------------------------


@needs_cpu
def test_cpu_op_with_softcap_passes_opcheck_and_exports_as_one_op():
    op = torch.ops.sparseformer.block_sparse_attention
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1)).compile(q_len=40, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 40, 8, requires_grad=True) for _ in range(3))
    args = (
        q,
        k,
        v,
        layout.row_ptr,
        layout.col_idx,
        layout.mask_id,
        layout.masks,
        None,
        None,
        None,
        16,
        1,
        0,
        0.35,
        2.0,
    )
    assert set(torch.library.opcheck(op, args).values()) == {"SUCCESS"}
    sinks = torch.nn.Parameter(torch.randn(2))

    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sinks = sinks

        def forward(self, q, k, v):
            return sf.sparse_attention(q, k, v, layout, softcap=2.0, sinks=self.sinks, backend="cpu")

    model = Attend()
    exported = torch.export.export(model, (q.detach(), k.detach(), v.detach()))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count(op.default) == 1
    torch.testing.assert_close(exported.module()(q, k, v), model(q, k, v))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), model(q, k, v))


@needs_cpu
def test_cpu_op_checks_softcap():
    op = torch.ops.sparseformer.block_sparse_attention
    layout = P.BlockLocal().compile(q_len=16, num_heads=1, block_size=16)
    q = torch.randn(1, 1, 16, 4)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="softcap"):
            op(
                q,
                q,
                q,
                layout.row_ptr,
                layout.col_idx,
                layout.mask_id,
                layout.masks,
                None,
                None,
                None,
                16,
                1,
                0,
                0.5,
                bad,
            )
        with pytest.raises(ValueError, match="softcap"):
            cpu.attention(q, q, q, layout, scale=0.5, softcap=bad)
