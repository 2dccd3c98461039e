"""GPT-OSS: sliding (even) and full layers, each with learned attention sinks (``s_aux``: one logit
per head in the softmax denominator); ``sfh.sparsify(model)`` runs it exactly. Reference: stock
``eager`` (``sdpa`` cannot express the sinks)."""

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
    assert_forward_matches("gpt_oss", length, side, reference="eager")


def test_generate_matches_stock():
    assert_generate_matches("gpt_oss", reference="eager")


def test_gradients_match_stock_eager():
    """The sinks are parameters: their gradients are among those compared."""
    assert_gradients_match("gpt_oss")


def test_sinks_change_the_outputs():
    """So the tests above would see the sinks left out."""
    torch.set_num_threads(1)
    ids, mask = batch(20, "right")
    with_sinks, without = native("gpt_oss", "eager"), native("gpt_oss", "eager")
    with torch.no_grad():
        for layer in without.model.layers:
            layer.self_attn.sinks.fill_(-1e4)  # exp(-1e4) = 0: no sink
        a = with_sinks(input_ids=ids, attention_mask=mask).logits
        b = without(input_ids=ids, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() > 1e-2
