"""ExecuTorch export (XNNPACK delegate) run by ``executorch.runtime``: parity, the per-length
contract, atomic writes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseformer.export import ExecuTorchRunner, to_executorch
from sparseformer.export._common import portable_backend
from sparseformer.export.executorch import export_program, fold_constants

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
    with pytest.raises(TypeError, match="input 0 must be torch.float32 \\(as exported\\), got torch.float64"):
        runner(x.double())
    with pytest.raises(ValueError, match="takes its inputs positionally, got names \\['src'\\]"):
        runner(src=x)


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


def _input_dependent(program: torch.export.ExportedProgram) -> set:
    """Nodes of ``program`` whose value depends on a user input."""
    user = set(program.graph_signature.user_inputs)
    dep = {n for n in program.graph.nodes if n.op == "placeholder" and n.name in user}
    for n in program.graph.nodes:
        if n.op == "call_function" and any(a in dep for a in n.all_input_nodes):
            dep.add(n)
    return dep


def test_export_folds_every_constant_subgraph():
    # The gather backend's masks and indices and any op on parameters alone would otherwise run
    # on ExecuTorch's portable kernels at every call (and a sliced weight keeps a linear layer
    # out of the XNNPACK delegate).
    model = encoder(14, layers=2)
    x = (torch.randn(1, 80, 32),)
    with portable_backend(model), torch.no_grad():
        raw = torch.export.export(model, x)
    assert any(n.op == "call_function" and n not in _input_dependent(raw) for n in raw.graph.nodes)
    program = export_program(model, x)
    dep = _input_dependent(program)
    assert [n for n in program.graph.nodes if n.op == "call_function" and n not in dep] == []
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*x), model(*x), atol=1e-5, rtol=1e-5)


class _SlicedWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(256, 16))
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x):
        self.steps.add_(1)  # state: must not be folded
        return F.linear(x, self.weight[:8].t().contiguous().t()) + self.steps


def test_fold_constants_copies_views_and_keeps_state():
    model = _SlicedWeight()
    x = torch.randn(3, 16)
    program = fold_constants(torch.export.export(model, (x,)).module(), (x,))
    consts = {**program.state_dict, **program.constants}
    assert "weight" not in consts  # only the folded slice is kept
    (folded,) = (t for name, t in consts.items() if name.startswith("_folded_constant"))
    assert folded.shape == (8, 16)
    assert folded.untyped_storage().nbytes() == folded.numel() * folded.element_size()  # a copy, not a view
    run = program.module()
    torch.testing.assert_close(run(x), x @ model.weight[:8].detach().t() + 1)
    torch.testing.assert_close(run(x), x @ model.weight[:8].detach().t() + 2)  # the buffer still counts


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_lowers_exactly_in_both_forms(approximate, tmp_path):
    """XNNPACK (executorch 1.5) runs every GELU as the erf form; the export writes the tanh form
    out (``exact_tanh_gelu``), so both forms match PyTorch (the tanh one fails without it)."""
    model = nn.Sequential(nn.Linear(32, 32), nn.GELU(approximate=approximate)).eval()
    x = 8 * torch.randn(3, 40, 32)
    runner = ExecuTorchRunner(to_executorch(model, (x,), tmp_path / "gelu.pte"))
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=2e-5, rtol=0)
