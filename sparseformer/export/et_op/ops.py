"""The op that a ``custom_op=True`` ExecuTorch program calls: ``sparseformer_et::block_sparse_attention``,
the native op under a name of its own, with the out variant ExecuTorch needs.

ExecuTorch's ``to_executorch()`` replaces each functional call by the overload ``.out`` of the same
op (whose kernel writes into outputs that the program's memory plan allocates). The native op
``sparseformer::block_sparse_attention`` keeps no other overload (``torch.library.opcheck`` tests
only operators without overloads), so the ExecuTorch export swaps its calls for this twin
(:func:`use_et_op`), whose arguments and outputs are the same. In PyTorch both overloads run the
native op (for tracing and for running the edge program); the kernel library registers
``sparseformer_et::block_sparse_attention.out`` in the ExecuTorch runtime.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...kernels.cpu import ops as native

_ARGS = (
    "Tensor q, Tensor k, Tensor v, Tensor row_ptr, Tensor col_idx, Tensor mask_id, Tensor masks, Tensor? log_weight, "
    "Tensor? slopes, Tensor? key_padding_mask, SymInt block_size, SymInt layout_heads, SymInt q_offset, float scale, "
    "float? softcap=None"
)
_library = torch.library.Library("sparseformer_et", "DEF")
_library.define(f"block_sparse_attention({_ARGS}) -> (Tensor, Tensor)")
_library.define(f"block_sparse_attention.out({_ARGS}, *, Tensor(a!) out, Tensor(b!) lse) -> (Tensor(a!), Tensor(b!))")


def _functional(*args) -> tuple[Tensor, Tensor]:
    return native.block_sparse_attention(*args)


def _functional_meta(q, k, v, *args) -> tuple[Tensor, Tensor]:
    B, H, Lq, _ = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, H, Lq, v.shape[-1])), q.new_empty((B, H, Lq), dtype=lse_dtype)


def _out(*args, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    o, s = native.block_sparse_attention(*args)
    out.resize_(o.shape).copy_(o)
    lse.resize_(s.shape).copy_(s)
    return out, lse


def _out_meta(*args, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    return out, lse


_library.impl("block_sparse_attention", _functional, "CPU")
_library.impl("block_sparse_attention", _functional_meta, "Meta")
_library.impl("block_sparse_attention.out", _out, "CPU")
_library.impl("block_sparse_attention.out", _out_meta, "Meta")


def use_et_op(exported: torch.export.ExportedProgram) -> int:
    """Replace, in place, every call of the native op in ``exported`` by its ExecuTorch twin;
    returns how many."""
    swapped = 0
    for node in exported.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.sparseformer.block_sparse_attention.default:
            node.target = torch.ops.sparseformer_et.block_sparse_attention.default
            swapped += 1
    exported.graph_module.recompile()
    return swapped
