"""Gemma 3 (causal) and Gemma 3 / EmbeddingGemma (``use_bidirectional_attention``): ``sfh.sparsify(model)``
runs the model's own sliding and full layers exactly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402

from .native_checks import (  # noqa: E402
    LENGTHS,
    TOL,
    assert_forward_matches,
    assert_generate_matches,
    assert_gradients_match,
    batch,
)
from .tiny import native  # noqa: E402

FAMILIES = ("gemma3", "gemma3-bidirectional")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_stock(family, length, side):
    assert_forward_matches(family, length, side)


def test_generate_matches_stock():
    assert_generate_matches("gemma3")


def test_generate_with_a_static_cache_matches_stock():
    assert_generate_matches("gemma3", cache_implementation="static")


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match_stock_eager(family):
    assert_gradients_match(family)


def test_from_pretrained_without_an_entry_runs_the_model_exactly(tmp_path):
    """``attn_implementation="sparseformer"`` on a config without ``sparseformer``: the model's own
    attention, as after ``sfh.sparsify(model)``."""
    from transformers import AutoModelForCausalLM

    stock = native("gemma3")
    stock.save_pretrained(tmp_path)
    sfh.register()
    model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sparseformer").eval()
    assert not hasattr(model.config, "sparseformer")
    ids, mask = batch(29, "left")
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask).logits
        got = model(input_ids=ids, attention_mask=mask).logits
    assert (got - want)[mask.bool()].abs().max() <= TOL
