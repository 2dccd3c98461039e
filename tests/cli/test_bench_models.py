"""``sparseformer bench models``: end to end on tiny configurations (no timing assertions), the
shipped real configurations, and clear errors for bad arguments."""

from __future__ import annotations

import json

import pytest

from sparseformer.bench import models as M
from sparseformer.cli import main
from sparseformer.cli.bench_models import QUICK

pytest.importorskip("transformers")

# Tiny models of two families: a causal Gemma 3 (a sliding and a full layer) and a bidirectional
# ModernBERT (one global layer, two local); windows far below the --quick lengths (64, 160).
TINY = {
    "tiny-gemma3": {
        "title": "tiny Gemma 3",
        "head": "causal-lm",
        "seed": 1,
        "_source": ["test"],
        "_reduced": "everything",
        "config": {
            "model_type": "gemma3_text", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
            "query_pre_attn_scalar": 16, "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
        },
    },
    "tiny-modernbert": {
        "title": "tiny ModernBERT",
        "head": "encoder",
        "seed": 2,
        "_source": ["test"],
        "_reduced": "everything",
        "config": {
            "model_type": "modernbert", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 3, "num_attention_heads": 2, "local_attention": 16, "global_attn_every_n_layers": 3,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2,
        },
    },
}  # fmt: skip


@pytest.fixture
def configs(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    for name, d in TINY.items():
        (folder / f"{name}.json").write_text(json.dumps(d))
    return str(folder)


@pytest.mark.slow
def test_quick_end_to_end(configs, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["bench", "models", "--quick", "--configs", configs, "--decode-models", "tiny-gemma3",
            "--out", str(out_dir), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for d in TINY.values():
        for n in QUICK["lengths"]:
            for impl in M.IMPLS:
                row = next(line for line in out.splitlines() if line.startswith(f"| {d['title']} | {n} | {impl} |"))
                assert "not run" not in row, row
    for n in QUICK["decode_contexts"]:
        for impl in ("sdpa", "sparseformer"):
            row = next(line for line in out.splitlines() if line.startswith(f"| tiny Gemma 3 | {n} | {impl} |"))
            assert "not run" not in row, row
    assert not any(line.startswith(f"| tiny ModernBERT | {QUICK['decode_contexts'][0]} |") for line in out.splitlines())
    assert out.startswith("machine: ") and "load average (1, 5, 15 min) at start" in out
    results = json.loads((out_dir / "results.json").read_text())
    assert len(results["prefill"]) == 2 * 2 * 3 and len(results["decode"]) == 2 * 2
    # the sliding layer's cache keeps its window, the full layer's every token
    by = {(r["tokens"], r["impl"]): r["cache_mib"] for r in results["decode"]}
    short, long = QUICK["decode_contexts"]
    for impl in ("sdpa", "sparseformer"):
        assert by[(short, impl)]["sliding"] == by[(long, impl)]["sliding"]
        assert by[(short, impl)]["full"] < by[(long, impl)]["full"]
    assert (out_dir / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_configs_are_real_local_attention_models():
    names = M.model_names()
    assert names == ["gemma-3-1b", "gemma-3-270m", "gpt-oss-20b-2l", "mistral-7b-2l", "modernbert-base"]
    for name in names:
        spec = M.load_spec(name)
        assert spec.source and all(isinstance(s, str) and s for s in spec.source)
        types = spec.layer_types
        assert len(types) == spec.config["num_hidden_layers"]
        assert "sliding_attention" in types, name


def test_gemma3_270m_layer_types():
    # 5 of every 6 layers sliding (full at 5, 11, 17), window 512 tokens
    spec = M.load_spec("gemma-3-270m")
    assert [i for i, t in enumerate(spec.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert spec.config["sliding_window"] == 512


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "nope"], "models: unknown models ['nope']"),
        (["--impls", "sdpa,flash"], "impls must be a non-empty subset"),
        (["--lengths", "0"], "lengths must be token counts >= 1"),
        (["--repeats", "0"], "repeats must be an int >= 1"),
        (["--decode-models", "tiny-modernbert"], "decode_models must be causal models"),
        (["--decode-models", "nope"], "decode_models: unknown models ['nope']"),
        (["--threads", "0"], "threads must be an int >= 1"),
        (["--models", "", "--decode-models", ""], "nothing to measure"),
    ],
)
def test_bad_arguments(configs, tmp_path, capsys, args, message):
    argv = [
        "bench",
        "models",
        "--quick",
        "--configs",
        configs,
        "--decode-models",
        "tiny-gemma3",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_config_missing_a_key(configs, tmp_path, capsys):
    d = dict(TINY["tiny-gemma3"])
    del d["_source"]
    (tmp_path / "configs" / "tiny-gemma3.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"tiny-gemma3.json: missing keys \['_source'\]"):
        M.load_spec("tiny-gemma3", configs)


def test_bad_configs_folder(tmp_path, capsys):
    assert main(["bench", "models", "--configs", str(tmp_path / "missing")]) == 2
    assert "configs must be a folder" in capsys.readouterr().err


def test_budget_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "models", "--budget-s", "0"])
    assert "must be > 0" in capsys.readouterr().err


def test_skip_reasons():
    gpt = M.load_spec("gpt-oss-20b-2l")
    assert M.skip_reason(gpt, "sdpa", 2048) == "transformers' GptOssForCausalLM does not support sdpa"
    assert M.skip_reason(gpt, "sparseformer", 2048) is None
    gemma = M.load_spec("gemma-3-270m")
    assert M.skip_reason(gemma, "sdpa", 32768) is None
    assert M.eager_bytes(gemma, 32768) == 4 * 32768**2 * (3 * 4 + 1)
    assert M.skip_reason(gemma, "eager", 10**6).startswith("eager needs ~")  # 52 TB: never fits
    assert M.skip_reason(gemma, "eager", 64) is None


def test_prefill_table_ratios_and_skipped_rows():
    row = {"model": "m", "title": "M", "tokens": 8, "first_call_timed": False, "peak_rss_mib": 2048.0,
           "prefill_extra_mib": 512.0}  # fmt: skip
    results = {
        "prefill": [
            row | {"impl": "sdpa", "times_s": [3.0, 4.0, 5.0], "sliding_attention_share": 0.75},
            row | {"impl": "eager", "skipped": "eager needs ~9 GiB"},
            row | {"impl": "sparseformer", "times_s": [2.0, 1.0], "sliding_attention_share": 0.1},
        ]
    }
    lines = M.prefill_table(results).splitlines()
    assert lines[2] == (
        "| M | 8 | sdpa | 4.000 | 2.000 | 3 | 1.00x | - | 2.00 | 0.50 | 75.0% | bound 1/(1-share) = 4.00x |"
    )
    assert lines[3].endswith("| not run: eager needs ~9 GiB |") and lines[3].count("|") == lines[0].count("|")
    assert lines[4].startswith("| M | 8 | sparseformer | 1.500 | 1.000 | 2 | 2.67x | - |")


def test_decode_table_skipped_row_has_every_column():
    results = {"decode": [{"model": "m", "title": "M", "tokens": 8, "impl": "sdpa", "skipped": "no sdpa"}]}
    lines = M.decode_table(results).splitlines()
    assert lines[2].endswith("| not run: no sdpa |") and lines[2].count("|") == lines[0].count("|")
