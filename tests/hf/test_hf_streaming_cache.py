"""``sfh.streaming_cache``: greedy ``generate()`` of a full-attention decoder sparsified with
``SlidingWindow(W, right=0) | Global(tokens=S)`` gives the tokens of ``DynamicCache`` (scores within
1e-5, fp32) while holding ``max(S, left padding) + W`` keys per layer whatever the length."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402
import sparseformer.hf.attention as hf_attention  # noqa: E402
import sparseformer.hf.cache as hf_cache  # noqa: E402
from sparseformer import patterns as P  # noqa: E402

from .tiny import copy_of, gpt2, llama, native  # noqa: E402

W, S = 8, 2
PATTERN = P.SlidingWindow(W, right=0) | P.Global(tokens=S)
TOL = 1e-5
PADS = (0, 1, 5)  # left padding of the three rows: none, fewer than S, more than S


def mistral():
    """Mistral without a sliding window: full causal attention (RoPE, grouped-query heads)."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=None,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )
    return MistralForCausalLM(cfg).eval()


def sparse(model, pattern=PATTERN):
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU (tests/conftest.py restores it)
    return sfh.sparsify(model, pattern, block_size=16)


def prompt(length: int, pads=PADS) -> tuple[torch.Tensor, torch.Tensor]:
    """``len(pads)`` rows of ``length`` random ids, row ``b`` left-padded with ``pads[b]`` tokens."""
    ids = torch.randint(3, 100, (len(pads), length), generator=torch.Generator().manual_seed(length))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    return ids, mask


def generate(model, ids, mask, steps: int, cache=None):
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=steps,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_scores=True,
            cache=cache,
        )
    return out.sequences, torch.stack(out.scores, 1)  # [B, P + steps], [B, steps, vocab]


def assert_same(got, want) -> None:
    assert torch.equal(got[0], want[0])
    assert (got[1] - want[1]).abs().max() <= TOL


@pytest.mark.parametrize("build", [llama, gpt2, mistral])
def test_tokens_equal_dynamic_cache_left_padded_batch(build):
    """Rows padded by 0, 1 (< S) and 5 (> S) tokens; the prompt (11) fits the cache, 6 windows of
    new tokens pass it. The cache then holds positions ``0 .. 4`` (the longest padding) and the last
    W: ``5 + W`` keys per layer."""
    model = sparse(build())
    ids, mask = prompt(11)
    cache = sfh.streaming_cache(model)
    assert_same(generate(model, ids, mask, 6 * W, cache), generate(model, ids, mask, 6 * W))
    assert {layer.keys.shape[-2] for layer in cache.layers} == {5 + W}


@pytest.mark.parametrize("window, sinks", [(W, S), (5, 0), (0, 3)])
def test_tokens_equal_dynamic_cache_long_prompt(window, sinks):
    """Batch 1, no padding, a prompt of 3 windows (the prefill itself evicts), other window and sink
    counts: no sinks, and a window of the token itself only."""
    pattern = P.SlidingWindow(window, right=0) | P.Global(tokens=sinks) if sinks else P.SlidingWindow(window, right=0)
    model = sparse(llama(), pattern)
    ids, mask = prompt(3 * W, pads=(0,))
    cache = sfh.streaming_cache(model)
    assert_same(generate(model, ids, mask, 4 * W, cache), generate(model, ids, mask, 4 * W))
    assert cache.layers[0].keys.shape[-2] == sinks + window


@settings(max_examples=8, deadline=None)
@given(
    window=st.integers(0, 10),
    sinks=st.integers(0, 4),
    length=st.integers(1, 20),
    pads=st.lists(st.integers(0, 19), min_size=1, max_size=3),
)
def test_tokens_equal_dynamic_cache_random(window, sinks, length, pads):
    """Random window, sink count, prompt length and left padding (each row keeps a real token),
    two windows and more of new tokens; the cache holds ``max(S, padding) + W`` keys at most."""
    pattern = P.SlidingWindow(window, right=0) | P.Global(tokens=sinks) if sinks else P.SlidingWindow(window, right=0)
    model = sparse(llama(), pattern)
    ids, mask = prompt(length, pads=[min(p, length - 1) for p in pads])
    cache = sfh.streaming_cache(model)
    steps = 2 * window + 5
    assert_same(generate(model, ids, mask, steps, cache), generate(model, ids, mask, steps))
    assert cache.layers[0].keys.shape[-2] <= max(sinks, *[min(p, length - 1) for p in pads]) + window


