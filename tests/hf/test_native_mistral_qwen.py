"""Mistral (a sliding window on every layer), Ministral (``layer_types``), Qwen2 and Qwen3 (sliding
layers from ``max_window_layers`` on): ``sfh.sparsify(model)`` runs the model's own attention exactly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from .native_checks import (  # noqa: E402
    LENGTHS,
    TOL,
    assert_forward_matches,
    assert_generate_matches,
    assert_gradients_match,
    pair,
)
from .tiny import WINDOW, native  # noqa: E402

FAMILIES = ("mistral", "ministral", "qwen2", "qwen3")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_stock(family, length, side):
    assert_forward_matches(family, length, side)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_matches_stock(family):
    assert_generate_matches(family)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match_stock_eager(family):
    assert_gradients_match(family)


def test_a_pattern_restricts_the_models_own_window():
    """``sfh.sparsify(mistral, P.BlockLocal())``: a pair attends iff the model's own causal window of
    ``WINDOW`` keys and the pattern (same 16-token block) both keep it; the stock model with that
    mask as a 4-D boolean mask is the oracle."""
    import sparseformer.hf as sfh
    from sparseformer import patterns as P

    stock, _ = pair("mistral")
    ours = sfh.sparsify(native("mistral"), P.BlockLocal(), block_size=16)
    ids = torch.randint(3, 100, (2, 45))
    i, j = torch.arange(45)[:, None], torch.arange(45)[None, :]
    allowed = (i // 16 == j // 16) & (i - j >= 0) & (i - j <= WINDOW - 1)  # [L, L]
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=allowed[None, None].expand(2, 1, 45, 45)).logits
        got = ours(input_ids=ids).logits
    assert (got - want).abs().max() <= TOL
