"""The ``flex`` backend (compiled FlexAttention over the layout) against the float64 reference.

On the CPU, torch 2.13 compiles FlexAttention for float32 forward only (no float64, no backward,
no logsumexp): values are compared in float32 against the float64 reference, tolerance 2e-5
(absolute and relative; the errors measured are ~4e-7). Gradients and sinks run on CUDA only
(float32 against float64, 1e-4), skipped without a GPU. Each new compiled structure costs
15-40 s of compilation on a small CPU, so the tests share two fixed shapes:

* ``ALL_TERMS``: B=2, H=4 query / 2 key-value heads (GQA), L=100 (not a multiple of the block
  size 16), causal, key padding (a fully padded batch row included), per-head layout with
  decay slopes, random-block log-weights and ``softcap``;
* ``CROSS``: Lq=40 against Lk=100 (bottom-right aligned, ``q_offset=60``), one layout for all
  heads, decay slopes per head, no padding; a pattern under which most rows see no key;
* the same lengths with FlexAttention tiles of 64 tokens grouping the layout's 16-token tiles
  (what CUDA runs for blocks under 128), no score terms.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.attention import pick_backend
from sparseformer.kernels import flex

needs_flex = pytest.mark.skipif(flex.unavailable_reason(torch.device("cpu")) is not None, reason="no CPU FlexAttention")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TOL = dict(atol=2e-5, rtol=2e-5)  # float32 (flex) against float64 (reference)
SOFTCAP = 2.0  # fixed: a float in the score_mod's closure is part of the compiled graph


def all_terms_layout(window: int, seed: int):
    """Per-head layout (random blocks differ per head) with decay slopes and log-weights."""
    pattern = (
        P.SlidingWindow(window)
        | P.Global(tokens=1)
        | P.RandomBlocks(1, seed=seed)
        | P.DistanceDecay((0.1, 0.3, 0.2, 0.05), eps=1e-2)
    )
    return pattern.compile(q_len=100, num_heads=4, block_size=16, causal=True)


def inputs(seed: int, b: int, h: int, hk: int, lq: int, lk: int, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    return q, k, v, g


def flex_vs_reference(q, k, v, layout, **kw):
    with torch.no_grad():
        out = sf.sparse_attention(q.float(), k.float(), v.float(), layout, backend="flex", **kw)
    ref = sf.sparse_attention(q, k, v, layout, backend="reference", **kw)
    assert out.dtype == torch.float32
    return out.double(), ref


@needs_flex
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), window=st.sampled_from([10, 40]), pad_all=st.booleans())
def test_all_terms_match_reference(seed, window, pad_all):
    layout = all_terms_layout(window, seed % 7)
    assert layout.layout_heads == 4 and layout.slopes is not None and layout.log_weight is not None
    q, k, v, g = inputs(seed, 2, 4, 2, 100, 100)
    kpm = torch.rand(2, 100, generator=g) > 0.3
    if pad_all:
        kpm[1] = False  # every row of batch 1 sees no key: zeros
    out, ref = flex_vs_reference(q, k, v, layout, key_padding_mask=kpm, softcap=SOFTCAP)
    torch.testing.assert_close(out, ref, **TOL)
    if pad_all:
        assert not out[1].any()


DECAY = P.DistanceDecay((0.02, 0.1, 0.05, 0.2))  # "& DECAY" keeps the pairs, adds -slope·|i + 60 - j|
CROSS = [
    (P.SlidingWindow(20, right=3) | P.Global(tokens=(0, 5))) & DECAY,
    P.Strided(24) & DECAY,
    (P.SlidingWindow(2, right=0) & P.Global(tokens=(70,))) & DECAY,  # most rows see no key at all
]


@needs_flex
@pytest.mark.parametrize("pattern", CROSS, ids=repr)
def test_cross_lengths_match_reference(pattern):
    layout = pattern.compile(q_len=40, num_heads=4, block_size=16, kv_len=100)
    assert layout.q_offset == 60 and layout.layout_heads == 1
    q, k, v, _ = inputs(hash(repr(pattern)) % 1000, 1, 4, 4, 40, 100)
    out, ref = flex_vs_reference(q, k, v, layout)
    torch.testing.assert_close(out, ref, **TOL)
    empty = ~layout.to_dense_mask()[0].any(-1)  # [Lq] rows with no key
    assert not out[:, :, empty].any()


@needs_flex
def test_pattern_attention_runs_flex():
    """``pattern_attention`` compiles the layout for ``flex`` (the band path is ``gather``'s)."""
    pattern = CROSS[0]
    q, k, v, _ = inputs(5, 1, 4, 4, 40, 100)
    with torch.no_grad():
        out = sf.pattern_attention(q.float(), k.float(), v.float(), pattern, block_size=16, backend="flex")
    layout = pattern.compile(q_len=40, num_heads=4, block_size=16, kv_len=100)
    torch.testing.assert_close(out.double(), sf.sparse_attention(q, k, v, layout, backend="reference"), **TOL)


# -- the BlockMask (no compilation) ----------------------------------------------------------------


def tiles(num: torch.Tensor, idx: torch.Tensor, nk: int) -> torch.Tensor:
    """FlexAttention's ``(num [B, H, nq], indices [B, H, nq, nk])`` as ``bool [B, H, nq, nk]``."""
    slot = torch.arange(nk)
    out = torch.zeros(*num.shape, nk, dtype=torch.bool)
    return out.scatter(-1, idx.long(), slot < num[..., None])


def test_block_mask_tiles_follow_padding():
    """Without padding: the layout's partial and full tiles, cached per device. With padding: a
    batch dimension; in batch b a tile with a padded key is partial, one with no kept key is dropped."""
    layout = all_terms_layout(10, 1)
    base = layout.to_block_mask()
    assert base is layout.to_block_mask("cpu")
    states = layout.to_block_states()[None]  # [1, Hl, nq, nk]
    nk = layout.nk
    assert torch.equal(tiles(base.kv_num_blocks, base.kv_indices, nk), states == 1)
    assert torch.equal(tiles(base.full_kv_num_blocks, base.full_kv_indices, nk), states == 2)
    kpm = torch.ones(2, 100, dtype=torch.bool)
    kpm[0, 16:32] = False  # batch 0: key tile 1 all padded
    kpm[1, 40] = False  # batch 1: key tile 2 partly padded
    bm = layout.to_block_mask("cpu", kpm)
    want = states.expand(2, -1, -1, -1).clone()
    want[0, :, :, 1] = 0
    want[1, :, :, 2][want[1, :, :, 2] == 2] = 1
    assert (want != states).any()  # the padding changes tiles
    assert torch.equal(tiles(bm.kv_num_blocks, bm.kv_indices, nk), want == 1)
    assert torch.equal(tiles(bm.full_kv_num_blocks, bm.full_kv_indices, nk), want == 2)


def pairs(bm, batch: int, heads: int, lq: int, lk: int) -> torch.Tensor:
    """The pairs a BlockMask lets attend, ``bool [B, H, Lq, Lk]``: all of a full tile, the
    ``mask_mod`` on a partial one, none elsewhere."""
    block = bm.BLOCK_SIZE[0]
    nk = -(-lk // block)
    state = tiles(bm.kv_num_blocks, bm.kv_indices, nk) + 2 * tiles(bm.full_kv_num_blocks, bm.full_kv_indices, nk)
    state = state.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :lq, :lk].expand(batch, heads, -1, -1)
    b, h, i, j = (torch.arange(n).view([-1 if a == d else 1 for a in range(4)]) for d, n in enumerate(state.shape))
    return (state == 2) | ((state == 1) & bm.mask_mod(b, h, i, j))


@pytest.mark.parametrize("block", [16, 64])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("grid", ["exact", "bucket"])
def test_block_mask_pairs_are_the_layouts(block, padded, grid):
    """In layout tiles or in groups of them (``block`` 64 = 4 tiles of 16), with or without key
    padding, on the exact grid or grown to a shape bucket (L = 100 padded to 128), the
    BlockMask's pairs are exactly the layout's pairs and kept keys, and no key past L."""
    layout = all_terms_layout(40, 2)
    g = torch.Generator().manual_seed(block + padded)
    kpm = torch.rand(2, 100, generator=g) > 0.4 if padded else None
    bm = layout.to_block_mask("cpu", kpm, block, padded=grid == "bucket")
    assert bm.BLOCK_SIZE == (block, block)
    want = layout.to_dense_mask()[None]  # [1, Hl, Lq, Lk]
    if padded:
        want = want & kpm[:, None, None, :]
    n = 100 if grid == "exact" else 128  # 7 tiles of 16 grown to 8, or 2 of 64
    assert bm.seq_lengths == (n, n)
    got = pairs(bm, 2, 4, n, n)
    assert torch.equal(got[:, :, :100, :100], want.expand(2, 4, -1, -1))
    assert not got[..., 100:].any()  # no padded key; the padded queries' rows are the caller's to drop


def test_bucket_of_its_own_length_needs_no_key_mask():
    """L = 128 is 8 tiles of 16, a power of two: the padded grid is the exact one, no key is padding,
    and the BlockMask is the unpadded one's, pairs and all."""
    layout = P.SlidingWindow(20).compile(q_len=128, num_heads=4, block_size=16, causal=True)
    bm, exact = layout.to_block_mask("cpu", padded=True), layout.to_block_mask("cpu")
    assert bm.seq_lengths == exact.seq_lengths == (128, 128)
    for a, b in ((bm.kv_num_blocks, exact.kv_num_blocks), (bm.full_kv_num_blocks, exact.full_kv_num_blocks)):
        assert torch.equal(a, b)
    assert torch.equal(pairs(bm, 1, 4, 128, 128), layout.to_dense_mask()[None].expand(1, 4, -1, -1))


@needs_flex
def test_grouped_tiles_match_reference(monkeypatch):
    """CUDA's path for blocks under 128 (tiles grouped), here with 64-token groups on the CPU."""
    monkeypatch.setattr(flex, "MIN_BLOCK", {"cpu": 64})
    layout = P.Strided(24).compile(q_len=40, num_heads=4, block_size=16, kv_len=100)
    assert layout.slopes is None and layout.log_weight is None  # no score_mod
    q, k, v, _ = inputs(9, 1, 4, 4, 40, 100)
    out, ref = flex_vs_reference(q, k, v, layout)
    torch.testing.assert_close(out, ref, **TOL)


# -- bad inputs --------------------------------------------------------------------------------------


def small():
    layout = CROSS[0].compile(q_len=40, num_heads=4, block_size=16, kv_len=100)
    q, k, v, _ = inputs(1, 1, 4, 4, 40, 100)
    return q.float(), k.float(), v.float(), layout


@pytest.mark.parametrize(
    "change,text",
    [
        (dict(dropout_p=0.1), "has no dropout"),
        (dict(dtype=torch.float64), "float32, bfloat16 or float16, got torch.float64"),
        (dict(grad=True), "inference only"),
        (dict(sinks=torch.zeros(4)), "logsumexp for sinks"),
    ],
)
def test_refuses_what_it_cannot_compile(change, text):
    q, k, v, layout = small()
    if "dtype" in change:
        q, k, v = (t.to(change["dtype"]) for t in (q, k, v))
    if change.get("grad"):
        q.requires_grad_()
    kw = {n: change[n] for n in ("dropout_p", "sinks") if n in change}
    with pytest.raises(ValueError, match=text):
        sf.sparse_attention(q, k, v, layout, backend="flex", **kw)


@pytest.mark.parametrize("block", [8, 48, 96, 16.0])
def test_block_must_group_whole_tiles(block):
    layout = small()[3]
    with pytest.raises(ValueError, match=f"block must be a power-of-two multiple of the block size 16, got {block}"):
        layout.to_block_mask("cpu", None, block)


def test_refuses_where_flex_does_not_compile(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: False)
    q, k, v, layout = small()
    with torch.no_grad(), pytest.raises(ValueError, match="not available: FlexAttention compiles on the CPU only"):
        sf.sparse_attention(q, k, v, layout, backend="flex")


@needs_flex
def test_lengths_of_one_bucket_share_a_graph():
    """Shape buckets: the inputs are padded to a power of two of tiles, so lengths 151, 189 and 226
    (10 to 15 tiles of 16: bucket 16) share one compiled graph and 117 (8 tiles) has its own; every
    length against the float64 reference, values of the real rows only."""
    from torch._dynamo.utils import counters

    pattern = P.SlidingWindow(20) | P.Global(tokens=1) | P.DistanceDecay([0.05, 0.1, 0.2, 0.4], eps=1e-3)
    before = counters["stats"]["unique_graphs"]
    for length in (117, 151, 189, 226):
        g = torch.Generator().manual_seed(length)
        q, k, v = (torch.randn(2, 4, length, 16, generator=g) for _ in range(3))
        layout = pattern.compile(q_len=length, num_heads=4, block_size=16, causal=True)
        with torch.no_grad():
            got = sf.sparse_attention(q, k, v, layout, backend="flex")
        want = sf.sparse_attention(q.double(), k.double(), v.double(), layout, backend="reference")
        assert got.shape == q.shape
        torch.testing.assert_close(got.double(), want, **TOL)
    assert counters["stats"]["unique_graphs"] - before <= 2


@needs_flex
def test_recompile_limit_raises_instead_of_running_eager(monkeypatch):
    """Past the recompile limit Dynamo would run FlexAttention uncompiled (O(L²)): it raises."""
    q, k, v, layout = small()
    with torch.no_grad():
        sf.sparse_attention(q, k, v, layout, backend="flex")  # compiled (or cached) shape
        monkeypatch.setattr(flex, "_RECOMPILE_LIMIT", 1)
        other = CROSS[0].compile(q_len=39, num_heads=4, block_size=16, kv_len=100)
        with torch._dynamo.config.patch(recompile_limit=1), pytest.raises(ValueError, match="never run uncompiled"):
            sf.sparse_attention(q[:, :, :39], k, v, other, backend="flex")


def test_auto_picks_flex_on_cuda(monkeypatch, caplog):
    """``auto``: ``flex`` on CUDA when it compiles there, else ``gather`` with the reason logged."""
    cuda = SimpleNamespace(device=torch.device("cuda"), dtype=torch.bfloat16)
    monkeypatch.setattr(flex, "unavailable_reason", lambda device: None)
    assert pick_backend(cuda, 0.0) == "flex"
    with caplog.at_level(logging.INFO, logger="sparseformer"):
        assert pick_backend(cuda, 0.1) == "gather"
        assert pick_backend(SimpleNamespace(device=torch.device("cuda"), dtype=torch.float64), 0.0) == "gather"
        monkeypatch.setattr(flex, "unavailable_reason", lambda device: "no Triton here")
        assert pick_backend(cuda, 0.0) == "gather"
    text = caplog.text
    assert "dropout_p > 0" in text and "torch.float64" in text and "no Triton here" in text


# -- CUDA: gradients and sinks -------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("with_sinks", [False, True])
def test_cuda_values_and_gradients(with_sinks):
    """float32 on CUDA against float64 on the CPU: values and the gradients of q, k, v, sinks."""
    layout = all_terms_layout(40, 3)
    q, k, v, g = inputs(7, 2, 4, 2, 100, 100)
    kpm = torch.rand(2, 100, generator=g) > 0.3
    sinks = torch.randn(4, generator=g, dtype=torch.float64) if with_sinks else None
    w = torch.randn(2, 4, 100, 16, generator=g, dtype=torch.float64)

    def grads(device, dtype, backend):
        leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v) + ((sinks,) if with_sinks else ())]
        out = sf.sparse_attention(
            *leaves[:3], layout, key_padding_mask=kpm.to(device), softcap=SOFTCAP,
            sinks=leaves[3] if with_sinks else None, backend=backend,
        )  # fmt: skip
        return [out, *torch.autograd.grad((out * w.to(device, dtype)).sum(), leaves)]

    got = grads("cuda", torch.float32, "flex")
    want = grads("cpu", torch.float64, "reference")
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-4, rtol=1e-4)
