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
