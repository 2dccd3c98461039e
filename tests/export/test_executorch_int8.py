"""int8 ExecuTorch export (PT2E dynamic int8 linears, XNNPACK) against fp32."""

import pytest
import torch

from sparseformer.export import ExecuTorchRunner
from sparseformer.export.quantize import cosine, to_executorch_int8

from .conftest import causal_lm

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
