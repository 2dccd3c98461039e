"""``BlockLayout.prefix``: a layout cut to a shorter length (a traced, symbolic one in an export)
against the pattern compiled at that length, through the native kernel in float64 against the
dense reference; the kernel's unused CSR capacity; ``pattern_attention`` at a symbolic length on
the ``cpu`` backend under ``torch.export``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.kernels import cpu
from sparseformer.kernels.reference import reference_attention

if not cpu.is_available():  # pragma: no cover - depends on the machine
    pytest.skip(f"native cpu kernel unavailable: {cpu.unavailable_reason()}", allow_module_level=True)

#: Patterns whose pairs of two positions do not depend on the length: band form and dense.
LENGTH_FREE = [
    P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
    P.SlidingWindow(37, right=0),
    P.SlidingWindow(5) | P.Global(tokens=3),
    P.Global(tokens=2, horizontal=False) | P.SlidingWindow(2, unit="block"),
    P.DistanceDecay((0.05, 0.2, 0.5, 0.1), eps=1e-2),  # per-head windows and slopes: a layout per head
    P.BlockLocal() | P.DistanceDecay(0.3, eps=0.05),
    P.Dense(),
]


@given(
    st.sampled_from(LENGTH_FREE),
    st.integers(2, 150),
    st.data(),
    st.sampled_from([16, 32]),
    st.booleans(),
    st.sampled_from([1, 4]),
)
def test_prefix_equals_the_pattern_at_the_length(pattern, full_length, data, bs, causal, kv_heads):
    length = data.draw(st.integers(1, full_length), label="length")
    full = pattern.compile(q_len=full_length, num_heads=4, block_size=bs, causal=causal)
    cut = full.prefix(length)
    nq = -(-length // bs)
    used = int(cut.row_ptr[-1])
    assert cut.row_ptr.shape == (full.layout_heads * nq + 1,) and cut.col_idx.shape == (full.nnz,)
    assert used <= full.nnz and bool((cut.col_idx[:used] < nq).all())
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    q = torch.randn(2, 4, length, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, length, 8, generator=g, dtype=torch.float64) for _ in range(2))
    keep = torch.rand(2, length, generator=g) > 0.2
    want = reference_attention(
        q, k, v, pattern.compile(q_len=length, num_heads=4, block_size=bs, causal=causal), key_padding_mask=keep,
        scale=0.3,
    )  # fmt: skip
    got = cpu.attention(q, k, v, cut, key_padding_mask=keep, scale=0.3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_entries_after_row_ptr_end_are_never_read():
    """The CSR's capacity past ``row_ptr[-1]`` holds anything, out-of-range indices included."""
    full = (P.SlidingWindow(1, unit="block") | P.Global(blocks=1)).compile(q_len=200, num_heads=2, block_size=16)
    cut = full.prefix(70)
    used = int(cut.row_ptr[-1])
    assert used < full.nnz
    col_idx, mask_id = cut.col_idx.clone(), cut.mask_id.clone()
    col_idx[used:], mask_id[used:] = 10**6, 10**6
    junk = sf.layout.LayoutPrefix(**{**vars(cut), "col_idx": col_idx, "mask_id": mask_id})
    q, k, v = (torch.randn(1, 2, 70, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(cpu.attention(q, k, v, junk, scale=0.5), cpu.attention(q, k, v, cut, scale=0.5))


def test_prefix_argument_errors():
    layout = P.SlidingWindow(8).compile(q_len=64, num_heads=2, block_size=16)
    with pytest.raises(ValueError, match=r"length must be in \[1, q_len = 64\], got 65"):
        layout.prefix(65)
    with pytest.raises(ValueError, match=r"length must be in \[1, q_len = 64\], got 0"):
        layout.prefix(0)
    cross = P.SlidingWindow(8).compile(q_len=32, kv_len=64, num_heads=2, block_size=16)
    with pytest.raises(ValueError, match="prefix\\(\\) needs a self-attention layout .*q_len=32, kv_len=64"):
        cross.prefix(16)


class _Attention(torch.nn.Module):
    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def forward(self, q, k, v):
        return sf.pattern_attention(q, k, v, self.pattern, block_size=16, causal=True, backend="cpu")


def _export(pattern, max_length):
    qkv = tuple(torch.randn(1, 2, 40, 8) for _ in range(3))  # three tensors: export would merge one passed thrice
    dim = torch.export.Dim("L", min=2, max=max_length)
    return torch.export.export(_Attention(pattern), qkv, dynamic_shapes=({2: dim},) * 3).module()


def test_pattern_attention_at_a_symbolic_length_on_the_cpu_backend():
    """``torch.export`` with a bounded length: one program, the native kernel at every length."""
    pattern = P.SlidingWindow(20, right=0) | P.Global(tokens=3)
    program = _export(pattern, 130)
    for length in (2, 17, 40, 99, 130):
        q, k, v = (torch.randn(1, 2, length, 8) for _ in range(3))
        want = reference_attention(
            q.double(), k.double(), v.double(), pattern.compile(q_len=length, num_heads=2, block_size=16, causal=True),
            scale=8**-0.5,
        )  # fmt: skip
        torch.testing.assert_close(program(q, k, v).double(), want, rtol=1e-5, atol=1e-5)


def test_symbolic_length_errors():
    with pytest.raises(Exception, match="needs a band-form pattern or P.Dense\\(\\).*RandomBlocks"):
        _export(P.SlidingWindow(20) | P.RandomBlocks(1, seed=0), 130)
    with pytest.raises(Exception, match="needs an upper bound"):
        _export(P.SlidingWindow(20), None)
