"""The decode step of a transformers decoder as an ONNX file with its KV cache as inputs and outputs
(:mod:`sparseformer.export.decode`): the logits of every step equal the stock model's, the sliding
layers' caches keep their size, greedy tokens equal ``generate()``'s."""

import pytest
import torch

import sparseformer.hf as sfh
from sparseformer import patterns as P

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sparseformer.export import OnnxRunner, quantize  # noqa: E402
from sparseformer.export.decode import DecodeStep, OnnxDecoder, to_onnx_decode_step  # noqa: E402
from tests.hf import tiny  # noqa: E402

EAGER = ("gemma2", "gpt_oss")  # soft-capping and sinks: their stock reference is eager


def _pair(family: str):
    """(stock model, the same weights under sfh.sparsify(model)) of a tiny random decoder."""
    if family == "llama":
        stock = tiny.llama()
    else:
        stock = tiny.native(family, attn="eager" if family in EAGER else "sdpa")
    if family == "gpt_oss":
        stock.set_experts_implementation("batched_mm")  # the default grouped_mm has no ONNX translation
    ours = type(stock)(stock.config.__class__.from_dict(stock.config.to_dict())).eval()
    ours.load_state_dict(stock.state_dict())
    if family == "gpt_oss":
        ours.set_experts_implementation("batched_mm")
    return stock, sfh.sparsify(ours)


def _left_padded(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, : int(torch.randint(1, 5, (), generator=g))] = 0
    return ids, mask


@pytest.mark.parametrize("family", ["gemma3", "mistral", "gemma2", "gpt_oss", "llama"])
def test_every_step_equals_the_stock_model(family, tmp_path):
    """A left-padded batch of 3 windows and more, fed one token at a time through the exported step
    (the cache going out of one call into the next): each real position's logits equal the stock
    model's full forward within 1e-4; every sliding layer's cache stays ``W - 1`` keys and every
    full layer's grows by one per step."""
    stock, ours = _pair(family)
    ids, mask = _left_padded(3 * tiny.WINDOW + 5, seed=len(family))
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits  # [2, L, V]
    path = to_onnx_decode_step(ours, tmp_path / "step.onnx", batch=2)
    runner = OnnxRunner(path)
    assert runner.input_names[:4] == ["input_ids", "attention_mask", "past_key_values.0.key", "past_key_values.0.value"]
    _check_every_step(OnnxDecoder(path), ids, mask, want)
    assert any(c is not None for c in DecodeStep(ours).capacities) == (family != "llama")


def _zero_caches(decoder) -> list[torch.Tensor]:
    """Zero past keys and values of 2 rows for ``decoder``'s step, after one padding slot."""
    shapes = [(2, decoder.kv_heads, 1 if c is None else c, decoder.head_dim) for c in decoder.capacities]
    return [torch.zeros(shape) for shape in shapes for _ in "kv"]


def _check_every_step(decoder, ids, mask, want) -> None:
    """Feed ``ids`` ``decoder.chunk`` tokens at a time (a multiple of them) through ``decoder.step``,
    the caches of one call going into the next: the logits of each call's last token, where it is
    real, equal ``want`` at its position within 1e-4; every sliding layer's cache stays ``W - 1``
    keys, every full layer's grows by ``chunk`` per call."""
    c = decoder.chunk
    assert ids.shape[1] % c == 0
    kv = (2, decoder.kv_heads, 1, decoder.head_dim)
    past = _zero_caches(decoder)
    seen = torch.zeros(2, 1, dtype=torch.long)  # one padding slot: the export's past length is at least 1
    for t in range(0, ids.shape[1], c):
        seen = torch.cat([seen, mask[:, t : t + c]], dim=1)
        logits, *past = decoder.step(ids[:, t : t + c], seen, *past)
        assert logits.shape[1] == 1
        for cap, (k, v) in zip(decoder.capacities, zip(past[::2], past[1::2])):
            assert k.shape == v.shape == kv[:2] + ((t + c + 1 if cap is None else cap),) + kv[3:]
        real = mask[:, t + c - 1].bool()
        torch.testing.assert_close(logits[real, 0], want[real, t + c - 1], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("family", "chunk"), [("gemma3", 4), ("gemma2", 11)])
