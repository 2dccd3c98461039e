"""Encoders (BERT family): sparse attention reproduces the stock model with a dense pattern and
the dense-masked model with a sparse one; padding masks are honoured."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402
from sparseformer import patterns as P  # noqa: E402

from .tiny import bert, copy_of  # noqa: E402


def _batch(vocab=200, length=70):
    ids = torch.randint(1, vocab, (3, length))
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, -13:] = 0  # right padding, as a tokenizer pads
    mask[2, -40:] = 0
    return ids, mask


@pytest.mark.parametrize("block_size", [16, 64])
def test_dense_pattern_reproduces_stock_model(block_size):
    stock = bert()
    sparse = sfh.sparsify(copy_of(stock), P.Dense(), block_size=block_size)
    ids, mask = _batch()
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask).last_hidden_state
        got = sparse(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "pattern",
    [
        P.SlidingWindow(1, unit="block") | P.Global(tokens=1),
        P.BlockLocal(),
        P.BigBird(num_random_blocks=1, seed=3),
        P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.StridedSample(3),
    ],
)
def test_sparse_pattern_matches_dense_masked_model(pattern):
    stock = bert()
    sparse = sfh.sparsify(copy_of(stock), pattern, block_size=16)
    ids, mask = _batch()
    layout = pattern.compile(q_len=ids.shape[1], num_heads=4, block_size=16)
    bias = layout.to_dense_bias(torch.float32)  # sampled blocks' log-weights (0 elsewhere)
    allowed = layout.to_dense_mask()[None] & mask.bool()[:, None, None, :]  # [B, 1, L, L]
    additive = torch.where(allowed, bias[None], torch.tensor(float("-inf")))
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=additive).last_hidden_state
        got = sparse(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max() <= 1e-5


def test_layers_picks_the_sparse_layers():
    """``layers=[i]``: layer i computes the pattern, every other layer the stock dense attention."""
    pattern = P.BlockLocal()
    stock = bert()
    ids = torch.randint(1, 200, (2, 64))

    def states(model):
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True).hidden_states  # embeddings, layer 0, layer 1

    want_dense = states(stock)
    want_sparse = states(sfh.sparsify(copy_of(stock), pattern, block_size=16))
    first = states(sfh.sparsify(copy_of(stock), pattern, block_size=16, layers=[0]))
    second = states(sfh.sparsify(copy_of(stock), pattern, block_size=16, layers=(1,)))
    close = lambda a, b: (a - b).abs().max() <= 1e-5  # noqa: E731
    assert not close(want_sparse[1], want_dense[1]) and not close(want_sparse[2], want_dense[2])
    assert close(first[1], want_sparse[1]) and not close(first[2], want_sparse[2])
    assert close(second[1], want_dense[1]) and not close(second[2], want_dense[2])
    both = states(sfh.sparsify(copy_of(stock), pattern, block_size=16, layers=[1, 0]))
    assert close(both[2], want_sparse[2])


def test_layers_density_and_bad_layers():
    from sparseformer.hf.attention import settings

    pattern = P.BlockLocal()
    model = sfh.sparsify(bert(), pattern, block_size=16, layers=[1])
    per_layer = pattern.compile(q_len=64, num_heads=4, block_size=16).density
    assert settings(model.config).density(64, 4, 2) == pytest.approx((1 + per_layer) / 2)
    for bad in ([], [-1], ["0"], [True], 1):
        with pytest.raises(ValueError, match="layers"):
            sfh.sparsify(bert(), pattern, layers=bad)
    with pytest.raises(ValueError, match="num_hidden_layers=2"):
        sfh.sparsify(bert(), pattern, layers=[2])


def test_global_cls_token_sees_everything():
    """With P.Global(tokens=1) only position 0 ([CLS]) changes when a far token changes."""
    model = sfh.sparsify(bert(), P.BlockLocal() | P.Global(tokens=1), block_size=16)
    ids = torch.randint(1, 200, (1, 64))
    other = ids.clone()
    other[0, 60] = (ids[0, 60] + 1) % 199 + 1
    with torch.no_grad():
        a, b = model(input_ids=ids).last_hidden_state, model(input_ids=other).last_hidden_state
    changed = (a - b).abs().amax(-1)[0] > 1e-6  # [L]
    assert changed[0] and changed[48:].all() and not changed[1:48].any()


def test_from_pretrained_with_config_entry(tmp_path):
    from transformers import AutoConfig, AutoModel

    stock = bert()
    stock.save_pretrained(tmp_path)
    sfh.register()
    config = AutoConfig.from_pretrained(tmp_path)
    config.sparseformer = sfh.config_entry(P.SlidingWindow(8), block_size=16)
    model = AutoModel.from_pretrained(tmp_path, config=config, attn_implementation="sparseformer").eval()
    ref = sfh.sparsify(copy_of(stock), P.SlidingWindow(8), block_size=16)
    ids = torch.randint(1, 200, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state)
    model.save_pretrained(tmp_path / "again")  # the entry is JSON: it saves with the config
    assert AutoConfig.from_pretrained(tmp_path / "again").sparseformer == config.sparseformer


def test_gradients_flow():
    model = sfh.sparsify(bert(), P.SlidingWindow(1, unit="block"), block_size=16)
    out = model(input_ids=torch.randint(1, 200, (2, 40))).last_hidden_state
    out.square().mean().backward()
    grad = model.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        sfh.sparsify(torch.nn.Linear(2, 2), P.Dense())
    with pytest.raises(TypeError, match="pattern"):
        sfh.sparsify(bert(), "dense")
    with pytest.raises(ValueError, match="block_size"):
        sfh.sparsify(bert(), P.Dense(), block_size=0)
    with pytest.raises(ValueError, match="backend"):
        sfh.sparsify(bert(), P.Dense(), backend="fast")
    model = bert()
    sfh.register()
    model.config.sparseformer = "dense"
    model.set_attn_implementation("sparseformer")
    with pytest.raises(ValueError, match="config.sparseformer"):
        model(input_ids=torch.randint(1, 200, (1, 8)))
    with pytest.raises(ValueError, match="layers=.*needs a pattern"):
        sfh.sparsify(bert(), layers=[0])


def test_no_entry_runs_the_model_exactly():
    """``attn_implementation="sparseformer"`` without ``config.sparseformer``: BERT (full attention
    only) computes what the stock model computes, with right padding."""
    stock = bert()
    model = copy_of(stock)
    sfh.register()
    model.set_attn_implementation("sparseformer")
    assert not hasattr(model.config, "sparseformer")
    ids, mask = _batch()
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask).last_hidden_state
        got = model(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max() <= 1e-5


def test_training_on_auto_backend_gives_the_gather_gradients():
    """Training no longer forces 'gather': on CPU 'auto' runs the native kernel and its backward,
    which must give gather's gradients (here through a whole tiny BERT, with padding)."""
    from sparseformer.attention import pick_backend

    if pick_backend(torch.zeros(1, 1, 1, 8), 0.0) != "cpu":
        pytest.skip("native cpu kernel unavailable")
    pattern = P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.RandomBlocks(2, seed=0)
    ids, mask = _batch()
    weight = torch.randn(3, 70, 32)
    grads = []
    for backend in ("gather", "auto"):
        model = sfh.sparsify(bert(), pattern, block_size=16, backend=backend)
        (model(input_ids=ids, attention_mask=mask).last_hidden_state * weight).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None and "key.bias" not in n})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():  # key biases left out: their true gradient is 0 (softmax shift)
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()), msg=name)
