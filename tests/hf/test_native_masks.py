"""The mask hook: transformers' mask functions read as spans of distances, checked against the
stock ``sdpa_mask`` (bool L x L) at random sizes, offsets and padding; the span compiled as a
layout keeps exactly the stock mask's pairs. Unknown mask functions are refused by name."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sparseformer.hf.masks import MaskInfo, span_of, sparseformer_mask  # noqa: E402
from sparseformer.hf.native import Span  # noqa: E402


def _mask_functions(w: int) -> dict:
    from transformers import masking_utils as mu
    from transformers.models.gemma3.modeling_gemma3 import _bidirectional_window_overlay

    return {
        "causal": mu.causal_mask_function,
        "bidirectional": mu.bidirectional_mask_function,
        "sliding causal": mu.sliding_window_causal_mask_function(w),
        "sliding bidirectional": mu.sliding_window_bidirectional_mask_function(w),
        "gemma3 bidirectional sliding": mu.or_masks(
            mu.sliding_window_causal_mask_function(w), _bidirectional_window_overlay(w)
        ),
        "causal and window": mu.and_masks(mu.causal_mask_function, mu.sliding_window_overlay(w)),
    }


def _dense(info: MaskInfo, batch: int) -> torch.Tensor:
    """bool [B, 1, Lq, Lk] from the span's definition."""
    d = torch.arange(info.q_length)[:, None] + info.q_offset - torch.arange(info.kv_length)[None, :]
    keep = torch.ones_like(d, dtype=torch.bool)
    if info.span.lo is not None:
        keep &= d >= info.span.lo
    if info.span.hi is not None:
        keep &= d <= info.span.hi
    keep = keep[None, None].expand(batch, 1, -1, -1)
    return keep if info.key_padding is None else keep & info.key_padding[:, None, None, :]


@given(
    name=st.sampled_from(sorted(_mask_functions(1))),
    w=st.integers(1, 9),
    q_length=st.integers(1, 20),
    seen=st.integers(0, 30),
    extra=st.integers(0, 12),
    short=st.integers(0, 3),
    padded=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mask_info_equals_stock_sdpa_mask(name, w, q_length, seen, extra, short, padded, seed):
    """Queries at positions ``seen ..``; keys from ``kv_offset`` (a sliding cache drops the oldest),
    ``extra`` slots past the last query (a static cache); the 2-D mask ``short`` positions short."""
    from transformers.masking_utils import sdpa_mask

    g = torch.Generator().manual_seed(seed)
    kv_offset = int(torch.randint(0, seen + 1, (1,), generator=g))
    kv_length = seen + q_length + extra - kv_offset
    length = seen + q_length + extra - min(short, seen + q_length + extra - 1)  # at least one position
    pad = torch.rand(2, length, generator=g) > 0.3 if padded else None
    kw = dict(batch_size=2, q_length=q_length, kv_length=kv_length, q_offset=seen, kv_offset=kv_offset)
    fn = _mask_functions(w)[name]
    want = sdpa_mask(**kw, mask_function=fn, attention_mask=pad, allow_is_causal_skip=False)
    info = sparseformer_mask(**kw, mask_function=fn, attention_mask=pad)
    assert (info.q_length, info.kv_length, info.q_offset) == (q_length, kv_length, seen - kv_offset)
    assert torch.equal(_dense(info, 2), want.expand(2, 1, q_length, kv_length))
    # the span compiled as a layout keeps the same pairs
    pattern, causal = info.span.pattern()
    layout = pattern.compile(
        q_len=q_length, num_heads=1, block_size=16, kv_len=kv_length, causal=causal, q_offset=info.q_offset
    )
    keep = layout.to_dense_mask()[None]  # [1, 1, Lq, Lk]
    if info.key_padding is not None:
        keep = keep & info.key_padding[:, None, None, :]
    assert torch.equal(keep.expand(2, 1, -1, -1), want.expand(2, 1, q_length, kv_length))


@given(
    q_length=st.integers(1, 6),
    seen=st.integers(0, 20),
    where=st.sampled_from(["none", "ones", "before window", "in window", "short"]),
    seed=st.integers(0, 2**16),
)
def test_every_key_says_whether_any_key_is_padding(q_length, seen, where, seed):
    """``every_key``: no padding mask, or every key ``kv_offset <= p < kv_offset + kv_length`` of
    the 2-D mask real; a zero before the keys (dropped by a sliding cache) does not count, one
    among them or a mask that ends before them (padding) does."""
    from transformers import masking_utils as mu

    g = torch.Generator().manual_seed(seed)
    kv_offset = int(torch.randint(0, seen + 1, (1,), generator=g))
    kv_length = seen + q_length - kv_offset
    total = seen + q_length
    pad = None if where == "none" else torch.ones(2, total - (where == "short"), dtype=torch.long)
    if where == "before window" and kv_offset > 0:
        pad[int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(0, kv_offset, (1,), generator=g))] = 0
    if where == "in window":
        pad[int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(kv_offset, total, (1,), generator=g))] = 0
    info = sparseformer_mask(
        batch_size=2,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=seen,
        kv_offset=kv_offset,
        mask_function=mu.causal_mask_function,
        attention_mask=pad,
    )
    assert info.every_key == (where in ("none", "ones", "before window"))
    assert info.every_key == (info.key_padding is None or bool(info.key_padding.all()))  # agrees with the keys


