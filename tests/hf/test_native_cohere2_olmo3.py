"""Cohere2 and OLMo 3 (sliding and full layers from ``layer_types``):
``sfh.sparsify(model)`` runs the model's own attention exactly."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from .native_checks import (  # noqa: E402
    LENGTHS,
    assert_forward_matches,
    assert_generate_matches,
    assert_gradients_match,
)

FAMILIES = ("cohere2", "olmo3")


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
