"""ModernBERT: bidirectional local attention (``local_attention`` keys around each token) on the
layers between the global ones; ``sfh.sparsify(model)`` runs it exactly."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from .native_checks import LENGTHS, assert_forward_matches, assert_gradients_match  # noqa: E402


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("length", LENGTHS)
def test_forward_matches_stock(length, side):
    assert_forward_matches("modernbert", length, side)


def test_gradients_match_stock_eager():
    assert_gradients_match("modernbert")
