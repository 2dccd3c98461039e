"""Hugging Face models through the exporters: a sparsified BERT, models pretrained with local
attention (Gemma 3 causal, ModernBERT bidirectional, Gemma 2 soft-capping, GPT-OSS sinks), stock
models as the baseline. Inputs as the tokenizer gives them; padding read at run time."""

import pytest
import torch

import sparseformer.hf as sfh
from sparseformer import patterns as P
from sparseformer.export import OnnxRunner, quantize, to_onnx
from sparseformer.export.hf import TokenModel, token_inputs

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tests.hf import tiny  # noqa: E402

BERT_PATTERN = P.SlidingWindow(1, unit="block") | P.Global(tokens=1)
ENCODERS = ("bert", "modernbert")


def _model(family: str):
    """A tiny random model of ``family`` sparsified as a user would: BERT with a pattern, the
    models pretrained with local attention with their own attention (``sparsify(model)``)."""
    if family == "bert":
        return sfh.sparsify(tiny.bert(max_positions=256), BERT_PATTERN, block_size=16)
    model = tiny.native(family, attn="eager" if family in ("gemma2", "gpt_oss") else "sdpa")
    if family == "gpt_oss":
        model.set_experts_implementation("batched_mm")  # the default grouped_mm has no ONNX translation
    return sfh.sparsify(model, block_size=16)


