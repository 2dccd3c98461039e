"""``extend_positions``: learned position tables tiled to a new length."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402
from sparseformer import patterns as P  # noqa: E402

from .tiny import bert, copy_of, gpt2  # noqa: E402


def test_bert_positions_tiled_and_buffers_resized():
    model = bert(max_positions=64)
    old = model.embeddings.position_embeddings.weight.detach().clone()
    sfh.extend_positions(model, 200)
    new = model.embeddings.position_embeddings.weight
    assert new.shape == (200, 32) and model.config.max_position_embeddings == 200
    torch.testing.assert_close(new[:64], old)
    torch.testing.assert_close(new[128:192], old)
    torch.testing.assert_close(new[192:], old[:8])
    assert model.embeddings.position_ids.shape == (1, 200)
    assert torch.equal(model.embeddings.position_ids[0], torch.arange(200))


def test_short_inputs_unchanged_and_long_inputs_run():
    stock = bert(max_positions=64)
    longer = sfh.sparsify(sfh.extend_positions(copy_of(stock), 256), P.SlidingWindow(1, unit="block"), block_size=16)
    ids = torch.randint(1, 200, (2, 40))
    with torch.no_grad():
        want = stock(input_ids=ids).last_hidden_state
        dense_longer = sfh.sparsify(sfh.extend_positions(copy_of(stock), 256), P.Dense(), block_size=16)
        assert (dense_longer(input_ids=ids).last_hidden_state - want).abs().max() <= 1e-5
        out = longer(input_ids=torch.randint(1, 200, (2, 256))).last_hidden_state
    assert out.shape == (2, 256, 32) and torch.isfinite(out).all()


def test_gpt2_wpe_extended():
    model = sfh.extend_positions(gpt2(max_positions=32), 96)
    assert model.transformer.wpe.weight.shape == (96, 32) and model.config.n_positions == 96
    with torch.no_grad():
        assert model(input_ids=torch.randint(0, 100, (1, 96))).logits.shape == (1, 96, 100)


def test_bad_arguments():
    with pytest.raises(ValueError, match="new_max"):
        sfh.extend_positions(bert(max_positions=64), 32)
    with pytest.raises(ValueError, match="new_max"):
        sfh.extend_positions(bert(), 0)
    with pytest.raises(ValueError, match="position embedding"):
        sfh.extend_positions(torch.nn.Linear(2, 2), 10)