def test_settings_follow_a_changed_entry():
    """``settings(config)`` keeps what it parsed only while ``config.sparseformer`` is unchanged:
    an entry edited in place or replaced is read anew."""
    import sparseformer.patterns as P
    from sparseformer.hf.attention import config_entry, settings

    class Config:
        pass

    config = Config()
    assert settings(config).pattern is None and settings(config).block_size == 64
    config.sparseformer = config_entry(P.SlidingWindow(2), block_size=16)
    assert settings(config).block_size == 16 and settings(config).pattern == P.SlidingWindow(2)
    config.sparseformer["block_size"] = 32  # in place
    assert settings(config).block_size == 32
    config.sparseformer["layers"] = [1]
    assert settings(config).layers == (1,) and settings(config).pattern_of(0) == P.Dense()
    config.sparseformer = config_entry(P.SlidingWindow(3))  # replaced
    assert settings(config).pattern == P.SlidingWindow(3) and settings(config).layers is None
    config.sparseformer = {"block_size": 8}
    with pytest.raises(ValueError, match="config_entry"):
        settings(config)


def test_known_spans():
    fns = _mask_functions(5)
    assert span_of(fns["causal"]) == Span(0, None)
    assert span_of(fns["bidirectional"]) == Span(None, None)
    assert span_of(fns["sliding causal"]) == Span(0, 4)  # kv_idx > q_idx - 5: 5 keys, itself included
    assert span_of(fns["sliding bidirectional"]) == Span(-5, 5)  # |q_idx - kv_idx| <= 5
    assert span_of(fns["gemma3 bidirectional sliding"]) == Span(-4, 4)  # |q_idx - kv_idx| < 5


def test_unknown_mask_functions_are_refused_by_name():
    from transformers import masking_utils as mu

    for fn, name in [
        (mu.chunked_causal_mask_function(4, torch.zeros(1, dtype=torch.long)), "chunked_overlay"),
        (mu.and_masks(mu.causal_mask_function, mu.packed_sequence_mask_function(torch.zeros(1, 8))), "packed_sequence"),
        (mu.or_masks(mu.causal_mask_function, mu.blockwise_overlay(torch.zeros(1, 8))), "blockwise_overlay"),
        (lambda b, h, q, kv: q >= kv, "test_unknown_mask_functions_are_refused_by_name"),
    ]:
        with pytest.raises(ValueError, match=name):
            span_of(fn)


def test_span_algebra_and_patterns():
    import sparseformer.patterns as P

    assert Span(0, None) & Span(None, 7) == Span(0, 7)
    assert Span(0, 3) | Span(-3, 3) == Span(-3, 3)
    assert Span(0, 3) | Span(4, 9) == Span(0, 9)  # adjacent integers: one band
    with pytest.raises(ValueError, match="gap"):
        Span(0, 3) | Span(5, 9)
    with pytest.raises(ValueError, match="empty"):
        Span(0, 3) & Span(5, 9)
    assert Span(0, 7).pattern() == (P.SlidingWindow(7, 0), True)
    assert Span(-4, 4).pattern() == (P.SlidingWindow(4, 4), False)
    assert Span(0, None).pattern() == (P.Dense(), True)
    assert Span(None, None).pattern() == (P.Dense(), False)
    with pytest.raises(ValueError, match="cannot run"):
        Span(2, 5).pattern()  # the query's own position left out
    with pytest.raises(TypeError, match="lo"):
        Span(0.5, None)
