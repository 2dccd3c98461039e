"""ONNX export run by ONNX Runtime: parity with PyTorch, the per-length contract, atomic writes, int8."""

import json

import pytest
import torch

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.export import OnnxRunner, read_metadata, to_onnx
from sparseformer.export.quantize import cosine, quantize_onnx

from .conftest import PATTERN, causal_lm, encoder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_encoder_parity_and_wrong_length(tmp_path, rng_length):
    model = encoder(0)
    x = torch.randn(2, rng_length, 32)
    path = to_onnx(model, (x,), tmp_path / "enc.onnx")
    assert path == tmp_path / "enc.onnx"
    assert read_metadata(path)["sparseformer.seq_len"] == str(rng_length)
    runner = OnnxRunner(path)
    for _ in range(2):  # fresh inputs of the claimed shape
        x = torch.randn(2, rng_length, 32)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"sequence length {rng_length} only, got {rng_length + 16}"):
        runner(torch.randn(2, rng_length + 16, 32))
    with pytest.raises(ValueError, match="shape"):
        runner(torch.randn(3, rng_length, 32))


def test_multihead_attention_seq_first(tmp_path, rng_length):
    torch.manual_seed(1)
    mha = sf.nn.SparseMultiheadAttention(32, 4, pattern=PATTERN, block_size=16).eval()  # [L, B, E]
    q, k, v = (torch.randn(rng_length, 2, 32) for _ in range(3))
    runner = OnnxRunner(to_onnx(mha, (q, k, v), tmp_path / "mha.onnx"))
    assert runner.seq_dim == 0 and runner.seq_len == rng_length
    q, k, v = (torch.randn(rng_length, 2, 32) for _ in range(3))
    out = runner(q, k, v)
    out = out[0] if isinstance(out, tuple) else out
    with torch.no_grad():
        torch.testing.assert_close(out, mha(q, k, v)[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="sequence length"):
        runner(*(torch.randn(rng_length - 1, 2, 32) for _ in range(3)))


def test_causal_lm_parity_and_int8(tmp_path, rng_length):
    model = causal_lm(2)
    idx = torch.randint(0, 256, (1, rng_length))
    fp32 = to_onnx(model, (idx,), tmp_path / "lm.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "lm8.onnx")
    idx = torch.randint(0, 256, (1, rng_length))
    with torch.no_grad():
        ref = model(idx)
    torch.testing.assert_close(OnnxRunner(fp32)(idx), ref, atol=1e-4, rtol=1e-4)
    q = OnnxRunner(int8)
    assert q.seq_len == rng_length  # the metadata survives quantization
    assert cosine(q(idx), ref) >= 0.99
    assert int8.stat().st_size < fp32.stat().st_size
    with pytest.raises(ValueError, match="sequence length"):
        q(torch.randint(0, 256, (1, rng_length + 1)))


def test_interrupted_export_leaves_no_file(tmp_path, monkeypatch):
    import onnx

    def broken_save(proto, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a model")
        raise KeyboardInterrupt("simulated interruption while writing")

    monkeypatch.setattr(onnx, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        to_onnx(encoder(3, layers=1), (torch.randn(1, 40, 32),), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="model"):
        to_onnx("not a model", (torch.randn(1, 4),), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="example_inputs"):
        to_onnx(encoder(4, layers=1), [1, 2], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="folder"):
        to_onnx(encoder(4, layers=1), (torch.randn(1, 40, 32),), tmp_path / "missing" / "x.onnx")
    with pytest.raises(ValueError, match="is not a file"):
        OnnxRunner(tmp_path / "nothing.onnx")


def test_dynamic_length_encoder(tmp_path):
    model = encoder(5)
    path = to_onnx(model, (torch.randn(2, 70, 32),), tmp_path / "dyn.onnx", dynamic_length=True, max_length=200)
    assert json.loads(read_metadata(path)["sparseformer.seq_range"]) == [16, 200]  # Global(blocks=1), block 16
    runner = OnnxRunner(path)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for n in (16, 200, *torch.randint(17, 200, (3,), generator=g).tolist()):
        x = torch.randn(2, n, 32)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)
    for n in (15, 201):
        with pytest.raises(ValueError, match=f"sequence lengths 16 to 200, got {n}"):
            runner(torch.randn(2, n, 32))
    with pytest.raises(ValueError, match="shape"):
        runner(torch.randn(3, 50, 32))


def test_dynamic_length_causal_lm_and_int8(tmp_path):
    model = causal_lm(6)  # SlidingWindow(20, right=0) | Global(tokens=2): causal, token units
    fp32 = to_onnx(model, (torch.randint(0, 256, (1, 45)),), tmp_path / "lm.onnx", dynamic_length=True)
    int8 = quantize_onnx(fp32, tmp_path / "lm8.onnx")
    runner, q = OnnxRunner(fp32), OnnxRunner(int8)
    assert runner.seq_range == (2, None) and q.seq_range == (2, None)
    for n in (2, 17, 130):
        idx = torch.randint(0, 256, (1, n))
        with torch.no_grad():
            ref = model(idx)
        torch.testing.assert_close(runner(idx), ref, atol=1e-4, rtol=1e-4)
        assert cosine(q(idx), ref) >= 0.99
    with pytest.raises(ValueError, match="sequence lengths 2, got 1"):
        runner(torch.randint(0, 256, (1, 1)))


def test_dynamic_length_needs_band_patterns(tmp_path):
    torch.manual_seed(7)
    layer = sf.nn.SparseTransformerEncoderLayer(
        32, 4, 64, dropout=0.0, batch_first=True, pattern=P.BigBird(num_random_blocks=1), block_size=16
    )
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    with pytest.raises(ValueError, match=r"'layers.0.self_attn'.*band form.*per length"):
        to_onnx(model, (torch.randn(1, 64, 32),), tmp_path / "x.onnx", dynamic_length=True)
    runner = OnnxRunner(to_onnx(model, (torch.randn(1, 64, 32),), tmp_path / "x.onnx"))  # per length works
    assert runner.seq_len == 64 and runner.seq_range is None
    assert list(tmp_path.iterdir()) == [tmp_path / "x.onnx"]


def test_dynamic_length_arguments(tmp_path):
    model = encoder(8, layers=1)
    with pytest.raises(ValueError, match="max_length is for dynamic_length=True"):
        to_onnx(model, (torch.randn(1, 40, 32),), tmp_path / "x.onnx", max_length=100)
    with pytest.raises(ValueError, match=r"example length 40 must lie in the export's range \[16, 30\]"):
        to_onnx(model, (torch.randn(1, 40, 32),), tmp_path / "x.onnx", dynamic_length=True, max_length=30)
    with pytest.raises(ValueError, match="equals another dim"):
        to_onnx(model, (torch.randn(32, 32, 32),), tmp_path / "x.onnx", dynamic_length=True)
    with pytest.raises(TypeError, match="dynamic_length"):
        to_onnx(model, (torch.randn(1, 40, 32),), tmp_path / "x.onnx", dynamic_length="yes")
    assert list(tmp_path.iterdir()) == []


def test_dynamic_length_distance_decay(tmp_path):
    torch.manual_seed(9)
    pattern = P.DistanceDecay((0.05, 0.1, 0.3, 0.6), eps=1e-2) | P.Global(tokens=1)  # per-head widths 92, 46, 15, 7
    mha = sf.nn.SparseMultiheadAttention(32, 4, pattern=pattern, block_size=16, batch_first=True).eval()
    x = torch.randn(1, 50, 32)
    runner = OnnxRunner(to_onnx(mha, (x, x, x), tmp_path / "decay.onnx", dynamic_length=True))
    for n in (2, 31, 180):
        x = torch.randn(1, n, 32)
        out = runner(x, x, x)  # need_weights=False: the weights output (None) is not exported
        with torch.no_grad():
            torch.testing.assert_close(out, mha(x, x, x)[0], atol=1e-4, rtol=1e-4)
