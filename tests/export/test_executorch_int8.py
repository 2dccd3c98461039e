"""int8 ExecuTorch export (PT2E dynamic int8 linears, XNNPACK) against fp32."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import sparseformer as sf
from sparseformer.export import ExecuTorchRunner
from sparseformer.export.quantize import cosine, to_executorch_int8

from .conftest import PATTERN, causal_lm

pytest.importorskip("executorch.runtime")


def test_causal_lm_int8(tmp_path, rng_length):
    model = causal_lm(11, layers=1)
    path = to_executorch_int8(model, (torch.randint(0, 256, (1, rng_length)),), tmp_path / "lm8.pte")
    runner = ExecuTorchRunner(path)
    idx = torch.randint(0, 256, (1, rng_length))
    with torch.no_grad():
        assert cosine(runner(idx), model(idx)) >= 0.99
    with pytest.raises(ValueError, match="sequence length"):
        runner(torch.randint(0, 256, (1, rng_length + 3)))


def bench_shaped_encoders(seed: int, d: int = 64, heads: int = 4, layers: int = 2, block: int = 32):
    """Sparse and dense encoders built like ``benchmarks/edge_encoder.py`` (GELU, FFN 4d,
    post-norm, independent weights per layer), small; the dense one has the same weights."""
    torch.manual_seed(seed)
    kw = {"dropout": 0.0, "activation": "gelu", "batch_first": True}
    layer = sf.nn.SparseTransformerEncoderLayer(d, heads, 4 * d, pattern=PATTERN, block_size=block, **kw)
    sparse = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    dense = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, 4 * d, **kw), layers, enable_nested_tensor=False)
    with torch.no_grad():
        for w in sparse.parameters():
            if w.dim() > 1:
                nn.init.xavier_uniform_(w)
            else:
                w.normal_(0.0, 0.1)  # biases and norms away from their 0 / 1 initial values
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense.eval()


# Runs in a fresh interpreter that imports executorch.runtime only: importing
# executorch.kernels.quantized (as the export does) registers the quantized out-variant kernels
# in-process and would hide a .pte that needs them.
FRESH_RUN = textwrap.dedent(
    """
    import sys
    import torch
    from executorch.runtime import Runtime

    x = torch.load(sys.argv[1], weights_only=True)
    outs = {}
    for path in sys.argv[3:]:
        method = Runtime.get().load_program(path).load_method("forward")
        outs[path] = method.execute([x])[0]
    assert "executorch.kernels.quantized" not in sys.modules
    torch.save(outs, sys.argv[2])
    """
)


@pytest.mark.slow  # two int8 lowerings: XNNPACK's preprocessing costs ~1 s per delegated subgraph
def test_int8_encoders_load_in_fresh_process(tmp_path):
    sparse, dense = bench_shaped_encoders(21)
    length = 128
    paths = {}
    for name, model in (("sparse", sparse), ("dense", dense)):
        paths[name] = str(to_executorch_int8(model, (torch.randn(1, length, 64),), tmp_path / f"{name}8.pte"))
    x = torch.randn(1, length, 64)
    torch.save(x, tmp_path / "x.pt")
    cmd = [sys.executable, "-c", FRESH_RUN, str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), *paths.values()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        for name, model in (("sparse", sparse), ("dense", dense)):
            assert cosine(outs[paths[name]], model(x)) >= 0.99, name
