"""ExecuTorch export (XNNPACK delegate) run by ``executorch.runtime``: parity, the per-length
contract, atomic writes."""

import pytest
import torch

from sparseformer.export import ExecuTorchRunner, to_executorch

from .conftest import encoder

pytest.importorskip("executorch.runtime")


def test_encoder_parity_and_wrong_length(tmp_path, rng_length):
    model = encoder(10, layers=1)
    path = to_executorch(model, (torch.randn(2, rng_length, 32),), tmp_path / "enc.pte")
    runner = ExecuTorchRunner(path)
    assert runner.seq_len == rng_length
    x = torch.randn(2, rng_length, 32)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"sequence length {rng_length} only"):
        runner(torch.randn(2, rng_length - 2, 32))


def test_interrupted_export_leaves_no_file(tmp_path, monkeypatch):
    from pathlib import Path

    import sparseformer.export.executorch as et

    monkeypatch.setattr(et, "_lower", lambda exported, constants: bytes(1000))  # the write is what is tested

    def broken(self, data):
        with open(self, "wb") as fh:
            fh.write(data[:10])
        raise KeyboardInterrupt("simulated interruption while writing")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(KeyboardInterrupt):
        to_executorch(encoder(12, layers=1), (torch.randn(1, 40, 32),), tmp_path / "x.pte")
    assert list(tmp_path.iterdir()) == []
