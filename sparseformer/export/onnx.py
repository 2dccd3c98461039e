"""Export to ONNX (``torch.onnx.export(..., dynamo=True)``) and run with ONNX Runtime on the CPU.

An export is valid for the input shapes it was traced with (see ``LENGTH_REASON``); the file's
``metadata_props`` record them, and :class:`OnnxRunner` refuses any other length with a
ValueError instead of running a wrong layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ._common import (
    LENGTH_REASON,
    atomic_write,
    check_inputs,
    check_model,
    check_path,
    check_shapes,
    missing_extra,
    portable_backend,
    seq_dim_of,
)

META_SHAPES = "sparseformer.input_shapes"
META_SEQ_DIM = "sparseformer.seq_dim"
META_SEQ_LEN = "sparseformer.seq_len"
META_REASON = "sparseformer.length_reason"


def to_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    seq_dim: int | None = None,
    opset_version: int = 18,
) -> Path:
    """Export ``model`` (in eval mode, sparse attention on the ``gather`` backend) to ``path``.

    Args:
        model: any ``nn.Module``: ``SparseTransformerEncoderLayer`` stacks, ``SparseMultiheadAttention``,
            ``SparseCausalLM``, or a dense baseline.
        example_inputs: a tensor or tuple of tensors, passed positionally; their shapes are
            the only shapes the export accepts.
        path: the ``.onnx`` file, written to a temporary name and renamed.
        seq_dim: the sequence dimension of the first input (default: 1 for the causal LM and
            ``batch_first`` modules, 0 for sequence-first ones).

    Returns the path.
    """
    model = check_model(model)
    inputs = check_inputs(example_inputs)
    check_path(path)
    seq_dim = seq_dim_of(model) if seq_dim is None else seq_dim
    if not 0 <= seq_dim < inputs[0].dim():
        raise ValueError(f"seq_dim must index a dim of the first input (shape {tuple(inputs[0].shape)}), got {seq_dim}")
    training = model.training
    model.eval()
    try:
        with portable_backend(model), torch.no_grad():
            model(*inputs)  # compiles and caches the layouts, so the trace sees them as constants
            program = torch.onnx.export(model, inputs, dynamo=True, opset_version=opset_version, verbose=False)
    finally:
        model.train(training)
    proto = _fold_weights(program.model_proto)
    meta = {
        META_SHAPES: json.dumps([list(t.shape) for t in inputs]),
        META_SEQ_DIM: str(seq_dim),
        META_SEQ_LEN: str(inputs[0].shape[seq_dim]),
        META_REASON: LENGTH_REASON,
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)

    def write(tmp: Path) -> None:
        import onnx

        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def _fold_weights(proto):
    """Fold ``Split`` nodes of constant weights (the packed ``in_proj_weight``) into one
    initializer per output, then constant-fold what follows (their transposes), so every
    linear layer reads a constant weight: faster, and quantizable by ONNX Runtime."""
    import numpy as np
    import onnxscript.optimizer
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    folded = []
    for node in proto.graph.node:
        if node.op_type != "Split" or node.input[0] not in inits:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if len(node.input) > 1 and node.input[1]:
            if node.input[1] not in inits:
                continue
            sizes = numpy_helper.to_array(inits[node.input[1]])
        else:
            sizes = None
        weight = numpy_helper.to_array(inits[node.input[0]])
        parts = np.split(weight, np.cumsum(sizes)[:-1] if sizes is not None else len(node.output), axis=axis)
        for name, part in zip(node.output, parts):
            proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(part), name))
        folded.append(node)
    for node in folded:
        proto.graph.node.remove(node)
    return onnxscript.optimizer.optimize(proto, input_size_limit=1 << 20, output_size_limit=1 << 18)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    try:
        import onnx
    except ImportError as e:
        raise missing_extra("onnx", e) from e
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


class OnnxRunner:
    """Runs an exported ``.onnx`` file with ONNX Runtime's CPU provider.

    ``runner(*inputs)`` takes torch tensors or numpy arrays of the traced shapes and returns a
    torch tensor (a tuple for several outputs). Another sequence length raises ValueError.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise missing_extra("onnxruntime", e) from e
        if not Path(path).is_file():
            raise ValueError(f"path {str(path)!r} is not a file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.input_shapes: list[list[int]] | None = json.loads(meta[META_SHAPES]) if META_SHAPES in meta else None
        self.seq_dim = int(meta.get(META_SEQ_DIM, 1))
        self.seq_len = int(meta[META_SEQ_LEN]) if META_SEQ_LEN in meta else None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs):
        arrays = tuple(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs)
        if self.input_shapes is not None:
            check_shapes(self.input_shapes, arrays, self.seq_dim)
        outs = self.session.run(None, dict(zip(self.input_names, arrays)))
        outs = tuple(torch.from_numpy(o) for o in outs)
        return outs[0] if len(outs) == 1 else outs
