"""Gemma 2: sliding and full layers with attention logit soft-capping (``softcap``: scores
``c * tanh(s / c)``); ``sfh.sparsify(model)`` runs it exactly. Reference: stock ``eager`` (Gemma 2
does not support ``sdpa``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from .native_checks import (  # noqa: E402
    LENGTHS,
    assert_forward_matches,
    assert_generate_matches,
    assert_gradients_match,
    batch,
)
from .tiny import native  # noqa: E402


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("length", LENGTHS)
def test_forward_matches_stock(length, side):
    assert_forward_matches("gemma2", length, side, reference="eager")


def test_generate_matches_stock():
    assert_generate_matches("gemma2", reference="eager")


def test_gradients_match_stock_eager():
    assert_gradients_match("gemma2")


def test_softcap_changes_the_outputs():
    """So the tests above would see a soft-cap left out."""
    torch.set_num_threads(1)
    ids, mask = batch(20, "right")
    capped, uncapped = native("gemma2", "eager"), native("gemma2", "eager")
    uncapped.config.attn_logit_softcapping = None
    for layer in uncapped.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    with torch.no_grad():
        a = capped(input_ids=ids, attention_mask=mask).logits
        b = uncapped(input_ids=ids, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() > 1e-2
