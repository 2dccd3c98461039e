"""Generation with the model's own caches: transformers keeps only the window for sliding layers
(memory bounded), and with a cache that keeps every key the decode steps of a sliding layer visit
only the window's tiles (the layout of one query at ``q_offset`` against the whole cache)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf.attention as hf_attention  # noqa: E402

from .native_checks import batch, pair  # noqa: E402
from .tiny import WINDOW  # noqa: E402


def _generate(model, steps, **kwargs):
    ids, mask = batch(WINDOW + 3, "left")
    with torch.no_grad():
        return model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=steps,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            **kwargs,
        )


def test_sliding_layers_cache_only_the_window():
    """Gemma 3 layers 0, 2 sliding, 1 full: after 6 windows of decoding the sliding layers hold
    ``WINDOW - 1`` keys, the full layer every token."""
    _, ours = pair("gemma3")
    out = _generate(ours, 6 * WINDOW)
    lengths = [layer.keys.shape[-2] for layer in out.cache.layers]
    assert lengths == [WINDOW - 1, out.sequences.shape[1] - 1, WINDOW - 1]


def test_decode_visits_only_the_window_tiles(monkeypatch):
    """A ``DynamicCache()`` without the config keeps every key in every layer; Mistral's layers are
    all sliding, so each decode step's layout visits at most the tiles that one window of ``WINDOW``
    keys touches (2 tiles of 16), however long the cache, and the tokens equal the stock model's."""
    from transformers import DynamicCache

    stock, ours = pair("mistral")
    seen = []
    real = hf_attention.sparse_attention

    def spy(q, k, v, layout, **kwargs):
        seen.append(layout)
        return real(q, k, v, layout, **kwargs)

    monkeypatch.setattr(hf_attention, "sparse_attention", spy)
    got = _generate(ours, 10 * WINDOW, cache=DynamicCache())
    want = _generate(stock, 10 * WINDOW, cache=DynamicCache())
    assert torch.equal(got.sequences, want.sequences)
    decode = [layout for layout in seen if layout.q_len == 1]
    assert len(decode) == 2 * (10 * WINDOW - 1)  # 2 layers, every step after the prefill
    assert max(layout.kv_len for layout in decode) == got.sequences.shape[1] - 1  # 6 tiles of keys
    assert all(layout.q_offset == layout.kv_len - 1 and layout.nnz <= 2 for layout in decode)


@pytest.mark.parametrize("family", ["gemma3", "gpt_oss"])
def test_decode_steps_that_see_every_key_take_sdpa(monkeypatch, family):
    """Unpadded Gemma 3 (layers sliding, full, sliding; the model's own cache keeps the window):
    every decode step attends every key it is given, so no layer builds a layout for one query,
    and the tokens equal the stock model's. GPT-OSS's sinks are not SDPA's: its decode steps run
    the dense reference over the given keys (``masked_attention``), still without a layout."""
    stock, ours = pair(family, "eager" if family == "gpt_oss" else "sdpa")
    seen = []
    real = hf_attention.sparse_attention

    def spy(q, k, v, layout, **kwargs):
        seen.append(layout)
        return real(q, k, v, layout, **kwargs)

    monkeypatch.setattr(hf_attention, "sparse_attention", spy)
    ids = torch.randint(3, 100, (2, WINDOW + 3), generator=torch.Generator().manual_seed(1))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=3 * WINDOW, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        got, want = ours.generate(ids, **kwargs), stock.generate(ids, **kwargs)
    assert torch.equal(got, want)
    decode = [layout for layout in seen if layout.q_len == 1]
    assert decode == []


@pytest.mark.parametrize("seed", range(6))
def test_cached_step_equals_the_pairwise_definition(seed):
    """``_cached_step`` (the path of a chunk of queries after a symbolic-length cache) against its
    definition in float64, pair by pair: query ``i`` at position ``i + q_offset`` attends key ``j``
    iff ``lo <= i + q_offset - j <= hi`` and the key is real; grouped heads, soft-capping and
    sinks at random; a query with no key gives 0."""
    from sparseformer.hf.masks import MaskInfo
    from sparseformer.hf.native import Span

    g = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=g))

    b, hk, group, d = 2, draw(1, 2), draw(1, 3), draw(2, 9)
    lq, q_offset = draw(1, 9), draw(0, 20)
    lk = q_offset + lq
    lo = None if seed % 3 == 0 else draw(-3, 2)
    hi = None if seed % 2 == 0 else max(draw(0, 12), lo if lo is not None else 0)
    span = Span(lo, hi)
    q = torch.randn(b, hk * group, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hk, lk, d, generator=g, dtype=torch.float64)
    real = torch.rand(b, lk, generator=g) > 0.3
    softcap = 5.0 if seed % 2 else None
    sinks = torch.randn(hk * group, generator=g, dtype=torch.float64) if seed >= 3 else None
    mask = MaskInfo(span, lq, lk, q_offset, real)
    got = hf_attention._cached_step(q, k, v, span, q_offset, mask, 0.0, None, softcap, sinks)  # [B, Lq, H, D]
    want = torch.zeros_like(got)
    for bi in range(b):
        for h in range(hk * group):
            for i in range(lq):
                keys = [
                    j for j in range(lk)
                    if real[bi, j] and (lo is None or lo <= i + q_offset - j) and (hi is None or i + q_offset - j <= hi)
                ]  # fmt: skip
                if not keys:
                    continue
                s = torch.stack([q[bi, h, i] @ k[bi, h // group, j] for j in keys]) * d**-0.5
                if softcap is not None:
                    s = softcap * torch.tanh(s / softcap)
                z = torch.cat([s, sinks[h : h + 1]]) if sinks is not None else s
                p = torch.softmax(z, 0)[: len(keys)]
                want[bi, i, h] = sum(p[n] * v[bi, h // group, j] for n, j in enumerate(keys))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
