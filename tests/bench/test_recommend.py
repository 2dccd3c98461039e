"""The recommendation against hand-made measurements, and the results schema's validator."""

from __future__ import annotations

import random

import pytest

from sparseformer.bench.recommend import Constraints, recommend
from sparseformer.bench.schema import RESULTS_SCHEMA, errors, validate


def _rec(strategy, bs, length, ms, mib, cos) -> dict:
    return {
        "strategy": strategy,
        "block_size": bs,
        "seq_len": length,
        "code": f"P.X({bs})",
        "latency_ms": {"median": ms, "spread": 0.0, "all": [ms]},
        "attention_ms": {"median": ms / 2, "spread": 0.0, "all": [ms / 2]},
        "peak_mib": mib,
        "attention_flops": 1.0,
        "density": 0.5,
        "block_density": 0.5,
        "quality_cosine": cos,
    }


def _random_measurements(rng: random.Random) -> list[dict]:
    out = [_rec("dense", None, 512, rng.uniform(50, 100), rng.uniform(50, 100), 1.0)]
    for name in ("a", "b", "c", "d"):
        for bs in (32, 64):
            out.append(_rec(name, bs, 512, rng.uniform(5, 100), rng.uniform(5, 100), rng.uniform(0.8, 1.0)))
    out.append(_rec("a", 32, 256, 1.0, 1.0, 0.5))  # another length: never a candidate at 512
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_choice_meets_every_constraint_with_the_best_quality(seed):
    rng = random.Random(seed)
    ms = _random_measurements(rng)
    c = Constraints(budget_ms=rng.uniform(5, 100), budget_mb=rng.uniform(5, 100), min_quality=rng.uniform(0.8, 1.0))
    ok = [
        m
        for m in ms
        if m["seq_len"] == 512
        and m["latency_ms"]["median"] <= c.budget_ms
        and m["peak_mib"] <= c.budget_mb
        and m["quality_cosine"] >= c.min_quality
    ]
    rec = recommend(ms, 512, c)
    assert rec["found"] == bool(ok)
    if ok:
        assert rec["latency_ms"] <= c.budget_ms and rec["peak_mib"] <= c.budget_mb
        assert rec["quality_cosine"] == max(m["quality_cosine"] for m in ok)
    else:
        assert "no strategy meets" in rec["message"] and rec["relax"]


def test_relaxing_names_the_value_that_would_do():
    ms = [_rec("dense", None, 128, 10.0, 10.0, 1.0), _rec("a", 32, 128, 4.0, 3.0, 0.95)]
    rec = recommend(ms, 128, Constraints(budget_ms=2.0, min_quality=0.9))
    assert not rec["found"]
    assert any("--budget-ms 4 would do" in r for r in rec["relax"])
    assert any("--min-quality alone is not enough" in r for r in rec["relax"])


def test_unmeasured_length_and_unmeasured_memory():
    ms = [_rec("a", 32, 128, 4.0, None, 0.95)]
    assert "nothing was measured at sequence length 999" in recommend(ms, 999, Constraints())["message"]
    assert not recommend(ms, 128, Constraints(budget_mb=100.0))["found"]  # memory unknown: cannot promise
    assert recommend(ms, None, Constraints())["seq_len"] == 128  # default: the longest measured


def test_validator_reports_each_problem():
    assert errors({"a": 1}, {"type": "object", "required": ["b"], "properties": {"a": {"type": "string"}}}) == [
        "$: missing required key 'b'",
        "$.a: expected string, got int 1",
    ]
    assert errors([1, -2], {"type": "array", "items": {"type": "integer", "minimum": 0}}) == [
        "$[1]: -2 is below the minimum 0"
    ]
    assert errors(True, {"type": "number"})  # a bool is not a number
    assert errors(float("nan"), {"type": "number"})
    assert not errors(None, {"type": ["number", "null"]})
    with pytest.raises(ValueError, match="missing required key 'measurements'"):
        validate({k: None for k in RESULTS_SCHEMA["required"] if k != "measurements"})


def test_budget_mb_without_memory_measurements_says_so():
    rec = recommend([_rec("a", 32, 128, 4.0, None, 0.95)], 128, Constraints(budget_mb=100.0))
    assert "--budget-mb cannot be checked" in rec["message"]


def test_model_quality_replaces_the_encoder_cosine_when_given():
    ms = [
        _rec("dense", None, 128, 10.0, 10.0, 1.0),
        _rec("a", 32, 128, 4.0, 3.0, 0.99),
        _rec("b", 32, 128, 5.0, 3.0, 0.9),
    ]
    mq = {
        "available": True,
        "model": "m",
        "seq_len": 64,
        "results": [
            {"strategy": "dense", "block_size": None, "embedding_cosine": 1.0},
            {"strategy": "a", "block_size": 32, "embedding_cosine": 0.8},
            {"strategy": "b", "block_size": 32, "embedding_cosine": 0.95},
        ],
    }
    c = Constraints(budget_ms=6.0, min_quality=0.85)
    assert recommend(ms, 128, c)["strategy"] == "a"  # encoder cosine 0.99
    rec = recommend(ms, 128, c, mq)
    assert rec["strategy"] == "b" and rec["quality_cosine"] == 0.95 and "embedding cosine of m" in rec["quality_source"]
