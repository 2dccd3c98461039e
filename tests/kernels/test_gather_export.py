"""The gather backend is exportable: torch.export, and ONNX run by ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

import sparseformer as sf
from sparseformer import patterns as P


class Attn(torch.nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.layout = layout

    def forward(self, q, k, v):
        return sf.sparse_attention(q, k, v, self.layout, backend="gather")


def problem():
    torch.manual_seed(0)
    pattern = P.SlidingWindow(1, unit="block") | P.Global(tokens=1) | P.RandomBlocks(1) | P.DistanceDecay(0.01)
    layout = pattern.compile(q_len=100, num_heads=4, block_size=16, kv_len=100)
    q, k, v = torch.randn(1, 4, 100, 16), torch.randn(1, 2, 100, 16), torch.randn(1, 2, 100, 16)
    return Attn(layout), (q, k, v)


def test_torch_export():
    model, inputs = problem()
    ep = torch.export.export(model, inputs)
    torch.testing.assert_close(ep.module()(*inputs), model(*inputs), rtol=1e-6, atol=1e-6)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, inputs = problem()
    path = tmp_path / "attn.onnx"
    torch.onnx.export(model, inputs, str(path), dynamo=True, input_names=["q", "k", "v"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {n: t.numpy() for n, t in zip(["q", "k", "v"], inputs)})
    torch.testing.assert_close(torch.from_numpy(out), model(*inputs), rtol=1e-4, atol=1e-4)


class BandAttn(torch.nn.Module):
    """``pattern_attention`` on the band path (no compiled layout) with soft-capping and sinks."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern
        self.sinks = torch.nn.Parameter(torch.randn(4))

    def forward(self, q, k, v):
        return sf.pattern_attention(
            q, k, v, self.pattern, block_size=16, causal=True, softcap=3.0, sinks=self.sinks, backend="gather"
        )


@pytest.mark.parametrize(
    "pattern", [P.SlidingWindow(20) | P.Global(tokens=2), P.SlidingWindow(1, unit="block"), P.Dense()]
)
def test_band_path_with_softcap_and_sinks_exports_with_a_symbolic_length(pattern):
    torch.manual_seed(0)
    model = BandAttn(pattern)
    length = torch.export.Dim("length", min=17, max=512)  # two tiles or more
    shapes = tuple({2: length} for _ in range(3))
    make = lambda n: (torch.randn(2, 4, n, 16), torch.randn(2, 2, n, 16), torch.randn(2, 2, n, 16))  # noqa: E731
    # as torch.onnx.export(dynamo=True) traces (what sf.export.to_onnx(dynamic_length=True) runs)
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        ep = torch.export.export(
            model, make(70), dynamic_shapes=shapes, prefer_deferred_runtime_asserts_over_guards=True
        )
    for n in (
        17,
        70,
        141,
        200,
    ):  # not multiples of 16: a block-unit window traced at 70 asserts that (with or without the terms)
        q, k, v = make(n)
        layout = pattern.compile(q_len=n, num_heads=4, block_size=16, causal=True)
        want = sf.sparse_attention(
            *(t.double() for t in (q, k, v)), layout, softcap=3.0, sinks=model.sinks.double(), backend="reference"
        )
        torch.testing.assert_close(ep.module()(q, k, v).double(), want, rtol=1e-5, atol=1e-5)
