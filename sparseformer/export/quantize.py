"""int8 dynamic quantization of the linear layers (weights int8 per channel or per tensor,
activations quantized on the fly), for the three deployment paths, plus the quality measure.

* eager PyTorch: :func:`quantize_eager` (``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``);
* ONNX Runtime: :func:`quantize_onnx` (``onnxruntime.quantization.quantize_dynamic`` on every
  MatMul/Gemm with a constant weight, which includes the attention in-projection);
* ExecuTorch: :func:`to_executorch_int8` (PT2E with XNNPACK's dynamic int8 config, then the
  XNNPACK delegate); the pass itself is :func:`quantize_linears`, which the decode-step export
  (``to_executorch_decode_step(..., int8=True)``) uses too.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from ._common import atomic_write, check_model, check_path, missing_extra
from .executorch import to_executorch


def quantize_eager(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers are dynamically quantized to int8.

    ``SparseMultiheadAttention``'s packed in-projection is a bare parameter, not an
    ``nn.Linear``, so it stays fp32 here (the ONNX and ExecuTorch paths quantize it)."""
    model = check_model(model)
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_onnx(src: str | os.PathLike, path: str | os.PathLike, *, per_channel: bool = True) -> Path:
    """Write an int8 copy of the ONNX file ``src`` to ``path`` (metadata kept). Returns the path."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise missing_extra("onnxruntime", e) from e
    if not Path(src).is_file():
        raise ValueError(f"src {str(src)!r} is not a file")
    check_path(path)
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}

    def write(tmp: Path) -> None:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel)
        model = onnx.load(str(tmp))
        have = {p.key for p in model.metadata_props}
        for key, value in meta.items():
            if key not in have:
                model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))

    return atomic_write(path, write)


def to_executorch_int8(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    seq_dim: int | None = None,
    custom_op: bool = False,
    dynamic_length: bool = False,
    max_length: int | None = None,
) -> Path:
    """Export ``model`` to a ``.pte`` with its linear layers dynamically quantized to int8
    (XNNPACK's symmetric per-channel dynamic config via PT2E); the other arguments as
    :func:`~sparseformer.export.to_executorch` (the attention stays float32; ``dynamic_length``
    with ``custom_op=True``). Returns the path."""
    return to_executorch(
        model,
        example_inputs,
        path,
        seq_dim=seq_dim,
        custom_op=custom_op,
        dynamic_length=dynamic_length,
        max_length=max_length,
        transform=quantize_linears,
    )


def quantize_linears(graph: torch.fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """``graph`` (an unlifted ``ExportedProgram.module()``) with its linear layers dynamically
    quantized to int8 for XNNPACK: weights int8 per output channel, activations quantized per call
    (PT2E with XNNPACK's symmetric dynamic config; the result is to be exported again)."""
    try:
        import executorch.kernels.quantized  # noqa: F401  (registers out variants of leftover q/dq ops)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise missing_extra("executorch and torchao", e) from e

    class _LinearOnlyQuantizer(XNNPACKQuantizer):
        # The stock pre-pass turns scalar operands into float tensors, which breaks the
        # integer arithmetic of the gather backend's tile indices; dynamic linear quantization
        # needs no such pass.
        def transform_for_annotation(self, model):
            return model

    quantizer = _LinearOnlyQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    )
    prepared = prepare_pt2e(graph, quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two outputs, flattened: ``<a, b> / (|a| |b|)`` in float64."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"outputs must have the same number of elements, got {a.numel()} and {b.numel()}")
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))