def test_prefill_chunks_equal_the_stock_model(family, chunk, tmp_path):
    """A ``chunk > 1`` export reads a left-padded prompt ``chunk`` tokens per call (fewer than the
    window, and more: 11 > ``W - 1``): the last token's logits of every call equal the stock
    model's, the caches keep their sizes; greedy tokens with the prefill file then the step file
    equal ``generate()``'s for a prompt that is not a multiple of ``chunk``."""
    stock, ours = _pair(family)
    ids, mask = _left_padded(3 * chunk if chunk > tiny.WINDOW else 7 * chunk, seed=chunk)
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        tokens = stock.generate(
            ids[:, :13], attention_mask=mask[:, :13], max_new_tokens=9, do_sample=False, pad_token_id=0
        )
    prefill = to_onnx_decode_step(ours, tmp_path / "prefill.onnx", batch=2, chunk=chunk)
    _check_every_step(OnnxDecoder(prefill), ids, mask, want)
    step = to_onnx_decode_step(ours, tmp_path / "step.onnx", batch=2)
    assert torch.equal(OnnxDecoder(step, prefill=prefill).generate(ids[:, :13], mask[:, :13], 9), tokens)
    with pytest.raises(ValueError, match="must be a chunk > 1 export of the same model"):
        OnnxDecoder(prefill, prefill=step)


def test_greedy_tokens_equal_generate_and_int8_stays_close(tmp_path):
    """Gemma 3 (sliding, full, sliding): greedy tokens from the ONNX file equal the stock model's
    ``generate()`` over 3 windows, left padding included; the int8 file's logits keep cosine
    >= 0.99 to the fp32 file's."""
    stock, ours = _pair("gemma3")
    ids, mask = _left_padded(6, seed=3)
    with torch.no_grad():
        want = stock.generate(ids, attention_mask=mask, max_new_tokens=3 * tiny.WINDOW, do_sample=False, pad_token_id=0)
    path = to_onnx_decode_step(ours, tmp_path / "step.onnx", batch=2)
    assert torch.equal(OnnxDecoder(path).generate(ids, mask, 3 * tiny.WINDOW), want)
    int8 = quantize.quantize_onnx(path, tmp_path / "step_int8.onnx")
    step = DecodeStep(ours)
    inputs = step.example_inputs(2, past_length=5)
    inputs = (ids[:, :1], inputs[1], *(torch.randn(t.shape) for t in inputs[2:]))
    fp32_logits, int8_logits = OnnxRunner(path)(*inputs)[0], OnnxRunner(int8)(*inputs)[0]
    assert quantize.cosine(fp32_logits, int8_logits) >= 0.99


def test_executorch_step_and_generate(tmp_path):
    """The same step as an ExecuTorch ``.pte`` (Mistral: every layer sliding; ``max_past`` 64):
    every real position's logits equal the stock model's, greedy tokens equal ``generate()``'s,
    and a sequence longer than ``max_past`` is refused before it runs; a prefill ``.pte`` of 4
    tokens per call passes the same checks."""
    pytest.importorskip("executorch")
    from sparseformer.export.decode import ExecuTorchDecoder, to_executorch_decode_step

    stock, ours = _pair("mistral")
    ids, mask = _left_padded(3 * tiny.WINDOW + 5, seed=4)
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        tokens = stock.generate(
            ids[:, :6], attention_mask=mask[:, :6], max_new_tokens=20, do_sample=False, pad_token_id=0
        )
    decoder = ExecuTorchDecoder(to_executorch_decode_step(ours, tmp_path / "step.pte", batch=2, max_past=64))
    assert (decoder.capacities, decoder.max_past) == ([tiny.WINDOW - 1] * 2, 64)
    _check_every_step(decoder, ids, mask, want)
    assert torch.equal(decoder.generate(ids[:, :6], mask[:, :6], 20), tokens)
    with pytest.raises(
        ValueError, match="past lengths up to 64 \\(max_past\\); a prompt of 6 and 60 new tokens need 65"
    ):
        decoder.generate(ids[:, :6], mask[:, :6], 60)
    prefill = to_executorch_decode_step(ours, tmp_path / "prefill.pte", batch=2, chunk=4, max_past=64)
    _check_every_step(ExecuTorchDecoder(prefill), ids[:, :28], mask[:, :28], want)
    decoder = ExecuTorchDecoder(tmp_path / "step.pte", prefill=prefill)
    assert torch.equal(decoder.generate(ids[:, :6], mask[:, :6], 20), tokens)
    # step() refuses what the program does not serve, before it runs
    caches = [torch.zeros(2, decoder.kv_heads, tiny.WINDOW - 1, decoder.head_dim) for _ in range(4)]
    step_ids, step_mask = ids[:, :1], torch.ones(2, 9, dtype=torch.long)
    decoder.step(step_ids, step_mask, *caches)
    for inputs, error, message in (
        ((step_ids, step_mask, *caches[:3]), ValueError, "this step takes 6 inputs"),
        ((step_ids, step_mask, caches[0].double(), *caches[1:]), TypeError, "input 2 must be torch.float32"),
        ((step_ids, step_mask, caches[0][:, :, 1:], *caches[1:]), ValueError, "input 2 must have shape \\[2, "),
        ((step_ids, 2 * step_mask, *caches), ValueError, "attention_mask must hold 0 \\(padding\\) and 1"),
        ((step_ids, torch.ones(2, 66, dtype=torch.long), *caches), ValueError, "past lengths 1 to 64 \\(max_past\\), got 65"),
    ):  # fmt: skip
        with pytest.raises(error, match=message):
            decoder.step(*inputs)


