"""The native ``cpu`` backend (C++/OpenMP) against dense references.

Two oracles: ``sparseformer.kernels.reference`` on layouts compiled from patterns (``cases.py``),
and this file's own float64 masked softmax on hand-built layouts (from a random dense mask), which
reach what compiled patterns rarely do: tiny and odd block sizes, all-True and shared partial
masks, log-weights on any tile, any ``q_offset``, per-head layouts. Tolerances: float64 1e-10
relative, float32 1e-5, bfloat16 2e-2 (against the reference on the bfloat16-rounded inputs).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.kernels import cpu

from .cases import problems

if not cpu.is_available():  # pragma: no cover - depends on the machine
    pytest.skip(f"native cpu kernel unavailable: {cpu.unavailable_reason()}", allow_module_level=True)

OP = torch.ops.sparseformer.block_sparse_attention


def op_args(q, k, v, lay, scale, kpm=None, log_weight=True, slopes=True):
    """Positional arguments of the custom op for a layout."""
    lw = lay.log_weight if log_weight else None
    sl = lay.slopes if slopes else None
    return (
        q,
        k,
        v,
        lay.row_ptr,
        lay.col_idx,
        lay.mask_id,
        lay.masks,
        lw,
        sl,
        kpm,
        lay.block_size,
        lay.layout_heads,
        lay.q_offset,
        scale,
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest reference value."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


# -- hand-built layouts ---------------------------------------------------------------------------


def layout_from_dense(
    mask: torch.Tensor,  # bool [Hl, Lq, Lk]
    block_size: int,
    *,
    num_heads: int,
    log_weight: torch.Tensor | None = None,  # float64 [Hl, nq, nk], used on visited tiles
    slopes: torch.Tensor | None = None,  # float64 [num_heads]
    q_offset: int = 0,
    partial_full: torch.Tensor | None = None,  # bool [Hl, nq, nk]: keep these full tiles partial
) -> SimpleNamespace:
    """The BlockLayout fields for a dense mask: tiles classified full / partial / empty."""
    hl, lq, lk = mask.shape
    bs = block_size
    nq, nk = -(-lq // bs), -(-lk // bs)
    padded = torch.zeros(hl, nq * bs, nk * bs, dtype=torch.bool)
    padded[:, :lq, :lk] = mask
    tiles = padded.view(hl, nq, bs, nk, bs).permute(0, 1, 3, 2, 4)  # [Hl, nq, nk, bs, bs]
    valid_q = (torch.arange(nq)[:, None] * bs + torch.arange(bs)[None, :]) < lq  # [nq, bs]
    any_ = tiles.any(-1).any(-1)
    full = (tiles | ~valid_q[None, :, None, :, None]).all(-1).all(-1)
    full &= (torch.arange(nk) * bs + bs <= lk)[None, None, :]
    if partial_full is not None:
        full &= ~partial_full
    hp, qb, kb = any_.nonzero(as_tuple=True)  # row-major: rows (h, qb), key tiles ascending
    is_full = full[hp, qb, kb]
    mask_id = torch.full((hp.numel(),), -1, dtype=torch.int64)
    masks = torch.zeros(0, bs, bs, dtype=torch.bool)
    if (~is_full).any():  # equal partial masks share one id
        uniq, inverse = torch.unique(tiles[hp, qb, kb][~is_full].flatten(1), dim=0, return_inverse=True)
        mask_id[~is_full] = inverse
        masks = uniq.view(-1, bs, bs)
    row_ptr = torch.zeros(hl * nq + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(any_.flatten(0, 1).sum(-1), 0)
    lw = None if log_weight is None else log_weight[hp, qb, kb].contiguous()
    return SimpleNamespace(
        q_len=lq,
        kv_len=lk,
        num_heads=num_heads,
        block_size=bs,
        q_offset=q_offset,
        layout_heads=hl,
        row_ptr=row_ptr,
        col_idx=kb.contiguous(),
        mask_id=mask_id,
        masks=masks.contiguous(),
        log_weight=lw,
        slopes=slopes,
        dense_mask=mask,
        dense_log_weight=log_weight,
    )


def dense_attention(q, k, v, lay, *, scale, key_padding_mask=None):
    """float64 masked softmax over the dense mask of a hand-built layout; differentiable."""
    h, hk = q.shape[1], k.shape[1]
    k = k.repeat_interleave(h // hk, dim=1)
    v = v.repeat_interleave(h // hk, dim=1)
    lq, lk, bs = lay.q_len, lay.kv_len, lay.block_size
    keep = lay.dense_mask[None]  # [1, Hl, Lq, Lk]
    if key_padding_mask is not None:
        keep = keep & key_padding_mask[:, None, None, :]
    s = q @ k.transpose(-1, -2) * scale
    if lay.dense_log_weight is not None:
        w = lay.dense_log_weight.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, :lq, :lk]
        s = s + w[None]
    if lay.slopes is not None:
        d = (torch.arange(lq)[:, None] + lay.q_offset - torch.arange(lk)[None, :]).abs().double()
        s = s - lay.slopes[None, :, None, None] * d
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m) * keep
    den = p.sum(-1, keepdim=True)
    return (p / torch.where(den > 0, den, torch.ones_like(den))) @ v


@st.composite
def hand_built(draw, max_len: int = 48):
    """(q, k, v, layout, key_padding_mask, scale) in float64 on a random hand-built layout."""
    lq = draw(st.integers(1, max_len))
    lk = draw(st.integers(1, max_len))
    bs = draw(st.sampled_from([1, 3, 4, 8, 16]))
    hk = draw(st.sampled_from([1, 2]))
    h = hk * draw(st.sampled_from([1, 2, 3]))
    hl = draw(st.sampled_from([1, h]))
    d = draw(st.sampled_from([1, 4, 7, 16]))
    dv = draw(st.sampled_from([d, 3]))
    b = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    nq, nk = -(-lq // bs), -(-lk // bs)
    # tile states: 0 empty, 1 full, 2 random elements
    p_empty = draw(st.sampled_from([0.0, 0.3, 0.7]))
    u = torch.rand(hl, nq, nk, generator=g)
    state = torch.where(u < p_empty, 0, torch.where(u < p_empty + (1 - p_empty) / 2, 1, 2))
    elem = torch.rand(hl, nq * bs, nk * bs, generator=g) < draw(st.sampled_from([0.2, 0.6]))
    dense = (state == 1).repeat_interleave(bs, 1).repeat_interleave(bs, 2)
    dense |= (state == 2).repeat_interleave(bs, 1).repeat_interleave(bs, 2) & elem
    dense = dense[:, :lq, :lk].contiguous()
    log_weight = None
    if draw(st.booleans()):
        log_weight = torch.randn(hl, nq, nk, generator=g, dtype=torch.float64)
    slopes = None
    if draw(st.booleans()):
        slopes = torch.rand(h, generator=g, dtype=torch.float64) * 0.3
        slopes[0] = 0.0  # a head without decay
    q_offset = draw(st.integers(-5, 5)) + (lk - lq)
    partial_full = torch.rand(hl, nq, nk, generator=g) < 0.3  # full tiles given all-True masks
    lay = layout_from_dense(
        dense,
        bs,
        num_heads=h,
        log_weight=log_weight,
        slopes=slopes,
        q_offset=q_offset,
        partial_full=partial_full,
    )
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, lk, dv, generator=g, dtype=torch.float64)
    kpm = None
    if draw(st.booleans()):
        kpm = torch.rand(b, lk, generator=g) > 0.3
    scale = draw(st.sampled_from([d**-0.5, 1.0, 0.05]))
    return q, k, v, lay, kpm, scale


# -- forward ----------------------------------------------------------------------------------------


@given(hand_built())
def test_hand_built_float64(case):
    q, k, v, lay, kpm, scale = case
    want = dense_attention(q, k, v, lay, scale=scale, key_padding_mask=kpm)
    got = cpu.attention(q, k, v, lay, key_padding_mask=kpm, scale=scale)
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert not got.isnan().any()
    assert rel_err(got, want) <= 1e-10
    assert torch.equal(got == 0, want == 0) or rel_err(got, want) == 0  # empty rows exactly 0


@given(hand_built())
def test_hand_built_float32(case):
    q, k, v, lay, kpm, scale = case
    want = dense_attention(q, k, v, lay, scale=scale, key_padding_mask=kpm)
    got = cpu.attention(q.float(), k.float(), v.float(), lay, key_padding_mask=kpm, scale=scale)
    assert got.dtype == torch.float32
    assert rel_err(got, want) <= 1e-5


@given(problems())
def test_compiled_layouts_float64(case):
    q, k, v, layout, kpm = case
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = cpu.attention(q, k, v, layout, key_padding_mask=kpm, scale=q.shape[-1] ** -0.5)
    assert not got.isnan().any()
    assert rel_err(got, want) <= 1e-10
    assert torch.equal(got == 0, want == 0)


@given(problems())
def test_compiled_layouts_float32(case):
    q, k, v, layout, kpm = case
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = sf.sparse_attention(q.float(), k.float(), v.float(), layout, key_padding_mask=kpm, backend="cpu")
    assert rel_err(got, want) <= 1e-5


@settings(max_examples=25)
@given(problems())
def test_compiled_layouts_bfloat16(case):
    q, k, v, layout, kpm = case
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    want = sf.sparse_attention(qb.double(), kb.double(), vb.double(), layout, key_padding_mask=kpm, backend="reference")
    got = cpu.attention(qb, kb, vb, layout, key_padding_mask=kpm, scale=q.shape[-1] ** -0.5)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) <= 2e-2


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_identical_results(threads):
    """Work items never depend on the thread count: results are bitwise equal, backward too."""
    g = torch.Generator().manual_seed(5)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1) | P.RandomBlocks(1, seed=2)).compile(
        q_len=333, num_heads=4, block_size=32, kv_len=301, causal=True
    )
    q = torch.randn(2, 4, 333, 32, generator=g)
    k = torch.randn(2, 2, 301, 32, generator=g)
    v = torch.randn(2, 2, 301, 16, generator=g)
    kpm = torch.rand(2, 301, generator=g) > 0.1
    fn = lambda a, b, c: cpu.attention(a, b, c, layout, key_padding_mask=kpm, scale=0.2)
    torch.set_num_threads(1)
    one, one_g = fn(q, k, v), _grads(fn, q, k, v)
    torch.set_num_threads(threads)
    many, many_g = fn(q, k, v), _grads(fn, q, k, v)
    assert torch.equal(one, many)
    for a, b in zip(one_g, many_g):
        assert torch.equal(a, b)
    want = sf.sparse_attention(
        q.double(), k.double(), v.double(), layout, key_padding_mask=kpm, scale=0.2, backend="reference"
    )
    assert rel_err(many, want) <= 1e-5


def test_long_rows_and_runs():
    """Rows longer than one GEMM run (512 keys), a partial last tile, decay and log-weights."""
    g = torch.Generator().manual_seed(1)
    pattern = P.SlidingWindow(300) | P.Global(tokens=(0, 700)) | P.RandomBlocks(2, seed=4) | P.DistanceDecay(0.01)
    layout = pattern.compile(q_len=900, num_heads=2, block_size=64, kv_len=1000)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g, dtype=torch.float64) for n in (900, 1000, 1000))
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    got = cpu.attention(q, k, v, layout, scale=0.25)
    assert rel_err(got, want) <= 1e-10
    got32 = cpu.attention(q.float(), k.float(), v.float(), layout, scale=0.25)
    assert rel_err(got32, want) <= 1e-5


def test_empty_rows_are_zero_with_minus_inf_lse():
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, :20, :10] = True  # rows 20.. attend to nothing
    lay = layout_from_dense(mask, 16, num_heads=2)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g, requires_grad=True) for _ in range(3))
    kpm = torch.ones(1, 40, dtype=torch.bool)
    kpm[0, :5] = False
    out, lse = OP(*op_args(q, k, v, lay, 0.3, kpm))
    assert torch.equal(out[:, :, 20:], torch.zeros_like(out[:, :, 20:]))
    assert torch.isneginf(lse[:, :, 20:]).all() and torch.isfinite(lse[:, :, :20]).all()
    (out.sum() + lse[:, :, :20].sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, 20:], torch.zeros_like(q.grad[:, :, 20:]))
    assert torch.equal(k.grad[:, :, 10:], torch.zeros_like(k.grad[:, :, 10:]))


def test_lse_matches_logsumexp():
    g = torch.Generator().manual_seed(3)
    layout = (P.SlidingWindow(1, unit="block") | P.DistanceDecay(0.05)).compile(q_len=70, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 70, 8, generator=g, dtype=torch.float64) for _ in range(3))
    _, lse = OP(*op_args(q, k, v, layout, 0.5))
    s = q @ k.transpose(-1, -2) * 0.5 + layout.to_dense_bias()[None]
    s = s.masked_fill(~layout.to_dense_mask()[None], float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_expanded_inputs():
    g = torch.Generator().manual_seed(4)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1)).compile(q_len=50, num_heads=4, block_size=16)
    q = torch.randn(1, 50, 4, 8, generator=g, dtype=torch.float64).transpose(1, 2)  # [B, H, L, D] view
    k = torch.randn(1, 1, 50, 8, generator=g, dtype=torch.float64).expand(1, 2, 50, 8)  # stride 0 heads
    v = torch.randn(1, 2, 8, 50, generator=g, dtype=torch.float64).transpose(-1, -2)
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    assert rel_err(cpu.attention(q, k, v, layout, scale=8**-0.5), want) <= 1e-10


def test_portable_gemm_matches_blas():
    """The portable GEMM (used where libtorch exports no BLAS, e.g. some ARM builds)."""
    ext = cpu.load_extension()
    g = torch.Generator().manual_seed(6)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1) | P.DistanceDecay(0.02)).compile(
        q_len=200, num_heads=2, block_size=32, kv_len=180
    )
    q = torch.randn(1, 2, 200, 24, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 180, 24, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 180, 20, generator=g, dtype=torch.float64, requires_grad=True)
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    want_g = torch.autograd.grad(want.square().sum(), (q, k, v))
    try:
        ext.set_use_blas(False)
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            qq, kk, vv = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
            got = cpu.attention(qq, kk, vv, layout, scale=24**-0.5)
            assert rel_err(got, want) <= tol
            for a, b in zip(torch.autograd.grad(got.square().sum(), (qq, kk, vv)), want_g):
                assert rel_err(a, b) <= 10 * tol
    finally:
        ext.set_use_blas(True)


# -- backward ---------------------------------------------------------------------------------------


def _grads(fn, q, k, v, seed=0):
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    out = fn(qq, kk, vv)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.dtype)
    return torch.autograd.grad((out * w).sum(), (qq, kk, vv))


@settings(max_examples=30)
@given(hand_built(max_len=40))
def test_hand_built_gradients_float64(case):
    q, k, v, lay, kpm, scale = case
    want = _grads(lambda a, b, c: dense_attention(a, b, c, lay, scale=scale, key_padding_mask=kpm), q, k, v)
    got = _grads(lambda a, b, c: cpu.attention(a, b, c, lay, key_padding_mask=kpm, scale=scale), q, k, v)
    for a, b in zip(got, want):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@settings(max_examples=30)
@given(problems(max_len=48))
def test_compiled_layout_gradients(case):
    q, k, v, layout, kpm = case
    ref = lambda a, b, c: sf.sparse_attention(a, b, c, layout, key_padding_mask=kpm, backend="reference")
    got_fn = lambda a, b, c: cpu.attention(a, b, c, layout, key_padding_mask=kpm, scale=a.shape[-1] ** -0.5)
    want = _grads(ref, q, k, v)
    for a, b in zip(_grads(got_fn, q, k, v), want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # float32 backward; exact zeros (e.g. dK with a single key) come out as rounding noise, so the
    # absolute tolerance follows the size of the gradients
    atol = 2e-5 * max(1.0, *(float(g.abs().max()) for g in want))
    for a, b in zip(_grads(got_fn, q.float(), k.float(), v.float()), want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=atol)


def test_bfloat16_gradients():
    g = torch.Generator().manual_seed(7)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1)).compile(q_len=90, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 90, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    ref = lambda a, b, c: sf.sparse_attention(a, b, c, layout, backend="reference")
    want = _grads(ref, q.double(), k.double(), v.double())
    got = _grads(lambda a, b, c: cpu.attention(a, b, c, layout, scale=0.25), q, k, v)
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16
        assert rel_err(a, b) <= 3e-2


def test_gradcheck_tiny():
    g = torch.Generator().manual_seed(8)
    layout = (P.SlidingWindow(5) | P.Global(tokens=1) | P.DistanceDecay(0.2)).compile(
        q_len=21, num_heads=2, block_size=16, kv_len=19, causal=True
    )
    q = torch.randn(1, 2, 21, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 19, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 19, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[True] * 15 + [False] * 4])
    assert torch.autograd.gradcheck(
        lambda q, k, v: cpu.attention(q, k, v, layout, key_padding_mask=kpm, scale=0.5), (q, k, v)
    )

    def both(q, k, v):  # out and lse (rows that attend to something): the lse gradient path too
        out, lse = OP(*op_args(q, k, v, layout, 0.5))
        return out, lse[..., 2:]  # q_offset = -2: the first two queries are before every key

    assert torch.autograd.gradcheck(both, (q, k, v))


# -- op registration -------------------------------------------------------------------------------


def test_opcheck_and_compile():
    g = torch.Generator().manual_seed(9)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1)).compile(q_len=40, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g, requires_grad=True) for _ in range(3))
    checks = torch.library.opcheck(OP, op_args(q, k, v, layout, 0.35))  # schema, fake, autograd, AOT dynamic
    assert set(checks.values()) == {"SUCCESS"}

    def f(q, k, v):
        return cpu.attention(q, k, v, layout, scale=0.35).sum()

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v))

    class Attend(torch.nn.Module):
        def forward(self, q, k, v):
            return cpu.attention(q, k, v, layout, scale=0.35)

    exported = torch.export.export(Attend(), (q.detach(), k.detach(), v.detach()))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert OP.default in targets  # one opaque op, no layout object in the graph
    torch.testing.assert_close(exported.module()(q, k, v), cpu.attention(q, k, v, layout, scale=0.35))


# -- malformed inputs ------------------------------------------------------------------------------


def _valid():
    g = torch.Generator().manual_seed(10)
    mask = torch.rand(1, 40, 40, generator=g) < 0.5
    lay = layout_from_dense(mask, 16, num_heads=2)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g) for _ in range(3))
    return q, k, v, lay


def _with(lay, **fields):
    return SimpleNamespace(**{**vars(lay), **fields})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda lay: _with(lay, col_idx=lay.col_idx.clone().fill_(3)), r"col_idx\[0\] = 3 is out of range"),
        (lambda lay: _with(lay, col_idx=lay.col_idx.clone().fill_(-1)), r"col_idx\[0\] = -1"),
        (lambda lay: _with(lay, col_idx=lay.col_idx.flip(0)), "col_idx must be strictly increasing"),
        (lambda lay: _with(lay, row_ptr=lay.row_ptr[:-1]), "layout.row_ptr"),
        (lambda lay: _with(lay, row_ptr=lay.row_ptr.flip(0)), "row_ptr"),
        (lambda lay: _with(lay, row_ptr=lay.row_ptr.to(torch.int32)), "row_ptr.*int64"),
        (lambda lay: _with(lay, row_ptr=torch.cat([lay.row_ptr[:-1], lay.row_ptr[-1:] + 1])), "row_ptr"),
        (lambda lay: _with(lay, mask_id=lay.mask_id.clone().fill_(99)), r"mask_id\[0\] = 99 is out of range"),
        (lambda lay: _with(lay, mask_id=lay.mask_id.clone().fill_(-2)), r"mask_id\[0\] = -2"),
        (lambda lay: _with(lay, mask_id=lay.mask_id[:-1]), "layout.mask_id"),
        (lambda lay: _with(lay, masks=lay.masks[:, :8]), "layout.masks"),
        (lambda lay: _with(lay, masks=lay.masks.float()), "layout.masks.*bool"),
        (lambda lay: _with(lay, log_weight=torch.zeros(3, dtype=torch.float64)), "layout.log_weight"),
        (lambda lay: _with(lay, slopes=torch.zeros(5, dtype=torch.float64)), "layout.slopes"),
        (lambda lay: _with(lay, num_heads=3), "layout.num_heads"),
        (lambda lay: _with(lay, q_len=39), "layout.q_len"),
        (lambda lay: _with(lay, layout_heads=2), "layout.row_ptr|layout.layout_heads"),
        (lambda lay: _with(lay, block_size=0), "layout.block_size"),
        (lambda lay: _with(lay, row_ptr=lay.row_ptr.to("meta")), "layout.row_ptr.*CPU"),
    ],
)
def test_malformed_layout_raises_value_error(change, match):
    q, k, v, lay = _valid()
    with pytest.raises(ValueError, match=match):
        cpu.attention(q, k, v, change(lay), scale=0.3)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda q, k, v: (q.double(), k, v, None), "k: expected the dtype of q"),
        (lambda q, k, v: (q.half(), k.half(), v.half(), None), "q: expected float32, float64 or bfloat16"),
        (lambda q, k, v: (q[0], k, v, None), "q: expected a 4-D tensor"),
        (lambda q, k, v: (q, k[:, :, :, :4], v, None), "k: expected"),
        (lambda q, k, v: (q, k, v[:, :, :30], None), "v: expected"),
        (lambda q, k, v: (q.repeat(1, 2, 1, 1)[:, :3], k[:, :2], v[:, :2], None), "layout.num_heads|k:"),
        (lambda q, k, v: (q, k, v, torch.ones(1, 39, dtype=torch.bool)), "key_padding_mask.*shape"),
        (lambda q, k, v: (q, k, v, torch.ones(1, 40)), "key_padding_mask.*bool"),
        (lambda q, k, v: (q.to("meta"), k, v, None), "q: expected a CPU tensor"),
    ],
)
def test_malformed_inputs_raise_value_error(change, match):
    q, k, v, lay = _valid()
    q, k, v, kpm = change(q, k, v)
    with pytest.raises(ValueError, match=match):
        cpu.attention(q, k, v, lay, key_padding_mask=kpm, scale=0.3)


def test_op_called_directly_validates_indices():
    """The op checks index values itself (ValueError from C++), whoever calls it."""
    q, k, v, lay = _valid()
    bad = lay.col_idx.clone()
    bad[-1] = 1000
    with pytest.raises(ValueError, match=r"col_idx\[\d+\] = 1000 is out of range"):
        OP(*op_args(q, k, v, SimpleNamespace(**{**vars(lay), "col_idx": bad}), 0.3))
    with pytest.raises(ValueError, match="scale must be finite"):
        OP(*op_args(q, k, v, lay, math.inf))
    # shapes too (core.h's set_sizes / set_layout_sizes, shared with the ONNX Runtime and ExecuTorch front-ends)
    with pytest.raises(ValueError, match=r"k must be \[B, Hk, Lk, D\] = \[1, Hk, Lk, 8\] to match q \[1, 2, 40, 8\]"):
        OP(*op_args(q, k[..., :4], v, lay, 0.3))
    with pytest.raises(ValueError, match=r"v must be \[B, Hk, Lk, Dv\] = \[1, 2, 40, Dv\]"):
        OP(*op_args(q, k, v[:, :, :30], lay, 0.3))
    with pytest.raises(ValueError, match=r"row_ptr must have shape \[layout_heads \* nq \+ 1\] = \[4\]"):
        OP(*op_args(q, k, v, SimpleNamespace(**{**vars(lay), "row_ptr": lay.row_ptr[:-1]}), 0.3))


def test_dispatcher_uses_cpu_backend():
    g = torch.Generator().manual_seed(11)
    layout = P.SlidingWindow(1, unit="block").compile(q_len=64, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 64, 8, generator=g) for _ in range(3))
    from sparseformer.attention import pick_backend

    assert pick_backend(q, 0.0) == "cpu"
    torch.testing.assert_close(
        sf.sparse_attention(q, k, v, layout, backend="cpu"), sf.sparse_attention(q, k, v, layout, backend="gather")
    )
