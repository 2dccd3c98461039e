"""Export to ExecuTorch (``torch.export`` -> edge dialect -> XNNPACK delegate -> ``.pte``) and
run with ``executorch.runtime``.

Like the ONNX export, a ``.pte`` is valid for the traced input shapes only; they are stored in
the program (constant methods ``sparseformer_seq_len`` and ``sparseformer_seq_dim``, plus the
method's own input metadata), and :class:`ExecuTorchRunner` refuses any other length. A
``custom_op=True`` export may instead serve every length up to ``max_length``
(``dynamic_length=True``; constant methods ``sparseformer_seq_range`` and
``sparseformer_dynamic_dims``).

With ``custom_op=True`` each sparse attention is one call of the native kernel
(``sparseformer_et::block_sparse_attention.out``, :mod:`sparseformer.export.et_op`) instead of the
portable graph; the program then needs the kernel library loaded into the runtime, which
:class:`ExecuTorchRunner` does by itself (the program says so in its constant method
``sparseformer_custom_op``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..kernels.reference import bmm_products
from ._common import (
    atomic_write,
    check_dtypes,
    check_inputs,
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

#: The constant method that marks a program calling the native kernel (``custom_op=True``).
CUSTOM_OP_CONSTANT = "sparseformer_custom_op"
#: The constant method that marks a transformers model's program: inputs ``input_ids``, ``attention_mask``.
TOKEN_CONSTANT = "sparseformer_token_inputs"
# The dtypes of the inputs, by the code of c10's ScalarType that the program's metadata gives.
_SCALAR_TYPES = {3: torch.int32, 4: torch.int64, 6: torch.float32, 7: torch.float64, 11: torch.bool}


def trace_backend(model: nn.Module, custom_op: bool) -> contextlib.AbstractContextManager[nn.Module]:
    """The attention backend an export traces ``model`` on: ``gather`` (the portable graph), or
    the native kernel with ``custom_op=True`` (:func:`~sparseformer.export._common.native_backend`)."""
    if not isinstance(custom_op, bool):
        raise TypeError(f"custom_op must be a bool, got {type(custom_op).__name__}")
    return native_backend(model) if custom_op else portable_backend(model)


def _tanh_gelu(x: torch.Tensor, approximate: str = "none"):
    """``gelu(x, approximate="tanh")`` as its formula; other GELUs untouched (``NotImplemented``)."""
    if approximate != "tanh":
        return NotImplemented
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))


def exact_tanh_gelu(exported: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``exported`` with every ``gelu(approximate="tanh")`` (Gemma's ``gelu_pytorch_tanh``) written
    out as ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; unchanged without one.

    XNNPACK in executorch 1.5 lowers every GELU as the exact erf form, ignoring ``approximate``
    (its ``GeluVisitor``; routed to the tanh form upstream since pytorch/executorch#22851): a
    Gemma ``.pte`` was 1e-3 off its model. Written out, the mul/add/tanh ops lower exactly
    (tests/export: a lone GELU within 2e-5, Gemma 3 within 1e-4), for a few element-wise ops."""
    gelu = torch.ops.aten.gelu.default
    if not any(n.target is gelu and n.kwargs.get("approximate") == "tanh" for n in exported.graph.nodes):
        return exported
    return exported.run_decompositions({gelu: _tanh_gelu})


def _lower(exported: torch.export.ExportedProgram, constants: dict[str, int]) -> bytes:
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as e:
        raise missing_extra("executorch", e) from e
    edge = to_edge_transform_and_lower(
        exact_tanh_gelu(exported), partitioner=[XnnpackPartitioner()], constant_methods=constants
    )
    return edge.to_executorch().buffer


def _attr(root: nn.Module, target: str):
    return functools.reduce(getattr, target.split("."), root) if target else root


def _keeps_at_run_time(node: torch.fx.Node) -> bool:
    """Ops never folded: side effects, random draws, and dequantize (an int8 weight followed by
    its dequantize is the pattern that XNNPACK lowers to an int8 linear)."""
    target = node.target
    if node.is_impure() or "dequantize" in getattr(target, "__name__", str(target)):
        return True
    return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in target.tags


