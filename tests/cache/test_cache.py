"""The sink + window cache against full recomputation of the model on the whole prefix."""

import pytest
import torch

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.cache import SinkWindowCache, SinkWindowSpec, sink_window_spec
from sparseformer.generate import decode_step, generate, new_cache, stream

W, S = 20, 3


def make_model(seed: int, window: int = W, sinks: int = S, scale: float = 1.0) -> sf.nn.SparseCausalLM:
    torch.manual_seed(seed)
    pattern = P.SlidingWindow(window, right=0) | P.Global(tokens=sinks) if sinks else P.SlidingWindow(window, right=0)
    cfg = sf.nn.CausalLMConfig(d_model=32, n_layers=2, n_heads=4, block_size=16, pattern=pattern, backend="reference")
    model = sf.nn.SparseCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def recompute(model, prompt, n):
    """Greedy generation recomputing the full model on the whole prefix at every step."""
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq


@pytest.mark.parametrize("sinks", [0, S])
def test_logits_match_full_recompute(sinks):
    model = make_model(0, sinks=sinks)
    seq = torch.randint(0, 256, (2, 3 * W + 7))  # well past the window: the ring wraps twice
    with torch.no_grad():
        full = model(seq)  # [B, L, V]
    cache = new_cache(model, batch=2)
    for t in range(seq.shape[1]):
        step = decode_step(model, cache, seq[:, t])
        torch.testing.assert_close(step, full[:, t], atol=1e-4, rtol=1e-4)
    assert cache.k.shape[3] == sinks + W + 1


def test_greedy_token_for_token():
    model = make_model(1, scale=2.5)  # larger weights: a varied, non-repeating greedy sequence
    prompt = torch.randint(0, 256, (2, 4))
    n = 2 * W + 10
    ref = recompute(model, prompt, n)
    assert ref[:, prompt.shape[1] :].unique().numel() > 5, "degenerate reference: the test would prove little"
    assert torch.equal(generate(model, prompt, n), ref)


def test_attends_exactly_the_layout_row():
    """At every position the cache attends exactly the keys of the compiled causal layout's row."""
    model = make_model(2)
    cache = new_cache(model)
    length = 2 * (S + W) + 5
    dense = model.cfg.pattern.compile(q_len=length, num_heads=4, block_size=16, causal=True).to_dense_mask()[0]
    for t in range(length):
        cache.write(0, t, torch.randn(1, 4, 8), torch.randn(1, 4, 8))
        cache.advance()
        keep = cache.attend_mask(t)
        attended = sorted(cache.positions[keep].tolist())
        assert attended == dense[t].nonzero().flatten().tolist()
        assert len(set(cache.positions[cache.positions >= 0].tolist())) == int((cache.positions >= 0).sum())


def test_unwritten_and_stale_slots_do_not_leak():
    """Poisoning every slot the mask drops leaves the logits unchanged."""
    model = make_model(3)
    seq = torch.randint(0, 256, (1, W + S + 9))
    clean, dirty = new_cache(model), new_cache(model)
    dirty.k.fill_(1e4)
    dirty.v.fill_(-1e4)
    for t in range(seq.shape[1]):
        a = decode_step(model, clean, seq[:, t])
        b = decode_step(model, dirty, seq[:, t])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # Poison what the next query must not see: stale window slots (none exist yet early on).
        drop = ~dirty.attend_mask(t + 1)
        drop[dirty.slot(t + 1)] = False  # the slot about to be written
        dirty.k[:, :, :, drop] = 1e4
        dirty.v[:, :, :, drop] = -1e4


def test_memory_is_fixed():
    """The cache is allocated once: the same buffers, whatever the number of tokens."""
    model = make_model(4)
    cache = new_cache(model)
    ptrs, nbytes = (cache.k.data_ptr(), cache.v.data_ptr()), cache.nbytes
    n = 3 * (W + S)
    list(stream(model, torch.randint(0, 256, (1, 2)), n, cache=cache))
    assert cache.length == 2 + n
    assert (cache.k.data_ptr(), cache.v.data_ptr()) == ptrs and cache.nbytes == nbytes
    assert cache.k.shape == (2, 1, 4, S + W + 1, 8)


def test_spec_and_errors():
    assert sink_window_spec(P.SlidingWindow(7, right=0) | P.Global(tokens=2)) == SinkWindowSpec(7, 2)
    assert sink_window_spec(P.SlidingWindow(7, right=0)) == SinkWindowSpec(7, 0)
    for bad in (
        P.SlidingWindow(7),
        P.SlidingWindow(1, right=0, unit="block"),
        P.SlidingWindow(7, right=0) | P.Global(blocks=1),
    ):
        with pytest.raises(ValueError, match="SlidingWindow"):
            sink_window_spec(bad)
    with pytest.raises(ValueError, match="batch"):
        SinkWindowCache(SinkWindowSpec(4, 1), n_layers=1, batch=0, n_heads=1, head_dim=2)
    cache = SinkWindowCache(SinkWindowSpec(4, 1), n_layers=1, batch=1, n_heads=1, head_dim=2)
    with pytest.raises(ValueError, match="next position"):
        cache.write(0, 3, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="prompt"):
        list(stream(make_model(5), torch.zeros(1, 0, dtype=torch.long), 1))
