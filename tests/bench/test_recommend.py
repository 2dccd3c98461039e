"""The recommendation against hand-made measurements, and the results schema's validator."""

from __future__ import annotations

import random

import pytest

from sparseformer.bench.recommend import DEFAULT_MIN_QUALITY, Constraints, break_even, recommend
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


LENGTHS = (256, 512, 1024, 2048)


def _sweep(rng: random.Random) -> list[dict]:
    """Random measurements at every length of :data:`LENGTHS`, dense first, as the sweep writes them."""
    out = []
    for length in LENGTHS:
        out.append(_rec("dense", None, length, rng.uniform(20, 100), 10.0, 1.0))
        for name in ("a", "b", "c"):
            for bs in (32, 64):
                out.append(_rec(name, bs, length, rng.uniform(10, 120), 5.0, rng.uniform(0.9, 1.0)))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_default_is_the_fastest_above_the_floor_at_every_length(seed):
    ms = _sweep(random.Random(seed))
    rec = recommend(ms, None, Constraints())
    assert rec["found"] and rec["floor"] == DEFAULT_MIN_QUALITY and rec["seq_len"] == LENGTHS[-1]
    assert [c["seq_len"] for c in rec["per_length"]] == list(LENGTHS)
    for choice in rec["per_length"]:
        at = [m for m in ms if m["seq_len"] == choice["seq_len"]]
        ok = [m for m in at if m["quality_cosine"] >= DEFAULT_MIN_QUALITY]
        assert choice["quality_cosine"] >= DEFAULT_MIN_QUALITY
        assert choice["latency_ms"] == min(m["latency_ms"]["median"] for m in ok)
        assert choice["dense_ms"] == next(m["latency_ms"]["median"] for m in at if m["strategy"] == "dense")
        assert choice["quality_measured_at"] == choice["seq_len"]  # the encoder cosine: measured at that length
    # the break-even length, by its definition: sparse and strictly faster than dense from there on
    pays = {c["seq_len"]: c["strategy"] != "dense" and c["latency_ms"] < c["dense_ms"] for c in rec["per_length"]}
    expected = next((n for n in LENGTHS if all(pays[m] for m in LENGTHS if m >= n)), None)
    assert rec["break_even"] == expected
    assert {k: rec[k] for k in ("strategy", "block_size", "latency_ms")} == {
        k: rec["per_length"][-1][k] for k in ("strategy", "block_size", "latency_ms")
    }


def _timed(length: int, dense_ms: float, sparse_ms: float, cos: float = 0.98) -> list[dict]:
    return [_rec("dense", None, length, dense_ms, 10.0, 1.0), _rec("a", 32, length, sparse_ms, 5.0, cos)]


def test_break_even_names_the_length_from_which_sparse_pays_off():
    ms = _timed(256, 10.0, 12.0) + _timed(512, 30.0, 20.0) + _timed(1024, 90.0, 40.0)
    rec = recommend(ms, None, Constraints())
    assert [c["strategy"] for c in rec["per_length"]] == ["dense", "a", "a"]
    assert rec["break_even"] == 512
    assert "break-even length 512: from 512 tokens on (measured: 512, 1024)" in rec["break_even_message"]
    assert "break-even length 512 or shorter" in recommend(ms[2:], None, Constraints())["break_even_message"]
    assert rec["strategy"] == "a" and "the fastest configuration with quality >= 0.97" in rec["message"]
    assert "2.25x faster than dense's 90.0 ms" in rec["message"]
    # --seq-len: the headline at that length, the per-length answer unchanged
    at = recommend(ms, 256, Constraints())
    assert at["strategy"] == "dense" and at["break_even"] == 512
    assert "no sparse configuration with quality >= 0.97" in at["message"]


def test_no_break_even_when_the_longest_length_stays_dense():
    paid_once = _timed(256, 10.0, 12.0) + _timed(512, 30.0, 20.0) + _timed(1024, 90.0, 95.0)
    rec = recommend(paid_once, None, Constraints())
    assert rec["break_even"] is None
    assert "faster than dense at 512 tokens but not at the longest measured length 1024" in rec["break_even_message"]
    below_floor = _timed(256, 10.0, 5.0, cos=0.9) + _timed(512, 30.0, 10.0, cos=0.96)  # fast but not good enough
    rec = recommend(below_floor, None, Constraints())
    assert rec["break_even"] is None and rec["strategy"] == "dense"
    assert "was not faster than dense at any measured length" in rec["break_even_message"]
    assert break_even([]) is None


