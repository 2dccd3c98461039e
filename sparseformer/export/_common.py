"""What every exporter shares: the portable backend switch, the per-length contract, atomic writes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..patterns.base import Pattern

#: Why an export is valid for one sequence length only (stored in every exported file).
LENGTH_REASON = (
    "the block layout is compiled for one sequence length and baked into the graph as constant tile "
    "indices and masks; export again with an input of the length you need"
)


#: Why a dynamic-length export is refused for a pattern.
DYNAMIC_REASON = (
    "dynamic_length needs every sparse attention to be in band form (sliding windows, BlockLocal "
    "and truncated DistanceDecay, plus global prefix tokens: sparseformer.band.band_of), whose indices are "
    "computed from the length at run time; other patterns bake a compiled layout into the graph, "
    "so export them per length (dynamic_length=False)"
)


def missing_extra(package: str, err: ImportError) -> ImportError:
    """The ImportError raised when an optional runtime is missing: names the extra to install."""
    return ImportError(f"{package} is needed for this (pip install 'sparseformer[edge]'): {err}")


def check_inputs(example_inputs: object) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors (a lone tensor is wrapped)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors, got {type(example_inputs).__name__}"
        )
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"example_inputs[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return tuple(example_inputs)


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def prepare(model: object, example_inputs: object) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module to export and its positional inputs: a transformers model becomes a
    :class:`~.hf.TokenModel` over ``(input_ids, attention_mask)`` (:func:`~.hf.token_inputs`);
    any other module is exported as it is, with :func:`check_inputs`."""
    from .hf import TokenModel, is_hf_model, token_inputs

    model = check_model(model)
    if is_hf_model(model):
        return TokenModel(model), token_inputs(example_inputs)
    return model, check_inputs(example_inputs)


def seq_dim_of(model: nn.Module) -> int:
    """The sequence dimension of the model's first input: 1 for the causal LM (``idx [B, L]``)
    and for ``batch_first`` attention modules, 0 for sequence-first ones (``[L, B, E]``)."""
    from ..nn import SparseCausalLM
    from .hf import TokenModel

    if isinstance(model, (SparseCausalLM, TokenModel)):
        return 1
    for m in model.modules():
        if hasattr(m, "batch_first"):
            return 1 if m.batch_first else 0
    return 1


def sparse_attentions(model: nn.Module) -> Iterator[tuple[str, Pattern, int, bool, int]]:
    """``(module name, pattern, block_size, causal, num_heads)`` of every sparse self-attention in
    ``model``: ``SparseMultiheadAttention`` modules and the causal LM's attention (always causal;
    skipped when its pattern is None, the dense baseline)."""
    from ..nn.causal_lm import CausalSelfAttention
    from ..nn.multihead_attention import SparseMultiheadAttention

    for name, m in model.named_modules():
        if isinstance(m, SparseMultiheadAttention):
            yield name, m.pattern, m.block_size, m.causal, m.num_heads
        elif isinstance(m, CausalSelfAttention) and m.cfg.pattern is not None:
            yield name, m.cfg.pattern, m.cfg.block_size, True, m.cfg.n_heads


def dynamic_range(model: nn.Module, max_length: int | None) -> tuple[int, int | None]:
    """The inclusive ``(shortest, longest)`` lengths a dynamic-length export of ``model`` serves.

    ``shortest``: every global token present, and at least 2; ValueError naming a module whose
    pattern is neither in band form nor ``P.Dense()`` (a transformers model's full layers).
    ``longest``: ``max_length``, capped by a transformers model's learned absolute positions
    (:func:`position_limit`): None then means that limit, a longer ``max_length`` is a ValueError
    (extend the positions first); None for a model without such a limit means no upper bound."""
    from ..band import band_of
    from ..patterns.dense import Dense
    from .hf import TokenModel, layer_patterns, position_limit

    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
        raise TypeError(f"max_length must be an int or None, got {type(max_length).__name__}")
    if isinstance(model, TokenModel):
        attentions = [(name, p, bs, False, heads) for name, p, bs, heads in layer_patterns(model.model)]
        limit = position_limit(model.model)
    else:
        attentions, limit = list(sparse_attentions(model)), None
    shortest = 2
    for name, pattern, block_size, causal, heads in attentions:
        if type(pattern) is Dense:
            continue
        band = band_of(pattern, block_size, causal, heads)
        if band is None:
            raise ValueError(f"module {name!r} has pattern {pattern!r}: {DYNAMIC_REASON}")
        shortest = max(shortest, band.min_length())
    if limit is not None and max_length is not None and max_length > limit:
        raise ValueError(
            f"max_length={max_length} exceeds the model's {limit} learned positions; extend them first "
            f"(sparseformer.hf.extend_positions(model, {max_length}))"
        )
    return shortest, limit if max_length is None else max_length


