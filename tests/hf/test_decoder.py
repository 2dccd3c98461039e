"""Decoders (GPT-2, Llama-style with grouped-query attention): forward and ``generate()`` with the
KV cache, against the stock model (dense pattern) and a dense-masked reference (sparse pattern)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402
from sparseformer import patterns as P  # noqa: E402

from .tiny import copy_of, gpt2, llama  # noqa: E402

MODELS = {"gpt2": gpt2, "llama": llama}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_pattern_reproduces_stock_logits_with_left_padding(name):
    stock = MODELS[name]()
    sparse = sfh.sparsify(copy_of(stock), P.Dense(), block_size=16)
    ids = torch.randint(0, 100, (2, 45))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0  # left padding, as for batched generation
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask).logits
        got = sparse(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_pattern_generates_what_the_stock_model_generates(name):
    stock = MODELS[name]()
    sparse = sfh.sparsify(copy_of(stock), P.Dense(), block_size=16)
    prompt = torch.randint(0, 100, (2, 21))
    kw = dict(max_new_tokens=30, do_sample=False, use_cache=True, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(sparse.generate(prompt, **kw), stock.generate(prompt, **kw))


def _reference_generate(stock, pattern, prompt, steps, block_size):
    """Greedy decoding without a cache: each step runs the stock model on the whole sequence with
    the dense mask of the causal layout (the oracle)."""
    seq = prompt
    for _ in range(steps):
        length = seq.shape[1]
        allowed = pattern.compile(q_len=length, num_heads=4, block_size=block_size, causal=True).to_dense_mask()
        mask = allowed[None].expand(seq.shape[0], 1, length, length)  # bool [B, 1, L, L]
        with torch.no_grad():
            logits = stock(input_ids=seq, attention_mask=mask).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return seq


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparse_causal_generate_with_cache_matches_dense_masked_reference(name):
    stock = MODELS[name]()
    pattern = P.SlidingWindow(5) | P.Global(tokens=2)
    sparse = sfh.sparsify(copy_of(stock), pattern, block_size=16)
    prompt = torch.randint(0, 100, (2, 19))
    with torch.no_grad():
        got = sparse.generate(prompt, max_new_tokens=25, do_sample=False, use_cache=True, pad_token_id=0)
    want = _reference_generate(stock, pattern, prompt, 25, 16)
    assert torch.equal(got, want)


def test_sparse_causal_logits_match_dense_masked_reference():
    stock = llama()
    pattern = P.SlidingWindow(1, unit="block") | P.RandomBlocks(1, seed=2, reweight=False)
    sparse = sfh.sparsify(copy_of(stock), pattern, block_size=16)
    ids = torch.randint(0, 100, (2, 60))
    allowed = pattern.compile(q_len=60, num_heads=4, block_size=16, causal=True).to_dense_mask()
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=allowed[None].expand(2, -1, 60, 60)).logits
        got = sparse(input_ids=ids).logits
    assert (got - want).abs().max() <= 1e-5
