"""``--pattern`` takes a strategy name or a pattern's JSON spec; anything else is refused by name,
as is a bad ``TrainConfig`` field."""

from __future__ import annotations

import re

import pytest

from sparseformer import patterns as P
from sparseformer.cli.train import parse_pattern
from sparseformer.train import Geometry, TrainConfig


def test_pattern_by_name_or_json_spec():
    g = Geometry(block_size=32, window_blocks=2)
    assert parse_pattern("sliding", g) == P.SlidingWindow(2, right=0, unit="block")
    assert parse_pattern("dense", g) is None
    spec = '{"type": "SlidingWindow", "left": 100, "right": 0, "unit": "token"}'
    assert parse_pattern(spec, g) == P.SlidingWindow(100, right=0)


@pytest.mark.parametrize(("text", "message"), [("slidng", "--pattern must be one of"), ("{oops", "not valid JSON")])
def test_bad_pattern_names_the_argument(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pattern(text, Geometry())


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("lr", "3e-3", TypeError, "lr must be a finite number, got '3e-3'"),
        ("dropout", float("nan"), TypeError, "dropout must be a finite number"),
        ("betas", (0.9,), ValueError, "betas must be a pair"),
        ("backend", "gpu", ValueError, "backend must be one of"),
        ("steps", 0, ValueError, "steps must be an int >= 1, got 0"),
        ("lr", 0.0, ValueError, "lr must be > 0"),
    ],
)
def test_bad_train_config_names_the_field(field, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        TrainConfig(**{field: value})