def _inputs(family: str, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 2, the second row padded: on the right for encoders, on the left for decoders (as
    their tokenizers pad); a random number of padding tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.int64)
    pad = int(torch.randint(1, max(2, length // 2), (), generator=g))
    if family in ENCODERS:
        mask[1, length - pad :] = 0
    else:
        mask[1, :pad] = 0
    return ids, mask


def _expected(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return TokenModel(model)(ids, mask)


def _padded_rows_only(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return out[mask.bool()]  # the outputs at real tokens (padding rows are unspecified)


@pytest.mark.parametrize("family", ["bert", "modernbert", "gemma3", "gemma2", "gpt_oss"])
def test_onnx_matches_the_model_at_every_padding(family, tmp_path, rng_length):
    model = _model(family)
    ids, mask = _inputs(family, rng_length, seed=rng_length)
    path = to_onnx(model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}, tmp_path / "m.onnx")
    runner = OnnxRunner(path)
    assert runner.input_names == ["input_ids", "attention_mask"]
    want_name = "last_hidden_state" if family in ENCODERS else "logits"
    assert [o.name for o in runner.session.get_outputs()] == [want_name]
    for seed in (rng_length, rng_length + 1):  # the traced padding and another one
        ids, mask = _inputs(family, rng_length, seed)
        got = runner(input_ids=ids, attention_mask=mask)
        want = _expected(model, ids, mask)
        torch.testing.assert_close(_padded_rows_only(got, mask), _padded_rows_only(want, mask), atol=1e-4, rtol=0)
    assert model.config.sparseformer["backend"] == "auto"  # the export's backend switch was undone
    assert not any(m.training for m in model.modules())  # and the model is left in eval mode


@pytest.mark.parametrize("family", ["bert", "gemma3", "gpt_oss"])
def test_custom_op_export_equals_the_portable_export(family, tmp_path, rng_length):
    model = _model(family)
    ids, mask = _inputs(family, rng_length, seed=3)
    portable = OnnxRunner(to_onnx(model, (ids, mask), tmp_path / "p.onnx"))
    custom = OnnxRunner(to_onnx(model, (ids, mask), tmp_path / "c.onnx", custom_op=True))
    assert custom.custom_ops_library is not None and portable.custom_ops_library is None
    ids, mask = _inputs(family, rng_length, seed=4)
    torch.testing.assert_close(
        _padded_rows_only(custom(ids, mask), mask), _padded_rows_only(portable(ids, mask), mask), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("family", ["bert", "modernbert", "gemma3"])
def test_onnx_int8_keeps_the_embeddings(family, tmp_path):
    model = _model(family)
    ids, mask = _inputs(family, 77, seed=5)
    fp32 = to_onnx(model, (ids, mask), tmp_path / "m.onnx")
    int8 = OnnxRunner(quantize.quantize_onnx(fp32, tmp_path / "m8.onnx"))
    want = _expected(model, ids, mask)
    assert quantize.cosine(_padded_rows_only(int8(ids, mask), mask), _padded_rows_only(want, mask)) >= 0.99


def test_runner_refuses_another_length_dtype_or_mask(tmp_path):
    model = _model("gemma3")
    ids, mask = _inputs("gemma3", 40, seed=6)
    runner = OnnxRunner(to_onnx(model, (ids, mask), tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="sequence length 40 only"):
        runner(*_inputs("gemma3", 41, seed=6))
    # what a BERT-style tokenizer returns: token_type_ids of one segment come along, and are dropped
    torch.testing.assert_close(runner(input_ids=ids, attention_mask=mask, token_type_ids=0 * ids), runner(ids, mask))
    with pytest.raises(ValueError, match="token_type_ids must be all 0: a transformers export takes one segment"):
        runner(input_ids=ids, attention_mask=mask, token_type_ids=mask)
    with pytest.raises(ValueError, match="either positionally or all by name"):
        runner(ids, attention_mask=mask)
    with pytest.raises(TypeError, match="input 'input_ids' must be int64 \\(as exported\\), got int32"):
        runner(ids.int(), mask)
    with pytest.raises(ValueError, match="attention_mask must hold 0 \\(padding\\) and 1"):
        runner(ids, 3 * mask)


def test_bad_inputs_are_named(tmp_path):
    ids, mask = _inputs("bert", 20, seed=7)
    with pytest.raises(TypeError, match="input_ids must be an int64 tensor"):
        token_inputs((ids.float(), mask))
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        token_inputs((ids, 2 * mask))
    with pytest.raises(ValueError, match="attention_mask must have input_ids' shape"):
        token_inputs((ids, mask[:, :-1]))
    with pytest.raises(ValueError, match="missing \\['attention_mask'\\]"):
        token_inputs({"input_ids": ids})
    with pytest.raises(TypeError, match="the pair \\(input_ids, attention_mask\\)"):
        token_inputs(ids)
    random = sfh.sparsify(tiny.bert(max_positions=256), BERT_PATTERN | P.RandomBlocks(1, seed=0), block_size=16)
    with pytest.raises(ValueError, match="module 'layer 0' has pattern .*dynamic_length needs every sparse attention"):
        to_onnx(random, (ids, mask), tmp_path / "m.onnx", dynamic_length=True)
    with pytest.raises(ValueError, match="max_length=300 exceeds the model's 256 learned positions; extend them"):
        to_onnx(_model("bert"), (ids, mask), tmp_path / "m.onnx", dynamic_length=True, max_length=300)
    with pytest.raises(TypeError, match="max_length must be an int or None, got float"):
        to_onnx(_model("bert"), (ids, mask), tmp_path / "m.onnx", dynamic_length=True, max_length=300.0)
    assert not list(tmp_path.iterdir())


def test_dynamic_range_stops_at_learned_positions():
    """A dynamic export of a model with learned absolute positions serves up to their number
    (``max_length=None``); rotary models (ModernBERT, Gemma 3) have no such limit; a RoBERTa-style
    table keeps its first ``padding_idx + 1`` rows before position 0."""
    from sparseformer.export._common import dynamic_range

    assert dynamic_range(TokenModel(_model("bert")), None) == (2, 256)
    assert dynamic_range(TokenModel(_model("bert")), 100) == (2, 100)
    assert dynamic_range(TokenModel(_model("modernbert")), None) == (2, None)
    assert dynamic_range(TokenModel(_model("gemma3")), 5000) == (2, 5000)
    roberta = _model("bert")
    old = roberta.embeddings.position_embeddings
    roberta.embeddings.position_embeddings = torch.nn.Embedding(old.num_embeddings, old.embedding_dim, padding_idx=1)
    assert dynamic_range(TokenModel(roberta), None) == (2, 254)


@pytest.mark.parametrize(
    "family, custom_op", [("bert", False), ("gemma3", False), ("modernbert", False), ("bert", True), ("gemma3", True)]
)
def test_one_dynamic_length_file_serves_every_length(family, custom_op, tmp_path):
    """Band-form layers (windows, global tokens) and full layers (``P.Dense()``): no layout in the
    graph (or, with the custom op, the layout at ``max_length`` cut to the length in the graph),
    so one file serves every length, each with its own padding."""
    model = _model(family)
    inputs = _inputs(family, 45, seed=10)
    path = to_onnx(model, inputs, tmp_path / "m.onnx", dynamic_length=True, max_length=200, custom_op=custom_op)
    runner = OnnxRunner(path)
    assert (runner.custom_ops_library is not None) == custom_op
    assert runner.seq_range == (2, 200)
    for length in (3, 17, 64, 131, 200):
        ids, mask = _inputs(family, length, seed=length)
        want = _expected(model, ids, mask)
        torch.testing.assert_close(
            _padded_rows_only(runner(ids, mask), mask), _padded_rows_only(want, mask), atol=1e-4, rtol=0
        )
    with pytest.raises(ValueError, match="sequence lengths 2 to 200, got 201"):
        runner(*_inputs(family, 201, seed=0))


@pytest.mark.parametrize("family", ENCODERS)
def test_executorch_fp32_and_int8(family, tmp_path):
    pytest.importorskip("executorch")
    from sparseformer.export import ExecuTorchRunner, to_executorch, to_executorch_int8

    model = _model(family)
    ids, mask = _inputs(family, 45, seed=8)
    fp32 = ExecuTorchRunner(to_executorch(model, (ids, mask), tmp_path / "m.pte"))
    int8 = ExecuTorchRunner(to_executorch_int8(model, (ids, mask), tmp_path / "m8.pte"))
    ids, mask = _inputs(family, 45, seed=9)
    want = _padded_rows_only(_expected(model, ids, mask), mask)
    torch.testing.assert_close(_padded_rows_only(fp32(ids, mask), mask), want, atol=1e-4, rtol=0)
    assert quantize.cosine(_padded_rows_only(int8(ids, mask), mask), want) >= 0.99
    # the runner takes the tokenizer's output and refuses what the program does not serve
    assert fp32.input_names == ["input_ids", "attention_mask"]
    torch.testing.assert_close(fp32(input_ids=ids, attention_mask=mask, token_type_ids=0 * ids), fp32(ids, mask))
    with pytest.raises(ValueError, match="token_type_ids must be all 0"):
        int8(input_ids=ids, attention_mask=mask, token_type_ids=mask)
    with pytest.raises(TypeError, match="input 0 must be torch.int64 \\(as exported\\), got torch.int32"):
        fp32(ids.int(), mask)
    with pytest.raises(ValueError, match="attention_mask must hold 0 \\(padding\\) and 1"):
        int8(ids, 3 * mask)


@pytest.mark.parametrize(
    "family, dynamic", [("bert", False), ("modernbert", False), ("gemma3", False), ("gpt_oss", False), ("bert", True)]
)
def test_executorch_custom_op(family, dynamic, tmp_path):
    """The native kernel inside ExecuTorch for transformers models: padding read at run time,
    GPT-OSS's sinks applied on the kernel's logsumexp output, Gemma 3's tanh GELU written out
    (XNNPACK would run it as the erf form), and one program for every length up to ``max_length``
    (``dynamic_length=True``); per length, the program equals the portable one (1e-5)."""
    pytest.importorskip("executorch")
    from sparseformer.export import ExecuTorchRunner, to_executorch

    model = _model(family)
    options = dict(dynamic_length=True, max_length=100) if dynamic else {}
    traced = _inputs(family, 45, seed=10)
    runner = ExecuTorchRunner(to_executorch(model, traced, tmp_path / "c.pte", custom_op=True, **options))
    assert runner.kernel_library is not None
    portable = None if dynamic else ExecuTorchRunner(to_executorch(model, traced, tmp_path / "p.pte"))
    for length in (3, 16, 77, 100) if dynamic else (45,):
        ids, mask = _inputs(family, length, seed=length + 1)
        want = _padded_rows_only(_expected(model, ids, mask), mask)
        got = _padded_rows_only(runner(ids, mask), mask)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        if portable is not None:
            torch.testing.assert_close(got, _padded_rows_only(portable(ids, mask), mask), atol=1e-5, rtol=0)