def fold_constants(
    graph: torch.fx.GraphModule, inputs: tuple[torch.Tensor, ...], dynamic_shapes: tuple | None = None
) -> torch.export.ExportedProgram:
    """Export ``graph`` (an unlifted ``ExportedProgram.module()``; ``dynamic_shapes`` as it was
    exported with) with every subgraph that does not depend on the inputs (it reads only
    parameters, buffers and constants, or nothing, like an ``arange``) evaluated once, here, and
    stored as a constant.

    XNNPACK delegates an op only when its weights are constants, and whatever it leaves behind
    runs on ExecuTorch's portable kernels at every call: the sparse attention's keep masks and
    tile indices are computed from the sequence length and the layout's constant tensors, and a
    parameter sliced or transposed at run time would keep its linear layer out of the delegate.
    Each folded constant is a fresh contiguous copy: a view would carry its base's whole
    storage into the ``.pte``.
    """
    values: dict[torch.fx.Node, object] = {}
    output = graph.graph.output_node()
    # A buffer that the graph writes (a cache, running statistics) is state, not a constant.
    mutated = {n.target for n in graph.graph.find_nodes(op="get_attr") if any(u.is_impure() for u in n.users)}
    with torch.no_grad():
        for node in graph.graph.nodes:
            if node.op == "get_attr":
                value = _attr(graph, node.target)
                if isinstance(value, torch.Tensor) and node.target not in mutated:
                    values[node] = value
            elif node.op == "call_function" and not _keeps_at_run_time(node):
                deps = node.all_input_nodes
                if all(d in values for d in deps):
                    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
                    values[node] = node.target(*args, **kwargs)
        folded = 0
        for node, value in values.items():
            users = [u for u in node.users if u not in values]
            if node.op == "get_attr" or not isinstance(value, torch.Tensor) or not users or output in users:
                continue
            name = f"_folded_constant{folded}"
            folded += 1
            graph.register_buffer(name, value.detach().clone(memory_format=torch.contiguous_format))
            with graph.graph.inserting_before(node):
                const = graph.graph.get_attr(name)
            const.meta.update(node.meta)
            node.replace_all_uses_with(const, delete_user_cb=lambda user: user not in values)
    graph.graph.eliminate_dead_code()
    for node in graph.graph.find_nodes(op="get_attr"):
        if not node.users:
            graph.graph.erase_node(node)
    used = {node.target for node in graph.graph.find_nodes(op="get_attr")}
    for name, _ in [*graph.named_parameters(remove_duplicate=False), *graph.named_buffers(remove_duplicate=False)]:
        if name not in used:  # folded away: not exported, not stored
            owner, _, leaf = name.rpartition(".")
            delattr(_attr(graph, owner) if owner else graph, leaf)
    graph.delete_all_unused_submodules()
    graph.recompile()
    return torch.export.export(graph, inputs, dynamic_shapes=dynamic_shapes)


#: A rewrite of an exported graph before its constants are folded: ``(graph, inputs) -> graph``.
Transform = Callable[[torch.fx.GraphModule, tuple[torch.Tensor, ...]], torch.fx.GraphModule]


