"""The native kernel inside ExecuTorch (kernel library): the kernel against the float64 dense
reference, custom-op .pte files against the portable ones, loading in a fresh process, errors."""

import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparseformer import patterns as P
from sparseformer.export import ExecuTorchRunner, et_op, to_executorch, to_executorch_int8
from sparseformer.export.et_op.ops import use_et_op
from sparseformer.export.quantize import cosine
from sparseformer.files import write_atomic
from sparseformer.kernels import cpu
from sparseformer.kernels.reference import reference_attention

from .conftest import OP_CASES, causal_lm, encoder

pytest.importorskip("executorch")
if not cpu.is_available():
    pytest.skip(f"the native cpu kernel is unavailable: {cpu.unavailable_reason()}", allow_module_level=True)

KERNEL = b"sparseformer_et::block_sparse_attention"  # the operator name, as the .pte stores it (overload apart)


class _Attention(nn.Module):
    """The kernel alone over a fixed layout (its tensors become the program's constants)."""

    def __init__(self, layout, scale: float, softcap: float | None) -> None:
        super().__init__()
        self.layout, self.scale, self.softcap = layout, scale, softcap

    def forward(self, q, k, v, keep):
        return cpu.attention(q, k, v, self.layout, key_padding_mask=keep, scale=self.scale, softcap=self.softcap)


def _program(module: nn.Module, inputs: tuple, path):
    """``module`` as a .pte (no delegate: the kernel is the program's one operator), loaded."""
    from executorch.exir import to_edge
    from executorch.runtime import Runtime

    exported = torch.export.export(module, inputs)
    assert use_et_op(exported) == 1
    buffer = to_edge(exported).to_executorch().buffer
    write_atomic(path, lambda tmp: open(tmp, "wb").write(buffer))
    et_op.load_library()
    return Runtime.get().load_program(path).load_method("forward")


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: repr(c["pattern"])[:40])
def test_kernel_matches_float64_reference(tmp_path, case):
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
    method = _program(_Attention(layout, scale, softcap), (q, k, v, keep), tmp_path / "op.pte")
    ref = reference_attention(
        q.double(), k.double(), v.double(), layout, key_padding_mask=keep, scale=scale, softcap=softcap
    )
    for _ in range(2):  # the program's buffers are reused between calls
        (out,) = method.execute([q, k, v, keep])
        assert out.shape == (b, h, lq, dv)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)  # fp32 kernel vs fp64 oracle


def test_kernel_checks_layout_values(tmp_path, capfd):
    """Index values the program does not fix are checked in the kernel: the method's execution
    fails with the kernel's message in ExecuTorch's log, not a crash."""
    layout = P.SlidingWindow(1, unit="block").compile(q_len=64, num_heads=2, block_size=16)
    bad = layout.col_idx.clone()
    bad[-1] = 99
    x = torch.randn(1, 2, 64, 8)
    keep = torch.ones(1, 64, dtype=torch.bool)
    module = _Attention(SimpleNamespace(**{**vars(layout), "col_idx": bad}), 0.3, None)
    method = _program(module, (x, x, x, keep), tmp_path / "bad.pte")
    with pytest.raises(RuntimeError):
        method.execute([x, x, x, keep])
    assert re.search(r"block_sparse_attention\.out: .*col_idx\[\d+\] = 99 is out of range", capfd.readouterr().err)


@pytest.mark.parametrize("kind", ["encoder", "causal_lm"])
def test_custom_op_export_equals_portable_export(tmp_path, rng_length, kind):
    model = encoder(1) if kind == "encoder" else causal_lm(2)

    def example():
        return torch.randn(2, rng_length, 32) if kind == "encoder" else torch.randint(0, 256, (2, rng_length))

    x = example()
    portable = to_executorch(model, (x,), tmp_path / "portable.pte")
    custom = to_executorch(model, (x,), tmp_path / "custom.pte", custom_op=True)
    assert KERNEL not in portable.read_bytes() and KERNEL in custom.read_bytes()
    run_portable, run_custom = ExecuTorchRunner(portable), ExecuTorchRunner(custom)
    assert run_portable.kernel_library is None and run_custom.kernel_library == et_op.library_path()
    for _ in range(2):  # fresh inputs of the claimed shape
        x = example()
        got = run_custom(x)
        torch.testing.assert_close(got, run_portable(x), atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"sequence length {rng_length} only, got {rng_length + 1}"):
        run_custom(torch.cat([x, x[:, :1]], 1))
    if kind == "encoder":  # int8 linear layers around the float32 kernel
        int8 = to_executorch_int8(model, (x,), tmp_path / "custom_int8.pte", custom_op=True)
        assert KERNEL in int8.read_bytes()
        assert cosine(ExecuTorchRunner(int8)(x), got) >= 0.99


