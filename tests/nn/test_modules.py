"""The drop-in modules reproduce PyTorch's with a dense pattern and load its weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseformer as sf
from sparseformer import patterns as P


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
def test_mha_matches_pytorch_with_dense_pattern(batch_first, kdim):
    torch.manual_seed(0)
    e, h, length = 32, 4, 37
    dense = nn.MultiheadAttention(e, h, batch_first=batch_first, kdim=kdim, vdim=kdim, dtype=torch.float64)
    ours = sf.nn.SparseMultiheadAttention(
        e,
        h,
        batch_first=batch_first,
        kdim=kdim,
        vdim=kdim,
        dtype=torch.float64,
        pattern=P.Dense(),
        block_size=16,
        backend="gather",
    )
    ours.load_state_dict(dense.state_dict())
    shape = (2, length) if batch_first else (length, 2)
    x = torch.randn(*shape, e, dtype=torch.float64)
    kv = torch.randn(*shape, kdim or e, dtype=torch.float64)
    pad = torch.zeros(2, length, dtype=torch.bool)
    pad[1, -5:] = True
    want, want_w = dense(x, kv, kv, key_padding_mask=pad)
    got, got_w = ours(x, kv, kv, key_padding_mask=pad, need_weights=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_w, want_w, rtol=1e-10, atol=1e-10)


def test_mha_causal_mask_unbatched_and_float_padding():
    torch.manual_seed(0)
    e, h, length = 16, 2, 20
    dense = nn.MultiheadAttention(e, h, dtype=torch.float64)
    ours = sf.nn.SparseMultiheadAttention(e, h, dtype=torch.float64, pattern=P.Dense(), block_size=16)
    ours.load_state_dict(dense.state_dict())
    x = torch.randn(length, e, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(length, dtype=torch.float64)
    want, _ = dense(x, x, x, attn_mask=mask, need_weights=False)
    got, _ = ours(x, x, x, attn_mask=mask)
    torch.testing.assert_close(got, want)
    got2, _ = ours(x, x, x, is_causal=True)
    torch.testing.assert_close(got2, want)
    xb = torch.randn(length, 2, e, dtype=torch.float64)
    fpad = torch.zeros(2, length, dtype=torch.float64)
    fpad[0, :3] = float("-inf")
    torch.testing.assert_close(ours(xb, xb, xb, key_padding_mask=fpad)[0], dense(xb, xb, xb, key_padding_mask=fpad)[0])


def test_mha_refuses_what_it_cannot_do_sparsely():
    with pytest.raises(ValueError, match="add_bias_kv"):
        sf.nn.SparseMultiheadAttention(16, 2, add_bias_kv=True, pattern=P.Dense())
    with pytest.raises(TypeError, match="pattern must be a sparseformer Pattern"):
        sf.nn.SparseMultiheadAttention(16, 2, pattern="dense")
    m = sf.nn.SparseMultiheadAttention(16, 2, pattern=P.BlockLocal(), block_size=16)
    x = torch.randn(10, 1, 16)
    with pytest.raises(ValueError, match="attn_mask must be None or the causal mask"):
        m(x, x, x, attn_mask=torch.zeros(10, 10, dtype=torch.bool).fill_diagonal_(True))
    with pytest.raises(ValueError, match="only 0"):
        m(x, x, x, key_padding_mask=torch.full((1, 10), 0.5))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_loads_dense_weights_and_matches(norm_first):
    torch.manual_seed(0)
    kw = dict(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=norm_first)
    dense = nn.TransformerEncoderLayer(**kw, dtype=torch.float64)
    ours = sf.nn.SparseTransformerEncoderLayer(**kw, dtype=torch.float64, pattern=P.Dense(), block_size=16)
    ours.load_state_dict(dense.state_dict())
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    pad = torch.zeros(2, 50, dtype=torch.bool)
    pad[1, 40:] = True
    torch.testing.assert_close(ours(x, src_key_padding_mask=pad), dense(x, src_key_padding_mask=pad))


def test_inside_transformer_encoder_eval_no_grad():
    """nn.TransformerEncoder's nested-tensor fast path must stay off for our layer, and the
    sparse pattern must really be used (a block-local encoder differs from the dense one)."""
    torch.manual_seed(0)
    kw = dict(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
    dense_layer = nn.TransformerEncoderLayer(**kw)
    sparse = nn.TransformerEncoder(sf.nn.SparseTransformerEncoderLayer(**kw, pattern=P.BlockLocal(), block_size=16), 2)
    same = nn.TransformerEncoder(sf.nn.SparseTransformerEncoderLayer(**kw, pattern=P.Dense(), block_size=16), 2)
    dense = nn.TransformerEncoder(dense_layer, 2, enable_nested_tensor=False)
    for m in (sparse, same):
        m.load_state_dict(dense.state_dict())
    for m in (sparse, same, dense):
        m.eval()
    x = torch.randn(2, 48, 32)
    pad = torch.zeros(2, 48, dtype=torch.bool)
    pad[1, 30:] = True
    with torch.no_grad():
        want = dense(x, src_key_padding_mask=pad)
        got = same(x, src_key_padding_mask=pad)
        local = sparse(x, src_key_padding_mask=pad)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1, :30], want[1, :30], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(local[0], want[0], atol=1e-3)


def test_sparse_layer_trains():
    torch.manual_seed(0)
    layer = sf.nn.SparseTransformerEncoderLayer(32, 4, 64, batch_first=True, pattern=P.BigBird(), block_size=16)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(2, 70, 32)
    before = layer(x).pow(2).mean()
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    opt.step()


def test_causal_lm_is_causal_and_learns():
    torch.manual_seed(0)
    model = sf.nn.SparseCausalLM(
        d_model=32, n_layers=2, n_heads=2, block_size=16, pattern=P.SlidingWindow(20, right=0) | P.Global(tokens=2)
    )
    idx = torch.randint(0, 256, (2, 60))
    logits = model(idx)
    assert logits.shape == (2, 60, 256)
    changed = idx.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 256
    torch.testing.assert_close(model(changed)[:, :40], logits[:, :40])  # no look-ahead
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    text = torch.tensor(list(b"the quick brown fox jumps over the lazy dog. " * 4))[None]
    first = model.loss(text).item()
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(text)
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    with pytest.raises(ValueError, match="idx must be an integer tensor"):
        model(torch.randn(1, 5))