def test_the_comparison_can_fail():
    """The two things the exactness rests on change the scores: the pattern (the dense model
    differs), and the padding rule (a cache that assumed no padding keeps only ``S`` leading
    positions and reads the padding of the wrong keys)."""
    model = sparse(llama())
    ids, mask = prompt(11)
    want = generate(model, ids, mask, 4 * W)
    dense = generate(copy_of(llama()), ids, mask, 4 * W)
    assert (dense[1] - want[1]).abs().max() > 1e-2

    real = hf_cache.left_padding
    hf_cache.left_padding = lambda position_ids, length: 0
    try:
        wrong = generate(model, ids, mask, 4 * W, sfh.streaming_cache(model))
    finally:
        hf_cache.left_padding = real
    assert (wrong[1] - want[1]).abs().max() > 1e-2


def test_memory_is_bounded():
    """After 2 and 8 windows of new tokens every layer holds ``S + W`` keys and values: the same
    tensor sizes, the same bytes."""
    model = sparse(llama())
    ids, mask = prompt(5, pads=(0, 0))
    sizes = []
    for steps in (2 * W, 8 * W):
        cache = sfh.streaming_cache(model)
        generate(model, ids, mask, steps, cache)
        assert cache.get_seq_length() == 5 + steps - 1  # the last token is never fed back
        sizes.append(([tuple(layer.keys.shape) for layer in cache.layers], cache.nbytes))
    assert sizes[0] == sizes[1]
    assert sizes[0][0] == [(2, 2, S + W, 8)] * 2
    assert sizes[0][1] == 2 * 2 * (2 * 2 * (S + W) * 8) * 4  # layers x (keys, values) x elements x fp32


def test_decode_steps_attend_every_held_key(monkeypatch):
    """Once the window has passed the sinks, each decode step's layout is one query against the
    ``S + W + 1`` keys held (sinks, window, itself), and it attends all of them: the cache keeps no
    key the pattern leaves out."""
    model = sparse(llama())
    seen = []
    real = hf_attention.sparse_attention

    def spy(q, k, v, layout, **kwargs):
        seen.append(layout)
        return real(q, k, v, layout, **kwargs)

    monkeypatch.setattr(hf_attention, "sparse_attention", spy)
    ids, mask = prompt(5, pads=(0,))
    generate(model, ids, mask, 4 * W, sfh.streaming_cache(model))
    late = [layout for layout in seen if layout.q_len == 1 and layout.kv_len == S + W + 1]
    assert len(late) == 2 * (5 + 4 * W - 1 - (S + W))  # 2 layers, every step from position S + W + 1 on
    assert all(layout.q_offset == S + W and bool(layout.to_dense_mask().all()) for layout in late)
    assert max(layout.kv_len for layout in seen) == S + W + 1


@pytest.mark.parametrize(
    "position_ids, pad",
    [([[0, 1, 2, 3]], 0), ([[0, 1, 2, 3], [0, 0, 0, 1], [0, 0, 0, 0]], 3), ([[0, 0, 1, 2]] * 2, 1)],
)
def test_left_padding_read_from_position_ids(position_ids, pad):
    assert hf_cache.left_padding(torch.tensor(position_ids), 4) == pad


@pytest.mark.parametrize("position_ids", [None, [[1, 2, 3, 4]], [[0, 1, 0, 0]], [[0, 1, 2]]])
def test_other_position_ids_are_refused(position_ids):
    with pytest.raises(ValueError, match="position_ids"):
        hf_cache.left_padding(None if position_ids is None else torch.tensor(position_ids), 4)


def test_right_padding_is_refused():
    model = sparse(llama())
    ids, mask = prompt(6, pads=(0, 0))
    mask[1, -2:] = 0
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, ids, mask, 2, sfh.streaming_cache(model))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: llama(), "attn_implementation='sdpa'"),
        (lambda: sfh.sparsify(llama()), "pattern=None"),
        (lambda: sparse(llama(), P.SlidingWindow(W)), "SlidingWindow\\(W, right=0\\)"),
        (lambda: sparse(llama(), PATTERN | P.RandomBlocks(1, seed=0)), "SlidingWindow\\(W, right=0\\)"),
        (lambda: sfh.sparsify(llama(), PATTERN, block_size=16, layers=[0]), "layers=\\[0\\]"),
        (lambda: sparse(native("mistral")), "DynamicCache\\(config=model.config\\)"),
    ],
    ids=["not-sparsified", "no-pattern", "symmetric-window", "random-blocks", "some-layers", "sliding-model"],
)
def test_what_is_not_sink_and_window_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        sfh.streaming_cache(make())


def test_not_a_model_and_crop_are_refused():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        sfh.streaming_cache(torch.nn.Linear(2, 2))
    model = sparse(llama())
    cache = sfh.streaming_cache(model)
    ids, mask = prompt(4, pads=(0,))
    generate(model, ids, mask, 2, cache)
    with pytest.raises(ValueError, match="cropped"):
        cache.crop(-1)