def test_one_dynamic_custom_op_program_serves_every_length(tmp_path):
    """``to_executorch(..., custom_op=True, dynamic_length=True, max_length=N)``: the layout
    compiled at ``N`` and cut to each input's length in the program; the causal LM (a causal
    window plus global tokens, RoPE) at lengths that are and are not multiples of the block size;
    int8 linear layers too (``to_executorch_int8``), cosine >= 0.99 to the model."""
    model = causal_lm(9)
    example, options = (torch.randint(0, 256, (2, 45)),), dict(custom_op=True, dynamic_length=True, max_length=150)
    runner = ExecuTorchRunner(to_executorch(model, example, tmp_path / "c.pte", **options))
    int8 = ExecuTorchRunner(to_executorch_int8(model, example, tmp_path / "c8.pte", **options))
    assert runner.seq_range == int8.seq_range == (2, 150) and runner.input_shapes == [[2, None]]
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for length in (2, 16, 17, int(torch.randint(18, 149, (), generator=g)), 150):
        x = torch.randint(0, 256, (2, length), generator=g)
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(runner(x), want, atol=1e-4, rtol=1e-4)
        assert cosine(int8(x), want) >= 0.99
    with pytest.raises(ValueError, match="sequence lengths 2 to 150, got 151"):
        runner(torch.randint(0, 256, (2, 151)))
    with pytest.raises(ValueError, match=r"input 0 must have shape \[2, 'L'\]"):
        runner(torch.randint(0, 256, (3, 20)))


def _run_in_fresh_process(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_library_loads_in_a_process_that_imports_only_executorch_runtime(tmp_path):
    model = encoder(3)
    x = torch.randn(1, 50, 32)
    path = to_executorch(model, (x,), tmp_path / "custom.pte", custom_op=True)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import ctypes, sys
from executorch.runtime import Runtime
import torch  # the runtime's own dependency (executorch.runtime imports it), for the inputs
ctypes.CDLL({str(et_op.library_path())!r})
method = Runtime.get().load_program({str(path)!r}).load_method("forward")
(y,) = method.execute([torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)])
torch.save(y, {str(tmp_path / "y.pt")!r})
print(sorted(m for m in sys.modules if m.split(".")[0] == "sparseformer"))
"""
    done = _run_in_fresh_process(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt", weights_only=True), model(x), atol=1e-4, rtol=1e-4)


def test_runtime_without_the_library_gets_a_clear_error(tmp_path, monkeypatch):
    model = encoder(4)
    x = torch.randn(1, 40, 32)
    path = to_executorch(model, (x,), tmp_path / "custom.pte", custom_op=True)
    # plain ExecuTorch runtime, no library loaded: an error naming the kernel, not a crash
    script = f"""
from executorch.runtime import Runtime
try:
    Runtime.get().load_program({str(path)!r}).load_method("forward")
except RuntimeError:
    print("refused")
"""
    done = _run_in_fresh_process(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "refused"
    assert et_op.KERNEL_NAME in done.stderr  # ExecuTorch's log: "Missing operator: ... <name>"

    # the runner, when the library cannot be had
    def no_compiler():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(et_op, "library_path", no_compiler)
    with pytest.raises(RuntimeError, match=r"sparseformer_et::block_sparse_attention\.out.*cannot be built.*no C\+\+"):
        ExecuTorchRunner(path)


def test_custom_op_arguments(tmp_path):
    model = encoder(5)
    x = torch.randn(1, 40, 32)
    with pytest.raises(TypeError, match="custom_op must be a bool"):
        to_executorch(model, (x,), tmp_path / "a.pte", custom_op="yes")
    with pytest.raises(ValueError, match="float32 attention only"):
        to_executorch(encoder(5).double(), (x.double(),), tmp_path / "a.pte", custom_op=True)
    with pytest.raises(ValueError, match="float32 attention only"):
        to_executorch_int8(encoder(5).double(), (x.double(),), tmp_path / "a.pte", custom_op=True)
    for options in (dict(max_length=100), dict(custom_op=True)):  # the portable graph; no bound
        with pytest.raises(
            ValueError, match="dynamic_length=True ExecuTorch exports need custom_op=True and max_length"
        ):
            to_executorch(model, (x,), tmp_path / "a.pte", dynamic_length=True, **options)
        with pytest.raises(
            ValueError, match="dynamic_length=True ExecuTorch exports need custom_op=True and max_length"
        ):
            to_executorch_int8(model, (x,), tmp_path / "a.pte", dynamic_length=True, **options)
    with pytest.raises(ValueError, match="max_length is for dynamic_length=True exports"):
        to_executorch(model, (x,), tmp_path / "a.pte", max_length=100)
    assert not list(tmp_path.iterdir())