def export_program(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    custom_op: bool = False,
    dynamic_shapes: tuple | None = None,
    transform: Transform | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode with sparse attention on ``gather`` (or, with
    ``custom_op=True``, on the native ``cpu`` backend: one ``sparseformer::block_sparse_attention``
    call per attention), rewritten by ``transform`` (e.g. int8 linear layers), constant subgraphs
    folded (:func:`fold_constants`)."""
    backend = trace_backend(model, custom_op)
    training = model.training
    model.eval()
    try:
        with backend, torch.no_grad(), bmm_products():
            model(*inputs)  # compiles and caches the layouts, so the trace sees them as constants
            graph = torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes).module()
            if transform is not None:
                graph = transform(graph, inputs)
            return fold_constants(graph, inputs, dynamic_shapes)
    finally:
        model.train(training)


def to_executorch(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    seq_dim: int | None = None,
    custom_op: bool = False,
    dynamic_length: bool = False,
    max_length: int | None = None,
    transform: Transform | None = None,
) -> Path:
    """Export ``model`` to an ExecuTorch ``.pte`` at ``path`` (temporary name, then renamed).

    Arguments as :func:`sparseformer.export.to_onnx`; ``transform`` rewrites the exported graph
    before its constants are folded (:func:`~sparseformer.export.to_executorch_int8` quantizes its
    linear layers there). ``custom_op=True``: each sparse attention runs the native kernel
    (float32; the program needs :mod:`sparseformer.export.et_op`'s library in the runtime).
    ``dynamic_length=True`` (with ``custom_op=True`` and ``max_length``): one program for every
    length of :func:`~sparseformer.export._common.dynamic_range` up to ``max_length``, for
    band-form patterns and full layers; the layout is compiled at ``max_length`` and cut to the
    input's length in the program, and ExecuTorch plans the activations' memory for
    ``max_length``. The portable graph is per length here (its attention decomposition for
    ExecuTorch specialises on the length). Returns the path.
    """
    model, inputs = prepare(model, example_inputs)
    check_path(path)
    seq_dim = seq_dim_of(model) if seq_dim is None else seq_dim
    if not 0 <= seq_dim < inputs[0].dim():
        raise ValueError(f"seq_dim must index a dim of the first input (shape {tuple(inputs[0].shape)}), got {seq_dim}")
    if not isinstance(dynamic_length, bool):
        raise TypeError(f"dynamic_length must be a bool, got {type(dynamic_length).__name__}")
    constants: dict[str, object] = {"sparseformer_seq_dim": seq_dim}
    spec = None
    if dynamic_length:
        if custom_op is not True or max_length is None:
            raise ValueError(
                "dynamic_length=True ExecuTorch exports need custom_op=True and max_length (the layout is compiled "
                "at it and cut to each input's length in the program); the portable graph is per length; got "
                f"custom_op={custom_op!r}, max_length={max_length!r}"
            )
        seq_range = dynamic_range(model, max_length)
        spec, shapes = dynamic_length_shapes(inputs, seq_dim, seq_range)
        constants["sparseformer_seq_range"] = list(seq_range)
        dims = [(i, d) for i, shape in enumerate(shapes) for d, n in enumerate(shape) if n is None]
        constants["sparseformer_dynamic_dims"] = [x for pair in dims for x in pair]  # input, dim, input, dim, ...
    elif max_length is not None:
        raise ValueError(f"max_length is for dynamic_length=True exports, got max_length={max_length}")
    else:
        constants["sparseformer_seq_len"] = int(inputs[0].shape[seq_dim])
    if isinstance(model, TokenModel):
        constants[TOKEN_CONSTANT] = 1
    exported = export_program(model, inputs, custom_op=custom_op, dynamic_shapes=spec, transform=transform)
    if custom_op:
        from .et_op.ops import use_et_op

        use_et_op(exported)
        constants[CUSTOM_OP_CONSTANT] = 1
    buffer = _lower(exported, constants)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer))


class ExecuTorchRunner:
    """Runs a ``.pte`` with ``executorch.runtime``; ``runner(*inputs)`` takes torch tensors of
    the traced shapes and dtypes and returns a tensor (a tuple for several outputs); a
    transformers model's program also takes ``runner(**tokenizer(...))``. Another sequence
    length (one outside ``seq_range`` for a dynamic-length program) or shape raises ValueError,
    another dtype TypeError, an ``attention_mask`` of other values than 0 and 1 ValueError."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from executorch.runtime import Runtime
        except ImportError as e:
            raise missing_extra("executorch", e) from e
        if not Path(path).is_file():
            raise ValueError(f"path {str(path)!r} is not a file")
        self.program = Runtime.get().load_program(Path(path))
        names = self.program.method_names
        #: The kernel library loaded for a program that calls the native kernel, else None.
        self.kernel_library = None
        if CUSTOM_OP_CONSTANT in names:
            from .et_op import load_library

            self.kernel_library = load_library()
        self.method = self.program.load_method("forward")
        self.seq_len = int(self.constant("sparseformer_seq_len")[0]) if "sparseformer_seq_len" in names else None
        self.seq_dim = int(self.constant("sparseformer_seq_dim")[0]) if "sparseformer_seq_dim" in names else 1
        #: ``(shortest, longest)`` lengths of a dynamic-length program, else None.
        self.seq_range = tuple(self.constant("sparseformer_seq_range")) if "sparseformer_seq_range" in names else None
        meta = self.method.metadata
        self.input_shapes: list[list[int | None]] = [
            list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())
        ]  # the largest shapes of a dynamic-length program; None marks its length dims below
        if self.seq_range is not None:
            flat = self.constant("sparseformer_dynamic_dims")
            for i, d in zip(flat[::2], flat[1::2]):
                self.input_shapes[int(i)][int(d)] = None
        self.input_dtypes = [_SCALAR_TYPES.get(meta.input_tensor_meta(i).dtype()) for i in range(meta.num_inputs())]
        #: ``["input_ids", "attention_mask"]`` for a transformers model's program, else None (positional inputs).
        self.input_names = list(INPUT_NAMES) if TOKEN_CONSTANT in names else None

    def constant(self, name: str) -> list:
        """The values of the program's constant method ``name``."""
        return list(self.program.load_method(name).execute([]))

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor):
        if named and self.input_names is None:
            raise ValueError(f"this program takes its inputs positionally, got names {sorted(named)}")
        inputs = check_inputs(ordered_inputs(self.input_names, inputs, named) if named else inputs)
        check_shapes(self.input_shapes, inputs, self.seq_dim, self.seq_range)
        check_dtypes(self.input_dtypes, inputs)
        if self.input_names is not None:
            check_mask(inputs[1])
        outs = tuple(self.method.execute([t.contiguous() for t in inputs]))
        return outs[0] if len(outs) == 1 else outs
