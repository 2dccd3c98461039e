"""The band path (sliding windows + global prefix tokens as K/V slices) against the dense reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.band import band_of
from sparseformer.kernels.band import band_attention


@st.composite
def band_patterns(draw):
    """A random union of windows and prefix globals (every part band_of accepts)."""
    parts = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["token", "block", "local", "decay"]))
        if kind == "local":
            parts.append(P.BlockLocal(draw(st.sampled_from([None, 8, 16, 24, 64]))))
        elif kind == "decay":  # truncated: |i - j| <= floor(ln(1/eps) / rate), one rate or one per head
            rate = draw(st.one_of(st.floats(0.05, 1.0), st.tuples(*[st.floats(0.05, 1.0)] * 4)))
            parts.append(P.DistanceDecay(rate, eps=draw(st.sampled_from([1e-3, 0.05, 0.3]))))
        else:
            right = draw(st.one_of(st.none(), st.integers(0, 40 if kind == "token" else 2)))
            parts.append(P.SlidingWindow(draw(st.integers(0, 40 if kind == "token" else 2)), right=right, unit=kind))
    for _ in range(draw(st.integers(0 if parts else 1, 2))):
        tokens = draw(st.one_of(st.none(), st.integers(0, 20)))
        blocks = draw(st.integers(0, 2)) if tokens is None else draw(st.one_of(st.none(), st.integers(0, 2)))
        parts.append(P.Global(tokens=tokens, blocks=blocks, horizontal=draw(st.booleans())))
    pattern = parts[0]
    for p in parts[1:]:
        pattern = pattern | p
    return pattern


@st.composite
def band_problems(draw, max_len: int = 90, patterns=None):
    """(q, k, v, layout, key_padding_mask), float64, self-attention with a pattern drawn from
    ``patterns`` (default: a band pattern)."""
    length = draw(st.integers(1, max_len))
    h, hk = 4, draw(st.sampled_from([1, 2, 4]))
    d, dv, b = draw(st.sampled_from([8, 16])), draw(st.sampled_from([8, 5])), draw(st.integers(1, 2))
    layout = draw(band_patterns() if patterns is None else patterns).compile(
        q_len=length, num_heads=h, block_size=draw(st.sampled_from([16, 32])), causal=draw(st.booleans())
    )
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(b, h, length, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, length, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, length, dv, generator=g, dtype=torch.float64)
    kpm = None
    if draw(st.booleans()):
        kpm = torch.rand(b, length, generator=g) > 0.3
        kpm[-1, : draw(st.integers(0, length))] = False  # padded prefixes, up to a fully padded row
    return q, k, v, layout, kpm


@given(band_problems())
def test_pairs_equal_the_compiled_layout(case):
    _, _, _, layout, _ = case
    band = layout.band
    assert band is not None, layout.pattern
    n = layout.q_len
    pairs = band.pairs(torch.arange(n)[:, None], torch.arange(n)[None, :], n)  # [1 or H, L, L]
    mask = layout.to_dense_mask()  # [layout heads, L, L]
    heads = max(pairs.shape[0], mask.shape[0])
    assert torch.equal(pairs.expand(heads, -1, -1), mask.expand(heads, -1, -1))


@given(band_problems())
def test_float64_matches_reference(case):
    q, k, v, layout, kpm = case
    want = sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="reference")
    got = band_attention(q, k, v, layout.band, key_padding_mask=kpm, scale=q.shape[-1] ** -0.5)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(sf.sparse_attention(q, k, v, layout, key_padding_mask=kpm, backend="gather"), got)


def assert_gather_matches_reference_with_gradients(case):
    """``gather`` in float64 and float32, values and gradients, against the float64 reference."""
    q, k, v, layout, kpm = case
    grads = []
    for backend, dtype in (("reference", torch.float64), ("gather", torch.float64), ("gather", torch.float32)):
        qq, kk, vv = (t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v))
        out = sf.sparse_attention(qq, kk, vv, layout, key_padding_mask=kpm, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        grads.append([out.detach(), qq.grad, kk.grad, vv.grad])
    for ref, f64, f32 in zip(*grads):
        assert not f64.isnan().any()
        torch.testing.assert_close(f64, ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(f32.double(), ref, rtol=1e-4, atol=1e-5)


@given(band_problems(max_len=50))
def test_float32_and_gradients_match_reference(case):
    assert_gather_matches_reference_with_gradients(case)


def test_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    layout = (P.SlidingWindow(1, unit="block") | P.Global(tokens=2)).compile(q_len=40, num_heads=2, block_size=16)
    q, k, v = (torch.randn(1, 2, 40, 8, dtype=torch.float64).expand(3000, -1, -1, -1) for _ in range(3))
    want = sf.sparse_attention(q[:1], k[:1], v[:1], layout, backend="reference")
    mean = sf.sparse_attention(q, k, v, layout, dropout_p=0.3, backend="gather").mean(0)  # 3000 independent draws
    assert float((mean - want[0]).abs().max()) < 0.1
    assert not torch.equal(sf.sparse_attention(q[:1], k[:1], v[:1], layout, dropout_p=0.3, backend="gather"), want)


@pytest.mark.parametrize(
    "pattern",
    [
        P.RandomBlocks(1, seed=0) | P.SlidingWindow(1, unit="block"),
        P.DistanceDecay(0.1),  # not truncated: dense
        P.SlidingWindow(4) | P.Global(tokens=(3,)),  # not a prefix
        P.Dense(),
        P.Strided(8),
        P.PerHead(P.BlockLocal(), P.BlockLocal()),
        P.SlidingWindow(4) & P.Global(tokens=2),
        P.Causal(),
    ],
)
def test_other_patterns_are_not_bands(pattern):
    assert band_of(pattern, 16) is None
    if not isinstance(pattern, P.PerHead):
        assert pattern.compile(q_len=40, num_heads=2, block_size=16).band is None


def test_band_needs_self_attention():
    pattern = P.SlidingWindow(1, unit="block") | P.Global(blocks=1)
    assert pattern.compile(q_len=40, num_heads=2, block_size=16).band is not None
    assert pattern.compile(q_len=20, kv_len=40, num_heads=2, block_size=16).band is None
    assert band_of(pattern & P.Causal(), 16).causal


@pytest.mark.parametrize("pattern", [P.SlidingWindow(9, right=2) | P.Global(tokens=3), P.Dense()])
@pytest.mark.parametrize("causal", [True, False])
def test_pattern_attention_skips_compilation_on_the_band_path(monkeypatch, pattern, causal):
    """Band-form patterns and ``P.Dense()`` (the dense path) on ``gather``: no layout compiled."""
    import sparseformer.layout as layout_module

    q, k, v = (
        torch.randn(2, 4, 45, 8, dtype=torch.float64),
        *(torch.randn(2, 2, 45, 8, dtype=torch.float64) for _ in range(2)),
    )
    kpm = torch.rand(2, 45) > 0.2
    kpm[1, :] = False  # a row of queries with no key: zeros
    want = sf.sparse_attention(
        q,
        k,
        v,
        pattern.compile(q_len=45, num_heads=4, block_size=16, causal=causal),
        key_padding_mask=kpm,
        backend="reference",
    )
    calls = []
    monkeypatch.setattr(layout_module, "compile_layout", lambda *a, **kw: calls.append(a) or None)
    got = sf.pattern_attention(q, k, v, pattern, block_size=16, causal=causal, key_padding_mask=kpm, backend="gather")
    assert calls == []
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_pattern_attention_compiles_otherwise():
    pattern = P.BigBird(num_random_blocks=1, seed=0)
    q, k, v = (torch.randn(1, 2, 70, 8, dtype=torch.float64) for _ in range(3))
    layout = pattern.compile(q_len=70, num_heads=2, block_size=16)
    want = sf.sparse_attention(q, k, v, layout, backend="reference")
    for backend in ("gather", "reference"):
        got = sf.pattern_attention(q, k, v, pattern, block_size=16, backend=backend)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_pattern_attention_errors():
    q = torch.randn(1, 2, 20, 8)
    with pytest.raises(TypeError, match="pattern"):
        sf.pattern_attention(q, q, q, "sliding")
    with pytest.raises(ValueError, match="block_size"):
        sf.pattern_attention(q, q, q, P.BlockLocal(), block_size=12)
    with pytest.raises(TypeError, match="causal"):
        sf.pattern_attention(q, q, q, P.BlockLocal(), causal=1)
    with pytest.raises(ValueError, match="backend"):
        sf.pattern_attention(q, q, q, P.BlockLocal(), backend="fast")
    with pytest.raises(ValueError, match="k's head dim"):
        sf.pattern_attention(q, torch.randn(1, 2, 20, 4), q, P.BlockLocal(), backend="gather")
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        sf.pattern_attention("q", q, q, P.BlockLocal())
