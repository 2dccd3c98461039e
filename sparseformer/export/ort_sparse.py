"""Causal block layouts on ONNX Runtime's ``com.microsoft.SparseAttention`` contrib op.

The op takes a block mask in CSR form per layout head (``block_row_indices int32 [Hl, nq + 1]``,
``block_col_indices int32 [Hl, max_nnz]``, padded with -1) for one ``sparse_block_size``, and
applies it *together with the causal mask*: query ``i`` attends key ``j`` iff ``j <= i`` and
tile ``(i // bs, j // bs)`` is listed. Head ``h`` uses layout ``h % Hl``. Only a layout that is
exactly such a mask maps (:func:`ort_block_csr` checks it and raises ValueError otherwise): causal
self-attention (``q_len == kv_len``), no score terms (decay slopes, sampled-block weights).

On the CPU the op needs ``past_key``/``present_key`` (and values) to share one buffer, which
:class:`OrtSparseAttention` arranges with an I/O binding. Note that ORT's CPU kernel (onnxruntime 1.32)
computes the full causal ``Q K^T`` product and only *masks* with the layout, so its cost is
that of dense causal attention; see docs/edge.md for the measurement.
"""

from __future__ import annotations

import numpy as np
import torch

from ..layout import BlockLayout
from ._common import missing_extra


def ort_block_csr(layout: BlockLayout) -> tuple[np.ndarray, np.ndarray]:
    """``(block_row_indices, block_col_indices)`` (int32) of a causal block layout, or ValueError."""
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout, got {type(layout).__name__}")
    if not layout.causal or layout.q_len != layout.kv_len or layout.q_offset != 0:
        raise ValueError(
            "com.microsoft.SparseAttention needs causal self-attention (causal=True, q_len == kv_len, q_offset 0), "
            f"got causal={layout.causal}, q_len={layout.q_len}, kv_len={layout.kv_len}, q_offset={layout.q_offset}"
        )
    if layout.slopes is not None or layout.log_weight is not None:
        raise ValueError(
            "com.microsoft.SparseAttention has no score terms: the layout has decay slopes or block weights"
        )
    bs, length, hl = layout.block_size, layout.q_len, layout.layout_heads
    listed = layout.to_block_states() > 0  # [Hl, nq, nk]
    implied = listed.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, :length, :length]
    implied &= torch.ones(length, length, dtype=torch.bool).tril()
    if not torch.equal(implied, layout.to_dense_mask()):
        raise ValueError(
            "the layout is not a block mask intersected with the causal mask (a token-level window or "
            "partial tiles off the diagonal); com.microsoft.SparseAttention cannot express it"
        )
    rows = layout.row_ptr.view(-1)
    counts = layout.row_counts  # [Hl, nq]
    row_idx = torch.zeros(hl, layout.nq + 1, dtype=torch.int64)
    row_idx[:, 1:] = counts.cumsum(1)
    cols = torch.full((hl, int(counts.sum(1).max())), -1, dtype=torch.int64)
    for h in range(hl):
        start, stop = int(rows[h * layout.nq]), int(rows[(h + 1) * layout.nq])
        cols[h, : stop - start] = layout.col_idx[start:stop]
    return row_idx.to(torch.int32).numpy(), cols.to(torch.int32).numpy()


def sparse_attention_model(
    layout: BlockLayout, head_dim: int, *, batch: int = 1, kv_heads: int | None = None, scale: float | None = None
):
    """An ONNX model of one ``SparseAttention`` node for ``layout``: inputs ``query``, ``key``,
    ``value`` (``[B, L, H*D]``), ``past_key``/``past_value`` (``[B, Hk, L, D]``, bound to the
    present outputs); the block CSR are initializers."""
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise missing_extra("onnx", e) from e
    row_idx, cols = ort_block_csr(layout)
    h, length, b = layout.num_heads, layout.q_len, batch
    hk = kv_heads or h
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("query", f, [b, length, h * head_dim]),
        helper.make_tensor_value_info("key", f, [b, length, hk * head_dim]),
        helper.make_tensor_value_info("value", f, [b, length, hk * head_dim]),
        helper.make_tensor_value_info("past_key", f, [b, hk, length, head_dim]),
        helper.make_tensor_value_info("past_value", f, [b, hk, length, head_dim]),
    ]
    outputs = [
        helper.make_tensor_value_info("output", f, [b, length, h * head_dim]),
        helper.make_tensor_value_info("present_key", f, [b, hk, length, head_dim]),
        helper.make_tensor_value_info("present_value", f, [b, hk, length, head_dim]),
    ]
    inits = [
        numpy_helper.from_array(row_idx, "block_row_indices"),
        numpy_helper.from_array(cols, "block_col_indices"),
        numpy_helper.from_array(np.array(length, np.int32), "total_sequence_length"),
        numpy_helper.from_array(np.full(b, length, np.int32), "key_total_sequence_lengths"),
    ]
    node = helper.make_node(
        "SparseAttention",
        [i.name for i in inputs] + [t.name for t in inits],
        [o.name for o in outputs],
        domain="com.microsoft",
        num_heads=h,
        kv_num_heads=hk,
        sparse_block_size=layout.block_size,
        scale=float(head_dim**-0.5 if scale is None else scale),
    )
    graph = helper.make_graph([node], "sparse_attention", inputs, outputs, initializer=inits)
    opsets = [helper.make_operatorsetid("", 18), helper.make_operatorsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


class OrtSparseAttention:
    """``attn(q, k, v)`` with ``[B, H, L, D]`` torch tensors (SDPA layout) -> ``[B, H, L, D]``,
    computed by ``com.microsoft.SparseAttention`` on ONNX Runtime's CPU provider."""

    def __init__(
        self,
        layout: BlockLayout,
        head_dim: int,
        *,
        batch: int = 1,
        kv_heads: int | None = None,
        threads: int | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise missing_extra("onnxruntime", e) from e
        model = sparse_attention_model(layout, head_dim, batch=batch, kv_heads=kv_heads)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.shape = (batch, layout.num_heads, layout.q_len, head_dim)
        self.kv_shape = (batch, kv_heads or layout.num_heads, layout.q_len, head_dim)
        self._ort = ort

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if tuple(q.shape) != self.shape or tuple(k.shape) != self.kv_shape or tuple(v.shape) != self.kv_shape:
            raise ValueError(
                f"q must be {list(self.shape)} and k, v {list(self.kv_shape)}, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}"
            )
        b, h, length, d = self.shape
        flat = lambda t: np.ascontiguousarray(t.detach().float().transpose(1, 2).reshape(b, length, -1).numpy())  # noqa: E731
        io = self.session.io_binding()
        io.bind_cpu_input("query", flat(q))
        io.bind_cpu_input("key", flat(k))
        io.bind_cpu_input("value", flat(v))
        for name in ("key", "value"):  # past and present share one buffer: the CPU kernel requires it
            buf = self._ort.OrtValue.ortvalue_from_numpy(np.zeros(self.kv_shape, np.float32))
            io.bind_ortvalue_input(f"past_{name}", buf)
            io.bind_ortvalue_output(f"present_{name}", buf)
        io.bind_output("output")
        self.session.run_with_iobinding(io)
        out = io.get_outputs()[-1].numpy()  # outputs come in binding order: output is last
        return torch.from_numpy(out).view(b, length, h, d).transpose(1, 2)