def test_executorch_int8_step_stays_close(tmp_path):
    """Gemma 3's step as an int8 ``.pte`` (linear layers int8, caches float32), fed one token at a
    time with its own caches: at every real position its logits keep cosine >= 0.99 to the fp32
    stock model's, and they are not within 1e-4 of them (the layers were quantized; the fp32
    ``.pte`` is, in test_executorch_step_and_generate)."""
    pytest.importorskip("executorch")
    from sparseformer.export.decode import ExecuTorchDecoder, to_executorch_decode_step

    stock, ours = _pair("gemma3")
    ids, mask = _left_padded(tiny.WINDOW + 4, seed=5)
    with torch.no_grad():
        want = stock(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    int8 = ExecuTorchDecoder(to_executorch_decode_step(ours, tmp_path / "step8.pte", batch=2, max_past=16, int8=True))
    assert int8.capacities == DecodeStep(ours).capacities
    past, seen = _zero_caches(int8), torch.zeros(2, 1, dtype=torch.long)
    for t in range(ids.shape[1]):
        seen = torch.cat([seen, mask[:, t : t + 1]], dim=1)
        got, *past = int8.step(ids[:, t : t + 1], seen, *past)
        for row in mask[:, t].nonzero().flatten().tolist():
            assert quantize.cosine(got[row, 0], want[row, t]) >= 0.99
            assert (got[row, 0] - want[row, t]).abs().max() > 1e-4
    # a full layer's cache holds the P past keys the mask covers (P: 12 + the padding slot)
    full = int8.capacities.index(None)
    past[2 * full] = past[2 * full][:, :, 1:]
    with pytest.raises(ValueError, match=f"layer {full}'s cache must hold the P = {ids.shape[1] + 1} past keys"):
        int8.step(ids[:, :1], torch.cat([seen, mask[:, :1]], dim=1), *past)
    with pytest.raises(TypeError, match="int8 must be a bool, got int"):
        to_executorch_decode_step(ours, tmp_path / "x.pte", int8=1)
    assert not (tmp_path / "x.pte").exists()


def test_refusals(tmp_path):
    stock, ours = _pair("gemma3")
    with pytest.raises(ValueError, match="call sfh.sparsify\\(model\\) first, got attn_implementation='sdpa'"):
        to_onnx_decode_step(stock, tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="model must be a transformers PreTrainedModel, got Linear"):
        to_onnx_decode_step(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        to_onnx_decode_step(ours, tmp_path / "a.onnx", batch=0)
    user = sfh.sparsify(tiny.llama(), P.SlidingWindow(4, right=0), block_size=4)
    with pytest.raises(ValueError, match="covers the model's own attention"):
        to_onnx_decode_step(user, tmp_path / "a.onnx")
    encoder = sfh.sparsify(tiny.native("gemma3-bidirectional"))
    with pytest.raises(ValueError, match="needs a causal decoder, but layer 0 attends"):
        to_onnx_decode_step(encoder, tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())
    path = to_onnx_decode_step(ours, tmp_path / "step.onnx")
    with pytest.raises(ValueError, match="this export takes 1 rows"):
        OnnxDecoder(path).generate(*_left_padded(4, seed=0), 2)
    from sparseformer.export import to_onnx

    other = to_onnx(torch.nn.Linear(4, 4), (torch.randn(3, 4),), tmp_path / "linear.onnx")
    with pytest.raises(ValueError, match="is not a decode-step export"):
        OnnxDecoder(other)