def test_a_layout_that_keeps_every_pair_is_not_sparse():
    ms = _timed(256, 20.0, 10.0)
    ms[1]["density"] = 1.0  # e.g. a stride longer than the sequence: dense work through the sparse kernel
    rec = recommend(ms, None, Constraints())
    assert rec["strategy"] == "dense" and rec["break_even"] is None


def test_a_tie_with_dense_is_not_a_pay_off():
    rec = recommend(_timed(512, 20.0, 20.0), None, Constraints())
    assert rec["strategy"] == "dense" and rec["break_even"] is None


def test_explicit_constraints_keep_the_best_quality_rule():
    ms = _timed(512, 30.0, 20.0) + [_rec("b", 64, 512, 25.0, 5.0, 0.99)]
    assert recommend(ms, 512, Constraints())["strategy"] == "a"  # the default: fastest above the floor
    rec = recommend(ms, 512, Constraints(budget_ms=28.0))
    assert rec["strategy"] == "b" and "per_length" not in rec and "break_even" not in rec
    assert recommend(ms, 512, Constraints(budget_ms=40.0, min_quality=0.5))["strategy"] == "dense"  # best quality


def test_min_quality_alone_is_the_floor():
    ms = _timed(512, 30.0, 20.0) + [_rec("b", 64, 512, 25.0, 5.0, 0.99)]
    assert recommend(ms, 512, Constraints(min_quality=0.95))["strategy"] == "a"  # 20 ms, quality 0.98
    rec = recommend(ms, 512, Constraints(min_quality=0.985))
    assert rec["strategy"] == "b" and rec["floor"] == 0.985 and "--min-quality" in rec["message"]
    assert recommend(ms, 512, Constraints(min_quality=0.995))["strategy"] == "dense"


def _model_quality(cos: dict, seq_len: int = 512) -> dict:
    results = [{"strategy": "dense", "block_size": None, "embedding_cosine": 1.0}]
    results += [{"strategy": s, "block_size": bs, "embedding_cosine": c} for (s, bs), c in cos.items()]
    return {"available": True, "model": "m", "seq_len": seq_len, "results": results}


def test_model_quality_is_labelled_with_the_length_it_was_measured_at():
    ms = _timed(512, 30.0, 20.0, cos=0.5) + _timed(2048, 300.0, 100.0, cos=0.5)  # encoder cosine below the floor
    mq = _model_quality({("a", 32): 0.98})
    rec = recommend(ms, None, Constraints(), mq)
    assert [c["strategy"] for c in rec["per_length"]] == ["a", "a"] and rec["break_even"] == 512
    assert all(c["quality_measured_at"] == 512 and c["quality_cosine"] == 0.98 for c in rec["per_length"])
    assert "model quality measured at 512 tokens" in rec["message"]  # headline at 2048
    assert "measured at" not in recommend(ms, 512, Constraints(), mq)["message"]  # at its own length: nothing to say
    dense_only = recommend(ms, None, Constraints(), _model_quality({("a", 32): 0.9}))
    assert dense_only["strategy"] == "dense" and "measured at" not in dense_only["message"]  # 1.0 at every length
    constrained = recommend(ms, 2048, Constraints(budget_ms=150.0), mq)
    assert constrained["strategy"] == "a" and "model quality measured at 512 tokens" in constrained["message"]


def test_none_found_messages():
    ms = _timed(512, 30.0, 20.0)
    assert "nothing was measured at sequence length 999" in recommend(ms, 999, Constraints())["message"]
    assert recommend([], None, Constraints())["found"] is False
    unknown = recommend(ms, 512, Constraints(), _model_quality({("z", 16): 0.99}))  # only dense has a model quality
    assert unknown["found"] and unknown["strategy"] == "dense"
    mq_without_dense = {**_model_quality({}), "results": [{"strategy": "z", "block_size": 16, "embedding_cosine": 1}]}
    none = recommend(ms, 512, Constraints(), mq_without_dense)
    assert not none["found"] and "covers none of the configurations measured at sequence length 512" in none["message"]
