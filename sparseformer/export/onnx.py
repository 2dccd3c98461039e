"""Export to ONNX (``torch.onnx.export(..., dynamo=True)``) and run with ONNX Runtime on the CPU.

An export is valid for the input shapes it was traced with (see ``LENGTH_REASON``), or, with
``dynamic_length=True`` and band-form patterns, for a range of lengths; the file's
``metadata_props`` record the shapes (and the range), and :class:`OnnxRunner` refuses any other
length with a ValueError instead of running a wrong layout.

With ``custom_op=True`` each sparse attention is one ``sparseformer.ai::BlockSparseAttention`` node
(the native kernel, see :mod:`sparseformer.export.ort_op`) instead of the portable decomposed graph;
such a file needs the custom-op library, which :class:`OnnxRunner` registers by itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._common import (
    LENGTH_REASON,
    atomic_write,
    check_path,
    check_shapes,
    dynamic_length_shapes,
    dynamic_range,
    missing_extra,
    native_backend,
    portable_backend,
    prepare,
    seq_dim_of,
)
from .hf import INPUT_NAMES, TokenModel, check_mask, ordered_inputs

META_SHAPES = "sparseformer.input_shapes"
META_SEQ_DIM = "sparseformer.seq_dim"
META_SEQ_LEN = "sparseformer.seq_len"
META_REASON = "sparseformer.length_reason"
META_SEQ_RANGE = "sparseformer.seq_range"
#: ONNX Runtime's input type names -> the numpy dtype the runner checks (others are not checked).
_NUMPY_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(bool)": np.dtype(np.bool_),
}


def to_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    seq_dim: int | None = None,
    opset_version: int = 18,
    dynamic_length: bool = False,
    max_length: int | None = None,
    custom_op: bool = False,
) -> Path:
    """Export ``model`` (in eval mode, sparse attention on the ``gather`` backend, or as the native
    custom op with ``custom_op=True``) to ``path``.

    Args:
        model: any ``nn.Module``: ``SparseTransformerEncoderLayer`` stacks, ``SparseMultiheadAttention``,
            ``SparseCausalLM``, a dense baseline, or a transformers ``PreTrainedModel`` (stock,
            :func:`sparseformer.hf.sparsify`-ed, or :func:`sparseformer.hf.load_distilled`-ed; see
            :mod:`sparseformer.export.hf`: inputs ``input_ids`` and ``attention_mask``, output
            ``logits`` or ``last_hidden_state``).
        example_inputs: a tensor or tuple of tensors, passed positionally; for a transformers
            model the tokenizer's output or ``(input_ids, attention_mask)``.
        path: the ``.onnx`` file, written to a temporary name and renamed.
        seq_dim: the sequence dimension of the first input (default: 1 for the causal LM and
            ``batch_first`` modules, 0 for sequence-first ones).
        dynamic_length: False (default): the file serves the example inputs' shapes only.
            True: one file serves every length of :func:`~sparseformer.export._common.dynamic_range`:
            from the shortest the global tokens fit in to ``max_length`` (None: no upper bound, or
            a transformers model's learned positions); the other dims stay as traced. The
            sequence dim is ``seq_dim`` of the first input and every dim of the other inputs that
            has the example length. Needs band-form patterns (else ValueError).
        max_length: the longest length of a dynamic export.
        custom_op: False (default): the sparse attention as portable ONNX ops (the ``gather``
            backend), a file any ONNX runtime opens. True: each sparse attention as one
            ``sparseformer.ai::BlockSparseAttention`` node running the native kernel (traced on
            the ``cpu`` backend, the compiled layout stored as initializers); float32; with
            ``dynamic_length`` the layout is compiled at ``max_length`` (required) and each
            call cuts it to the input's length in the graph
            (:meth:`~sparseformer.layout.BlockLayout.prefix`). ONNX Runtime needs the custom-op
            library (``sparseformer.export.ort_op.library_path()``; :class:`OnnxRunner` registers it).

    Returns the path.
    """
    model, inputs = prepare(model, example_inputs)
    check_path(path)
    seq_dim = seq_dim_of(model) if seq_dim is None else seq_dim
    if not 0 <= seq_dim < inputs[0].dim():
        raise ValueError(f"seq_dim must index a dim of the first input (shape {tuple(inputs[0].shape)}), got {seq_dim}")
    if not isinstance(dynamic_length, bool):
        raise TypeError(f"dynamic_length must be a bool, got {type(dynamic_length).__name__}")
    if not isinstance(custom_op, bool):
        raise TypeError(f"custom_op must be a bool, got {type(custom_op).__name__}")
    if custom_op and dynamic_length and max_length is None:
        raise ValueError(
            "custom_op=True with dynamic_length=True needs max_length: the op reads a block layout compiled at "
            "max_length and cut to the input's length in the graph"
        )
    length = int(inputs[0].shape[seq_dim])
    shapes: list[list[int | None]] = [list(t.shape) for t in inputs]
    dynamic_shapes, seq_range = None, None
    is_token = isinstance(model, TokenModel)
    if dynamic_length:
        seq_range = dynamic_range(model, max_length)
        dynamic_shapes, shapes = dynamic_length_shapes(inputs, seq_dim, seq_range)
    elif max_length is not None:
        raise ValueError(f"max_length is for dynamic_length=True exports, got max_length={max_length}")
    training = model.training
    model.eval()
    backend = native_backend(model) if custom_op else portable_backend(model)
    table = _custom_op_table() if custom_op else None
    try:
        with backend, torch.no_grad():
            model(*inputs)  # compiles and caches the layouts, so the trace sees them as constants
            names = dict(input_names=list(INPUT_NAMES), output_names=[model.output_name]) if is_token else {}
            program = torch.onnx.export(
                model,
                inputs,
                dynamo=True,
                opset_version=opset_version,
                verbose=False,
                dynamic_shapes=dynamic_shapes,
                custom_translation_table=table,
                **names,
            )
    finally:
        model.train(training)
    proto = _fold_weights(program.model_proto)
    meta = {META_SHAPES: json.dumps(shapes), META_SEQ_DIM: str(seq_dim), META_SEQ_LEN: str(length)}
    if seq_range is None:
        meta[META_REASON] = LENGTH_REASON
    else:
        meta[META_SEQ_RANGE] = json.dumps(list(seq_range))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)

    def write(tmp: Path) -> None:
        import onnx

        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def _custom_op_table() -> dict:
    """The translation of the native op to the custom node."""
    from .ort_op.onnx_op import translation_table

    return translation_table()


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


def uses_custom_op(path: str | os.PathLike) -> bool:
    """Whether the ONNX file imports the custom-op domain (``custom_op=True`` exports)."""
    try:
        import onnx
    except ImportError as e:
        raise missing_extra("onnx", e) from e

    from .ort_op import DOMAIN

    model = onnx.load(str(path), load_external_data=False)
    return any(o.domain == DOMAIN for o in model.opset_import)


def _custom_op_library(path: Path, library: str | os.PathLike | None) -> str:
    """The custom-op library to register for ``path``: ``library`` if given (it must exist), else
    the one :func:`~sparseformer.export.ort_op.library_path` builds; RuntimeError naming it if not."""
    from .ort_op import DOMAIN, OP_NAME, library_path

    needs = f"{str(path)!r} uses the custom op {DOMAIN}::{OP_NAME}, which needs sparseformer's ONNX Runtime custom-op library"
    if library is not None:
        if not Path(library).is_file():
            raise ValueError(f"custom_ops_library {str(library)!r} is not a file ({needs})")
        return str(library)
    try:
        return str(library_path())
    except RuntimeError as e:
        raise RuntimeError(f"{needs} (sparseformer.export.ort_op.library_path()), which is unavailable: {e}") from e


class OnnxRunner:
    """Runs an exported ``.onnx`` file with ONNX Runtime's CPU provider.

    ``runner(*inputs)`` takes torch tensors or numpy arrays of the traced shapes and returns a
    torch tensor (a tuple for several outputs). Another sequence length raises ValueError.
    A file that uses the custom op (``to_onnx(..., custom_op=True)``) gets the custom-op library
    registered: ``custom_ops_library`` if given, else the one :mod:`sparseformer.export.ort_op`
    builds; when it cannot be had, RuntimeError names it.

    ``spinning``: whether ONNX Runtime's intra-op worker threads spin (busy-wait) between parallel
    sections (``session.intra_op.allow_spinning``). ``None`` (default): off for a file that uses the
    custom op, whose kernel runs on threads of its own that spinning workers would compete with for
    the cores (docs/edge.md measures it), ONNX Runtime's default (on) otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        custom_ops_library: str | os.PathLike | None = None,
        spinning: bool | None = None,
    ) -> None:
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
        if spinning is not None and not isinstance(spinning, bool):
            raise TypeError(f"spinning must be a bool or None, got {type(spinning).__name__}")
        self.custom_ops_library = _custom_op_library(Path(path), custom_ops_library) if uses_custom_op(path) else None
        if self.custom_ops_library is not None:
            opts.register_custom_ops_library(self.custom_ops_library)
        if spinning is None:
            spinning = self.custom_ops_library is None
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.input_shapes: list[list[int | None]] | None = (
            json.loads(meta[META_SHAPES]) if META_SHAPES in meta else None
        )
        self.seq_range = tuple(json.loads(meta[META_SEQ_RANGE])) if META_SEQ_RANGE in meta else None
        self.seq_dim = int(meta.get(META_SEQ_DIM, 1))
        self.seq_len = int(meta[META_SEQ_LEN]) if META_SEQ_LEN in meta else None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = [_NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()]

    def __call__(self, *inputs, **named):
        inputs = ordered_inputs(self.input_names, inputs, named)
        arrays = tuple(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs)
        if self.input_shapes is not None:
            check_shapes(self.input_shapes, arrays, self.seq_dim, self.seq_range)
        for name, want, x in zip(self.input_names, self.input_types, arrays):
            got = getattr(x, "dtype", type(x).__name__)
            if want is not None and got != want:
                raise TypeError(f"input {name!r} must be {want} (as exported), got {got}")
        if "attention_mask" in self.input_names:  # a transformers export: 1 = real token, 0 = padding
            check_mask(arrays[self.input_names.index("attention_mask")])
        outs = self.session.run(None, dict(zip(self.input_names, arrays)))
        outs = tuple(torch.from_numpy(o) for o in outs)
        return outs[0] if len(outs) == 1 else outs
