"""The native kernel inside ONNX Runtime (custom-op library): the op against the float64 dense
reference, custom-op exports against the portable exports, loading in a fresh process, errors."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sparseformer import patterns as P
from sparseformer.export import OnnxRunner, ort_op, to_onnx
from sparseformer.export import onnx as onnx_export
from sparseformer.export.ort_op.onnx_op import attention_model
from sparseformer.kernels import cpu
from sparseformer.kernels.reference import reference_attention

from .conftest import OP_CASES, causal_lm, encoder

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
if not cpu.is_available():
    pytest.skip(f"the native cpu kernel is unavailable: {cpu.unavailable_reason()}", allow_module_level=True)


def _session(model_proto):
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(ort_op.library_path()))
    return ort.InferenceSession(model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _count_ops(path, op_type: str = ort_op.OP_NAME) -> int:
    """Nodes of ``op_type`` in the file's main graph (default: the kernel's, in its domain)."""
    import onnx

    domain = ort_op.DOMAIN if op_type == ort_op.OP_NAME else ""
    return sum(n.domain == domain and n.op_type == op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: repr(c["pattern"])[:40])
def test_op_matches_float64_reference(case):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    lk = int(torch.randint(40, 130, (), generator=g))
    lq = lk - int(torch.randint(1, 30, (), generator=g)) if case.get("q_less") else lk
    b, h, hk, d, dv, bs = 2, case["heads"], case["kv_heads"], 8, 6, 16
    layout = case["pattern"].compile(q_len=lq, kv_len=lk, num_heads=h, block_size=bs, causal=case["causal"])
    q = torch.randn(b, h, lq, d, generator=g)
    k = torch.randn(b, hk, lk, d, generator=g)
    v = torch.randn(b, hk, lk, dv, generator=g)
    keep = torch.rand(b, lk, generator=g) > 0.2
    scale, softcap = 0.4, case.get("softcap")
    model = attention_model(
        layout, batch=b, kv_heads=hk, head_dim=d, value_dim=dv, scale=scale, softcap=softcap, key_padding_mask=True
    )
    feed = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "key_padding_mask": keep.numpy()}
    out = torch.from_numpy(_session(model).run(None, feed)[0])
    ref = reference_attention(
        q.double(), k.double(), v.double(), layout, key_padding_mask=keep, scale=scale, softcap=softcap
    )
    assert out.shape == (b, h, lq, dv)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)  # fp32 kernel vs fp64 oracle


def test_op_checks_layout_values():
    """Shapes and index values the graph does not fix are checked in the kernel: a failed Run
    with the kernel's message, not a crash."""
    layout = P.SlidingWindow(1, unit="block").compile(q_len=64, num_heads=2, block_size=16)
    bad = layout.col_idx.clone()
    bad[-1] = 99
    model = attention_model(
        SimpleNamespace(**{**vars(layout), "col_idx": bad}), batch=1, kv_heads=2, head_dim=8, scale=0.3
    )
    x = np.random.default_rng(0).standard_normal((1, 2, 64, 8), dtype=np.float32)
    with pytest.raises(Exception, match=r"col_idx\[\d+\] = 99 is out of range"):
        _session(model).run(None, {"q": x, "k": x, "v": x})


@pytest.mark.parametrize("kind", ["encoder", "causal_lm"])
def test_custom_op_export_equals_portable_export(tmp_path, rng_length, kind):
    model = encoder(1) if kind == "encoder" else causal_lm(2)

    def example():
        return torch.randn(2, rng_length, 32) if kind == "encoder" else torch.randint(0, 256, (2, rng_length))

    x = example()
    portable = to_onnx(model, (x,), tmp_path / "portable.onnx")
    custom = to_onnx(model, (x,), tmp_path / "custom.onnx", custom_op=True)
    assert _count_ops(portable) == 0 and _count_ops(custom) == 2  # one node per layer
    assert not onnx_export.uses_custom_op(portable) and onnx_export.uses_custom_op(custom)
    run_portable, run_custom = OnnxRunner(portable), OnnxRunner(custom)
    assert run_custom.custom_ops_library == str(ort_op.library_path())
    for _ in range(2):  # fresh inputs of the claimed shape
        x = example()
        got = run_custom(x)
        torch.testing.assert_close(got, run_portable(x), atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"sequence length {rng_length} only, got {rng_length + 1}"):
        run_custom(torch.cat([x, x[:, :1]], 1))


