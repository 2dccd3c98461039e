"""``sparseformer bench`` run whole, in-process, on tiny sizes (--quick, one thread)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sparseformer import patterns as P
from sparseformer.bench import measure, sweep
from sparseformer.bench.plots import FILES
from sparseformer.bench.schema import validate
from sparseformer.bench.workload import Workload, dense_model, sparse_model, text_input
from sparseformer.cli import bench as command
from sparseformer.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
# The portable backend: these tests check the command, not the native kernel (which has its own tests
# and may be rebuilt just-in-time on first use).
TINY = ["--quick", "--threads", "1", "--repeats", "2", "--max-len", "64", "--backend", "gather"]


def _load(out) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench"))
    rc = main(["bench", *TINY, "--out", out, "--min-quality", "0.99", "--seq-len", "96"])
    return rc, out, _load(out)


def test_quick_run_writes_valid_results_and_plots(quick_run):
    rc, out, results = quick_run
    assert rc == 0
    validate(results)
    assert results["complete"] and not results["interrupted"]
    lengths = {m["seq_len"] for m in results["measurements"]}
    assert 96 in lengths  # the asked-for length is always measured
    per_length = 1 + len(results["settings"]["strategies"]) * len(results["settings"]["block_sizes"])
    assert len(results["measurements"]) == per_length * len(lengths)
    for m in results["measurements"]:
        assert results["settings"]["repeats"] <= len(m["latency_ms"]["all"]) <= 10 * results["settings"]["repeats"]
        assert 0 <= m["density"] <= m["block_density"] <= 1
        if m["strategy"] == "dense":
            assert m["quality_cosine"] == 1.0
    for name in FILES:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 0
        with open(path, "rb") as f:
            assert f.read(8) == PNG
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert "## Recommendation" in report and "## Sequence length 96" in report
    assert not [n for n in os.listdir(out) if ".tmp" in n]  # no temporary files left


def test_recommendation_obeys_the_constraints(quick_run):
    _, _, results = quick_run
    rec = results["recommendation"]
    assert rec["found"] and rec["seq_len"] == 96
    assert rec["quality_cosine"] >= 0.99
    at = [m for m in results["measurements"] if m["seq_len"] == 96]
    assert rec["quality_cosine"] == max(m["quality_cosine"] for m in at)


def test_from_results_recommends_without_measuring(quick_run, capsys, monkeypatch):
    _, out, results = quick_run
    monkeypatch.setattr(command, "run_sweep", None)  # measuring would crash
    fastest = min(m["latency_ms"]["median"] for m in results["measurements"] if m["seq_len"] == 64)
    argv = ["bench", "--from-results", os.path.join(out, "results.json"), "--seq-len", "64"]
    assert main([*argv, "--budget-ms", str(fastest)]) == 0
    assert "Recommended: at length 64" in capsys.readouterr().out
    assert main([*argv, "--budget-ms", str(fastest / 2)]) == 0
    assert "No recommendation" in capsys.readouterr().out
    assert main(["bench", "--from-results", os.path.join(out, "nope.json")]) == 2
    assert "--from-results" in capsys.readouterr().err


def test_impossible_budget_says_which_constraint_to_relax(tmp_path, capsys):
    rc = main(["bench", *TINY, "--strategies", "sliding", "--out", str(tmp_path), "--budget-ms", "1e-9"])
    assert rc == 0
    rec = _load(tmp_path)["recommendation"]
    assert rec["found"] is False
    assert "--budget-ms" in rec["message"] and "would do" in rec["message"]
    assert "No recommendation" in capsys.readouterr().out


def test_ctrl_c_keeps_the_partial_results(tmp_path, monkeypatch):
    real, calls = sweep._measure_sparse, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the priming pass, then one measured sparse configuration
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "_measure_sparse", interrupted)
    rc = main(["bench", *TINY, "--out", str(tmp_path)])
    assert rc == 130
    results = _load(tmp_path)
    validate(results)
    assert results["interrupted"] and not results["complete"]
    assert [m["strategy"] for m in results["measurements"]] == ["dense", "block-local"]
    assert os.path.exists(tmp_path / "report.md")


def test_without_clear_refs_memory_is_null_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "_CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    rc = main(["bench", *TINY, "--strategies", "block-local", "--block-sizes", "16", "--out", str(tmp_path)])
    assert rc == 0
    results = _load(tmp_path)
    validate(results)
    assert results["settings"]["memory_method"] is None
    assert all(m["peak_mib"] is None for m in results["measurements"])


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--seq-len", "0", "--seq-len"),
        ("--block-sizes", "48", "--block-sizes"),
        ("--strategies", "nope", "--strategies"),
        ("--min-quality", "2", "--min-quality"),
        ("--budget-ms", "-1", "--budget-ms"),
        ("--backend", "fast", "--backend"),
        ("--device", "cuda:7" if not torch.cuda.is_available() else "tpu", "--device"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, flag, value, needle):
    assert main(["bench", "--quick", "--out", str(tmp_path), flag, value]) == 2
    assert needle in capsys.readouterr().err


def test_sparse_model_with_dense_pattern_matches_the_baseline():
    """The sparse stack loads the baseline's weights: with ``P.Dense()`` it computes the same."""
    w = Workload(layers=2, heads=2, head_dim=8, dtype="float64", backend="gather")
    dense = dense_model(w)
    model = sparse_model(w, dense, P.Dense(), 16)
    x = torch.randn(2, 40, w.hidden, dtype=torch.float64)  # fresh random input, not a multiple of 16
    with torch.inference_mode():
        torch.testing.assert_close(model(x), dense(x), rtol=1e-9, atol=1e-9)
    assert text_input(w, 40).shape == (1, 40, w.hidden)


def test_the_dense_baseline_computes_the_stock_layer():
    """``SDPAEncoderLayer`` is ``nn.TransformerEncoderLayer`` with its attention through SDPA."""
    w = Workload(layers=2, heads=3, head_dim=8, dtype="float64")
    ours = dense_model(w)
    stock = torch.nn.Sequential(
        *[
            torch.nn.TransformerEncoderLayer(24, 3, 96, 0.0, "gelu", batch_first=True, dtype=torch.float64)
            for _ in range(2)
        ]
    ).eval()
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(2, 37, 24, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), stock(x), rtol=1e-9, atol=1e-9)
