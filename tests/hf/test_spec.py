"""Patterns stored as JSON-able dicts and read back."""

from __future__ import annotations

import json

import pytest

from sparseformer import patterns as P
from sparseformer.hf import from_spec, to_spec


@pytest.mark.parametrize(
    "pattern",
    [
        P.Dense(),
        P.SlidingWindow(1, unit="block") | P.Global(tokens=1),
        P.Global(tokens=(0, 5, 9), horizontal=False) & P.SlidingWindow(4, 2),
        P.BigBird(num_random_blocks=2, seed=7),
        P.PerHead((P.BlockLocal(), P.Strided(4))),
        P.DistanceDecay((0.1, 0.2), eps=1e-3),
        P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.StridedSample(5, reweight=False),
    ],
)
def test_roundtrip(pattern):
    spec = to_spec(pattern)
    assert from_spec(json.loads(json.dumps(spec))) == pattern


def test_bad_specs():
    with pytest.raises(TypeError, match="pattern"):
        to_spec("dense")
    with pytest.raises(ValueError, match="type"):
        from_spec({"type": "Nope"})
    with pytest.raises(TypeError, match="'type'"):
        from_spec([1])