def test_one_dynamic_custom_op_file_serves_every_length(tmp_path):
    """``custom_op=True, dynamic_length=True``: the layout compiled at ``max_length`` and cut to each
    input's length in the graph; equal to the portable dynamic file and to the model at lengths
    that are and are not multiples of the block size (the causal LM here; a bidirectional BERT
    with a global token, padded, in tests/export/test_hf_export.py)."""
    model = causal_lm(8)

    def example(length):
        return torch.randint(0, 256, (2, length))

    options = dict(dynamic_length=True, max_length=150)
    portable = OnnxRunner(to_onnx(model, (example(45),), tmp_path / "portable.onnx", **options))
    custom_path = to_onnx(model, (example(45),), tmp_path / "custom.onnx", custom_op=True, **options)
    assert _count_ops(custom_path) == 2
    custom = OnnxRunner(custom_path)
    lo = custom.seq_range[0]
    assert custom.seq_range == portable.seq_range == (lo, 150)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for length in (lo, 17, 64, int(torch.randint(18, 149, (), generator=g)), 150):
        x = example(length)
        got = custom(x)
        torch.testing.assert_close(got, portable(x), atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"sequence lengths {lo} to 150, got 151"):
        custom(example(151))


def test_custom_op_file_quantizes_to_int8(tmp_path):
    """``quantize_onnx`` on a custom-op file: the linear layers become int8, the kernel's nodes stay
    (float32), and the output keeps cosine >= 0.99 to the fp32 file's."""
    from sparseformer.export import quantize

    model = encoder(6)
    x = torch.randn(2, 70, 32)
    fp32 = to_onnx(model, (x,), tmp_path / "custom.onnx", custom_op=True)
    int8 = quantize.quantize_onnx(fp32, tmp_path / "custom_int8.onnx")
    assert _count_ops(int8) == 2 and onnx_export.uses_custom_op(int8)
    assert _count_ops(int8, "DynamicQuantizeLinear") > 0
    run_fp32, run_int8 = OnnxRunner(fp32), OnnxRunner(int8)
    for _ in range(2):
        x = torch.randn(2, 70, 32)
        got, want = run_int8(x), run_fp32(x)
        assert quantize.cosine(got, want) >= 0.99 and not torch.equal(got, want)


def test_library_loads_in_a_process_that_imports_only_onnxruntime(tmp_path):
    model = encoder(3)
    x = torch.randn(1, 50, 32)
    path = to_onnx(model, (x,), tmp_path / "custom.onnx", custom_op=True)
    np.save(tmp_path / "x.npy", x.numpy())
    script = f"""
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.register_custom_ops_library({str(ort_op.library_path())!r})
s = ort.InferenceSession({str(path)!r}, opts, providers=["CPUExecutionProvider"])
y = s.run(None, {{s.get_inputs()[0].name: np.load({str(tmp_path / "x.npy")!r})}})[0]
np.save({str(tmp_path / "y.npy")!r}, y)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sparseformer")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().replace("'", '"')) == []
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "y.npy")), model(x), atol=1e-4, rtol=1e-4)


def test_runtime_without_the_library_gets_a_clear_error(tmp_path, monkeypatch):
    model = encoder(4)
    x = torch.randn(1, 40, 32)
    path = to_onnx(model, (x,), tmp_path / "custom.onnx", custom_op=True)
    # plain ONNX Runtime, no library registered: an exception naming the op, not a crash
    with pytest.raises(Exception, match=f"{ort_op.OP_NAME}|{ort_op.DOMAIN}"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the runner, when the library cannot be had
    with pytest.raises(ValueError, match="custom_ops_library .* is not a file .*custom-op library"):
        OnnxRunner(path, custom_ops_library=tmp_path / "missing.so")

    def no_compiler():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(ort_op, "library_path", no_compiler)
    with pytest.raises(RuntimeError, match=r"sparseformer\.ai::BlockSparseAttention.*custom-op library.*no C\+\+"):
        OnnxRunner(path)


def test_custom_op_arguments(tmp_path):
    model = encoder(5)
    x = torch.randn(1, 40, 32)
    with pytest.raises(ValueError, match="custom_op=True with dynamic_length=True needs max_length"):
        to_onnx(model, (x,), tmp_path / "a.onnx", custom_op=True, dynamic_length=True)
    with pytest.raises(TypeError, match="custom_op must be a bool"):
        to_onnx(model, (x,), tmp_path / "a.onnx", custom_op="yes")
    with pytest.raises(Exception, match="float32 attention only"):
        to_onnx(encoder(5).double(), (x.double(),), tmp_path / "a.onnx", custom_op=True)
    assert not list(tmp_path.iterdir())
