"""The op's ONNX schema and its translation from the PyTorch op, for ``torch.onnx.export``.

``to_onnx(..., custom_op=True)`` runs the sparse attention on the ``cpu`` backend, so the traced
program holds one ``sparseformer::block_sparse_attention`` call per attention (the layout's block
CSR as lifted constants); :func:`translation_table` turns each into one
``sparseformer.ai::BlockSparseAttention`` node (the layout tensors become initializers). The
schema is registered with ``onnx.defs`` (once per process) so that onnxscript can build the node and
the ONNX checker and shape inference know it; ONNX Runtime itself takes the op from the library.
"""

from __future__ import annotations

from collections.abc import Callable

from . import DOMAIN, OP_NAME, OP_VERSION

__all__ = ["attention_model", "register_schema", "translation_table"]

_DOC = (
    "Block-sparse attention over a block-CSR layout (sparseformer): out[b, h, i] = sum_j p_ij v[b, h // (H / Hk), j] "
    "over the key tiles the layout lists for query block i // block_size, p the softmax of "
    "cap(scale * <q_i, k_j>) + log_weight[e] - slopes[h] * |i + q_offset - j| over the pairs that the tile masks and "
    "key_padding_mask keep; 0 for a row with no such pair. Runs in ONNX Runtime with the sparseformer custom-op "
    "library (sparseformer.export.ort_op.library_path())."
)


def register_schema() -> None:
    """Registers the op's schema with ``onnx.defs`` (a no-op when it already is)."""
    import onnx.defs
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_NAME, OP_VERSION, DOMAIN):
        return
    p = OpSchema.FormalParameter
    opt = OpSchema.FormalParameterOption.Optional
    a = OpSchema.Attribute
    kind = OpSchema.AttrType
    schema = OpSchema(
        OP_NAME,
        DOMAIN,
        OP_VERSION,
        _DOC,
        inputs=[
            p("q", "T", "[B, H, Lq, D]"),
            p("k", "T", "[B, Hk, Lk, D], H % Hk == 0"),
            p("v", "T", "[B, Hk, Lk, Dv]"),
            p("row_ptr", "tensor(int64)", "[layout_heads * nq + 1], nq = ceil(Lq / block_size)"),
            p("col_idx", "tensor(int64)", "[nnz] key block of each entry, increasing within a row"),
            p("mask_id", "tensor(int64)", "[nnz] -1 (full tile) or an index into masks"),
            p("masks", "tensor(bool)", "[P, block_size, block_size] element masks of partial tiles"),
            p("log_weight", "tensor(double)", "[nnz] score term per entry", param_option=opt),
            p("slopes", "tensor(double)", "[H] distance-decay slope per head", param_option=opt),
            p("key_padding_mask", "tensor(bool)", "[B, Lk] True = keep", param_option=opt),
        ],
        outputs=[p("out", "T", "[B, H, Lq, Dv]"), p("lse", "T", "[B, H, Lq] row logsumexp", param_option=opt)],
        type_constraints=[("T", ["tensor(float)"], "float32")],
        attributes=[
            a("block_size", kind.INT, "block size of the layout"),
            a("layout_heads", kind.INT, "1 (one layout for every head) or H"),
            a("q_offset", kind.INT, "position of query 0 among the keys"),
            a("scale", kind.FLOAT, "multiplies <q_i, k_j>"),
            a("softcap", kind.FLOAT, "logit soft-capping c: scores c * tanh(s / c)", required=False),
        ],
    )
    onnx.defs.register_schema(schema)


def _block_sparse_attention(
    q,
    k,
    v,
    row_ptr,
    col_idx,
    mask_id,
    masks,
    log_weight,
    slopes,
    key_padding_mask,
    block_size: int,
    layout_heads: int,
    q_offset: int,
    scale: float,
    softcap: float | None = None,
):
    """``sparseformer::block_sparse_attention`` -> ``(out, lse)`` as one custom-domain node."""
    import onnxscript

    if q.dtype != onnxscript.ir.DataType.FLOAT:
        raise ValueError(f"custom_op=True exports float32 attention only, got q of dtype {q.dtype}")
    attrs = dict(block_size=block_size, layout_heads=layout_heads, q_offset=q_offset, scale=scale)
    if softcap is not None:
        attrs["softcap"] = softcap
    op = getattr(onnxscript.values.Opset(DOMAIN, OP_VERSION), OP_NAME)
    return op(q, k, v, row_ptr, col_idx, mask_id, masks, log_weight, slopes, key_padding_mask, **attrs, _outputs=2)


def translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export``: the native op -> the custom node."""
    import torch

    from ...kernels.cpu import ops  # noqa: F401  (registers torch.ops.sparseformer.*)

    register_schema()
    return {torch.ops.sparseformer.block_sparse_attention.default: _block_sparse_attention}


def attention_model(
    layout,
    *,
    batch: int,
    kv_heads: int,
    head_dim: int,
    value_dim: int | None = None,
    scale: float,
    softcap: float | None = None,
    key_padding_mask: bool = False,
):
    """An ONNX model of the attention alone: one ``BlockSparseAttention`` node over ``layout``.

    Inputs ``q [batch, num_heads, q_len, head_dim]``, ``k [batch, kv_heads, kv_len, head_dim]``,
    ``v [batch, kv_heads, kv_len, value_dim]`` (float32) and, with ``key_padding_mask=True``,
    ``key_padding_mask`` (bool ``[batch, kv_len]``, True = keep); the layout's tensors are
    initializers; output ``out [batch, num_heads, q_len, value_dim]``. For tests and benchmarks
    of the op against the PyTorch kernels on the same layout.
    """
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    register_schema()
    value_dim = head_dim if value_dim is None else value_dim
    bs, heads, lq, lk = layout.block_size, layout.num_heads, layout.q_len, layout.kv_len
    masks = layout.masks if layout.masks is not None else torch.zeros((0, bs, bs), dtype=torch.bool)
    consts = {"row_ptr": layout.row_ptr, "col_idx": layout.col_idx, "mask_id": layout.mask_id, "masks": masks}
    names = ["q", "k", "v", "row_ptr", "col_idx", "mask_id", "masks", "", "", ""]
    for slot, name in ((7, "log_weight"), (8, "slopes")):
        t = getattr(layout, name, None)
        if t is not None:
            consts[name] = t.to(torch.float64)
            names[slot] = name
    if key_padding_mask:
        names[9] = "key_padding_mask"
    while not names[-1]:
        names.pop()
    attrs = dict(block_size=bs, layout_heads=layout.layout_heads, q_offset=int(layout.q_offset), scale=float(scale))
    if softcap is not None:
        attrs["softcap"] = float(softcap)
    node = helper.make_node(OP_NAME, names, ["out"], domain=DOMAIN, **attrs)
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("q", f32, [batch, heads, lq, head_dim]),
        helper.make_tensor_value_info("k", f32, [batch, kv_heads, lk, head_dim]),
        helper.make_tensor_value_info("v", f32, [batch, kv_heads, lk, value_dim]),
    ]
    if key_padding_mask:
        inputs.append(helper.make_tensor_value_info("key_padding_mask", TensorProto.BOOL, [batch, lk]))
    out = helper.make_tensor_value_info("out", f32, [batch, heads, lq, value_dim])
    inits = [numpy_helper.from_array(np.ascontiguousarray(t.numpy()), n) for n, t in consts.items()]
    graph = helper.make_graph([node], "block_sparse_attention", inputs, [out], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)]
    return helper.make_model(graph, opset_imports=opsets)