def dynamic_length_shapes(
    inputs: tuple[torch.Tensor, ...], seq_dim: int, seq_range: tuple[int, int | None]
) -> tuple[tuple[dict, ...], list[list[int | None]]]:
    """``torch.export`` dynamic shapes marking the sequence dims (``seq_dim`` of the first input,
    every dim of the others that has its length), and the shapes to record (None at those dims)."""
    shortest, longest = seq_range
    length = int(inputs[0].shape[seq_dim])
    if not (shortest <= length and (longest is None or length <= longest)):
        raise ValueError(
            f"the example length {length} must lie in the export's range [{shortest}, {longest}] "
            "(max_length, and the shortest length the patterns' global tokens allow)"
        )
    others = [n for d, n in enumerate(inputs[0].shape) if d != seq_dim]
    if length in others:
        raise ValueError(
            f"the example length {length} equals another dim of input 0 (shape {tuple(inputs[0].shape)}); "
            "use an example of another length so the sequence dim is unambiguous"
        )
    dim = torch.export.Dim("seq_len", min=shortest, max=longest)
    spec, shapes = [], []
    for i, t in enumerate(inputs):
        dims = [seq_dim] if i == 0 else [d for d, n in enumerate(t.shape) if n == length]
        spec.append({d: dim for d in dims} or None)
        shapes.append([None if d in dims else n for d, n in enumerate(t.shape)])
    return tuple(spec), shapes


@contextlib.contextmanager
def attention_backend(model: nn.Module, backend: str) -> Iterator[nn.Module]:
    """Run ``model``'s sparse attention on ``backend`` for the duration.

    Sets ``backend`` on modules that carry one (``SparseMultiheadAttention``), on the config of
    modules that carry it there (the causal LM's attention) and in the ``sparseformer`` entry of
    transformers configs (:func:`sparseformer.hf.config_entry`), then restores them.
    """
    saved: list[tuple[object, str, object]] = []
    try:
        for m in model.modules():
            if isinstance(getattr(m, "backend", None), str):
                saved.append((m, "backend", m.backend))
                m.backend = backend
            cfg = getattr(m, "cfg", None)
            if dataclasses.is_dataclass(cfg) and isinstance(getattr(cfg, "backend", None), str):
                saved.append((m, "cfg", cfg))
                m.cfg = dataclasses.replace(cfg, backend=backend)
            config = getattr(m, "config", None)
            entry = getattr(config, "sparseformer", None)
            if isinstance(entry, dict) and not any(c is config for c, _, _ in saved):
                saved.append((config, "sparseformer", entry))
                config.sparseformer = {**entry, "backend": backend}
        yield model
    finally:
        for m, name, value in reversed(saved):
            setattr(m, name, value)


def portable_backend(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Run ``model``'s sparse attention on the exportable ``gather`` backend for the duration."""
    return attention_backend(model, "gather")


def native_backend(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Run ``model``'s sparse attention on the native ``cpu`` kernel for the duration, for the
    ``custom_op=True`` exports: ValueError when the kernel is unavailable here or the model is not
    float32 (the custom-op libraries' dtype)."""
    from ..kernels import cpu

    if not cpu.is_available():
        raise ValueError(
            f"custom_op=True traces the model on the native cpu backend, which is unavailable here: "
            f"{cpu.unavailable_reason()}"
        )
    dtypes = sorted(str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32)
    if dtypes:
        raise ValueError(f"custom_op=True exports float32 attention only, got a model with parameters of {dtypes[0]}")
    return attention_backend(model, "cpu")


def check_path(path: object) -> Path:
    """``path`` as a Path whose folder exists (checked before any slow export work)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path's folder {str(path.parent)!r} does not exist")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is untouched: an interrupted
    export leaves no file.
    """
    from ..files import write_atomic

    path = check_path(path)
    write_atomic(path, lambda tmp: write(Path(tmp)))
    return path


def check_dtypes(expected: list[torch.dtype | None], inputs: tuple[torch.Tensor, ...]) -> None:
    """TypeError naming the first input whose dtype is not the exported one (None: not checked)."""
    for i, (want, t) in enumerate(zip(expected, inputs)):
        if want is not None and t.dtype != want:
            raise TypeError(f"input {i} must be {want} (as exported), got {t.dtype}")


def check_shapes(
    expected: list[list[int | None]], inputs: tuple, seq_dim: int, seq_range: tuple[int, int | None] | None = None
) -> None:
    """Refuse inputs of another shape than the export serves, naming the length.

    ``expected``: the traced shapes, ``None`` where a dim follows the sequence length (dynamic
    exports); ``seq_range``: the inclusive ``(shortest, longest or None)`` lengths of a dynamic
    export, None for a per-length one."""
    if len(inputs) != len(expected):
        raise ValueError(f"this export takes {len(expected)} input(s), got {len(inputs)}")
    for i, (want, t) in enumerate(zip(expected, inputs)):
        got = list(t.shape)
        if i == 0 and len(got) == len(want):
            n = got[seq_dim]
            if seq_range is not None and not (seq_range[0] <= n and (seq_range[1] is None or n <= seq_range[1])):
                longest = "" if seq_range[1] is None else f" to {seq_range[1]}"
                raise ValueError(
                    f"this export supports sequence lengths {seq_range[0]}{longest}, got {n} (input 0, dim {seq_dim})"
                )
            if seq_range is None and n != want[seq_dim]:
                raise ValueError(
                    f"this export supports sequence length {want[seq_dim]} only, got {n} "
                    f"(input 0, dim {seq_dim}): {LENGTH_REASON}"
                )
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = [("L" if w is None else w) for w in want]
            raise ValueError(f"input {i} must have shape {shown} (the traced shape; L the sequence length), got {got}")
