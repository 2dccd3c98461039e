"""The decode step of a transformers decoder as an ONNX graph or an ExecuTorch program, its KV
cache as explicit inputs and outputs, bounded on the sliding layers.

A model pretrained with local attention (Gemma 2/3, Mistral, Qwen2/3 with sliding layers,
Cohere2, OLMo 3, GPT-OSS) run by :func:`sparseformer.hf.sparsify` with no pattern, or a
full-attention decoder (Llama, Qwen, ...) under ``attn_implementation="sparseformer"``.
One call of the graph takes ``T`` new tokens per row (``T = 1``: a decode step; a fixed
``T = chunk > 1``: a prefill file, which reads a prompt ``T`` tokens per call):

* inputs ``input_ids`` int64 ``[B, T]``; ``attention_mask`` int64 ``[B, P + T]``, 1 = a real token,
  over every position so far and the new ones (as ``generate()`` keeps it); then, per layer ``i``,
  ``past_key_values.{i}.key`` and ``past_key_values.{i}.value`` ``[B, Hk, n_i, D]``: ``n_i = P`` on a
  full layer (the keys of positions ``0 .. P-1``), ``n_i = W - 1`` on a sliding layer of window ``W``
  (the keys of positions ``P-W+1 .. P-1``, oldest first; slots before position 0 are padding);
* outputs ``logits`` ``[B, 1, V]`` (the last new token's), then ``present.{i}.key`` /
  ``present.{i}.value``: ``[B, Hk, P + T, D]`` on a full layer, ``[B, Hk, W - 1, D]`` on a sliding
  one (the newest ``W - 1`` keys).

A new token sits at the position ``attention_mask.cumsum(-1) - 1`` gives it (the rotary position
``generate()`` gives it) and attends the keys of its layer's window (``|i - j| <= W - 1``, the
flash-attention convention of :func:`sparseformer.hf.native.flash_window`) that the mask marks
real, up to itself. A sliding layer's call costs ``O(T (W + T))`` whatever ``P``; its cache never
grows. :class:`OnnxDecoder` and :class:`ExecuTorchDecoder` run the files: greedy tokens, the
prompt fed through a prefill file or one token at a time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ._common import atomic_write, check_path

META_DECODE = "sparseformer.decode_step"


def _check_decoder(model: nn.Module) -> list[int | None]:
    """Per layer, the number of past keys its step reads: ``W - 1`` for a causal sliding window of
    ``W`` keys, None for a full causal layer (every past key); ValueError naming what the model
    must be otherwise."""
    from ..hf.attention import NAME, settings
    from ..hf.native import CAUSAL, native_spans
    from .hf import is_hf_model

    if not is_hf_model(model):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config.get_text_config(decoder=True)
    if config._attn_implementation != NAME:
        raise ValueError(
            "the decode-step export runs the model under sparseformer: call sfh.sparsify(model) first, got "
            f"attn_implementation={config._attn_implementation!r}"
        )
    entry = settings(config)
    if entry.pattern is not None:
        raise ValueError(
            "the decode-step export covers the model's own attention (sfh.sparsify(model) with no pattern), "
            f"got pattern={entry.pattern!r}"
        )
    capacities: list[int | None] = []
    for i, span in enumerate(native_spans(config)):
        if span is None or span == CAUSAL:
            capacities.append(None)
        elif span.lo == 0 and span.hi is not None:
            capacities.append(span.hi)
        else:
            raise ValueError(f"the decode-step export needs a causal decoder, but layer {i} attends {span}")
    windows = {c for c in capacities if c is not None}
    if len(windows) > 1:
        raise ValueError(
            f"the decode-step export needs one window for every sliding layer, got windows {sorted(windows)}"
        )
    return capacities


class DecodeStep(nn.Module):
    """``forward(input_ids [B, T], attention_mask [B, P + T], *past) -> (logits [B, 1, V], *present)``:
    one step of ``model`` over ``T = chunk`` new tokens (module docstring; the logits are the last
    new token's), ``past`` and ``present`` ordered key, value per layer. ``capacities[i]``: the past
    keys layer ``i`` holds, None for ``P``."""

    def __init__(self, model: nn.Module, chunk: int = 1) -> None:
        super().__init__()
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int (new tokens per call), got {chunk!r}")
        self.capacities = _check_decoder(model)
        self.chunk = chunk
        self.model = model
        self.train(model.training)
        config = model.config.get_text_config(decoder=True)
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.window_keys = next((c for c in self.capacities if c is not None), 0)  # W - 1, or 0: no sliding layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple:
        (b, t), s = input_ids.shape, self.window_keys
        # The mask builders read key padding at "positions" of one 2-D mask; shifted by s zeros, a full
        # layer's keys sit at s .. s+P+T-1 and a sliding layer's at P .. P+s+T-1, whatever P (see _Layer).
        keep = attention_mask.clone()
        keep[:, -1] = 1  # the last new token attends itself even when it is padding (its output is unused)
        shifted = torch.cat([keep.new_zeros(b, s), keep], dim=1)  # [B, s + P + T]
        position_ids = (attention_mask.cumsum(-1)[:, -t:] - 1).clamp(min=0)  # [B, T]
        cache = _cache_class()(
            [(past[2 * i], past[2 * i + 1], c) for i, c in enumerate(self.capacities)],
            past_length=attention_mask.shape[1] - t,
            shift=s,
        )
        out = self.model(
            input_ids=input_ids, attention_mask=shifted, position_ids=position_ids, cache=cache, use_cache=True,
            logits_to_keep=1, return_dict=True,
        )  # fmt: skip
        present = [t for layer in cache.layers for t in (layer.present_keys, layer.present_values)]
        return (out.logits, *present)

    def example_inputs(
        self, batch: int, past_length: int, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, ...]:
        """Zero caches and a mask of ones for ``batch`` rows after ``past_length`` tokens."""
        ids = torch.zeros(batch, self.chunk, dtype=torch.long)
        mask = torch.ones(batch, past_length + self.chunk, dtype=torch.long)
        past = []
        for c in self.capacities:
            n = past_length if c is None else c
            past += [torch.zeros(batch, self.kv_heads, n, self.head_dim, dtype=dtype) for _ in "kv"]  # distinct tensors
        return (ids, mask, *past)

    def names(self) -> tuple[list[str], list[str]]:
        """``(input names, output names)`` of the exported graph."""
        layers = range(len(self.capacities))
        kv = [(i, part) for i in layers for part in ("key", "value")]
        inputs = ["input_ids", "attention_mask", *(f"past_key_values.{i}.{p}" for i, p in kv)]
        return inputs, ["logits", *(f"present.{i}.{p}" for i, p in kv)]


@functools.cache
def _cache_class():
    """A transformers ``Cache`` over given past tensors, defined on first use so that importing
    this module does not import transformers."""
    from ..hf._deps import require

    cache_utils = require("transformers.cache_utils")

    class _Layer(cache_utils.CacheLayerMixin):
        """One layer's past keys and values ``[B, Hk, n, D]`` (``n = P`` full, ``W - 1`` sliding).

        The mask builders number key slots by the shifted positions of :meth:`DecodeStep.forward`'s
        mask: the queries at ``s + P .. s + P + T - 1``; a full layer's keys ``0 .. P + T - 1`` at
        ``s .. s + P + T - 1``; a sliding layer's ``s + T`` keys (``s = W - 1`` past and the ``T`` new
        ones) at ``P .. P + s + T - 1``, which are positions ``P - s .. P + T - 1``."""

        def __init__(self, keys, values, capacity: int | None, past_length, shift: int) -> None:
            super().__init__()
            self.keys, self.values = keys, values
            self.is_initialized = True
            self.is_sliding = capacity is not None
            self.past_length, self.shift = past_length, shift

        def lazy_initialization(self, key_states, value_states) -> None:
            raise RuntimeError("a decode-step cache layer starts initialised, with the past it is given")

        def update(self, key_states, value_states, *args, **kwargs):
            keys = torch.cat([self.keys, key_states], dim=-2)  # [B, Hk, n + T, D]
            values = torch.cat([self.values, value_states], dim=-2)
            self.present_keys, self.present_values = keys, values
            if self.is_sliding:  # the newest W - 1 (a full layer's slice would be a copy of the cache in ExecuTorch)
                start = keys.shape[-2] - self.keys.shape[-2]
                self.present_keys, self.present_values = keys[:, :, start:], values[:, :, start:]
            return keys, values

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            if self.is_sliding:
                return self.keys.shape[-2] + query_length, self.past_length
            return self.past_length + query_length, self.shift

        def get_seq_length(self) -> int:
            return self.past_length

        def get_max_length(self) -> int:
            return -1

    class _Cache(cache_utils.Cache):
        def __init__(self, layers, past_length, shift: int) -> None:
            super().__init__(layers=[_Layer(k, v, c, past_length, shift) for k, v, c in layers])
            self.query_offset = past_length + shift

        def get_query_offset(self, layer_idx: int = 0):
            return self.query_offset

    return _Cache


@contextlib.contextmanager
def _traced(model: nn.Module, path: str | os.PathLike, batch: int, chunk: int) -> Iterator[tuple[DecodeStep, tuple]]:
    """The step of ``model`` over ``chunk`` tokens and its example inputs (past length 7), in eval
    mode on the portable ``gather`` backend for the duration; ValueError / TypeError for a bad
    ``path``, ``batch`` or ``chunk``."""
    from ._common import portable_backend

    check_path(path)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    step = DecodeStep(model, chunk)
    inputs = step.example_inputs(batch, past_length=7, dtype=next(model.parameters()).dtype)
    training = model.training
    model.eval()
    try:
        with portable_backend(step), torch.no_grad():
            yield step, inputs
    finally:
        model.train(training)


def to_onnx_decode_step(
    model: nn.Module, path: str | os.PathLike, *, batch: int = 1, chunk: int = 1, opset_version: int = 18
) -> Path:
    """Export ``model``'s decode step (module docstring) over ``chunk`` new tokens per call to ONNX at
    ``path`` for ``batch`` rows and any past length ``P >= 1`` (start a sequence with one padding
    slot, as :class:`OnnxDecoder` does). A ``chunk > 1`` file is a prefill: it reads a prompt
    ``chunk`` tokens per call into the caches (``OnnxDecoder(step, prefill=file)``). The attention
    runs on the portable ``gather`` backend; the file records the layers' windows and ``chunk``."""
    with _traced(model, path, batch, chunk) as (step, inputs):
        past = torch.export.Dim("past", min=1)
        growing = tuple({2: past} if c is None else {} for c in step.capacities for _ in "kv")
        input_names, output_names = step.names()
        program = torch.onnx.export(
            step, inputs, dynamo=True, opset_version=opset_version, verbose=False,
            dynamic_shapes=(None, {1: past + chunk}, growing), input_names=input_names, output_names=output_names,
        )  # fmt: skip
    proto = program.model_proto
    meta = {
        "capacities": step.capacities, "kv_heads": step.kv_heads, "head_dim": step.head_dim, "batch": batch,
        "chunk": chunk,
    }  # fmt: skip
    proto.metadata_props.add(key=META_DECODE, value=json.dumps(meta))

    def write(tmp: Path) -> None:
        import onnx

        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def to_executorch_decode_step(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    batch: int = 1,
    chunk: int = 1,
    max_past: int = 4096,
    int8: bool = False,
) -> Path:
    """Export ``model``'s decode step (module docstring) over ``chunk`` new tokens per call to an
    ExecuTorch ``.pte`` (XNNPACK) at ``path`` for ``batch`` rows and past lengths
    ``1 <= P <= max_past``: ExecuTorch plans its memory for the longest, so the bound is part of the
    file (:class:`ExecuTorchDecoder` refuses longer sequences). A ``chunk > 1`` file is a prefill,
    as in :func:`to_onnx_decode_step`. The program's constant methods record the layers' windows,
    ``max_past`` and ``chunk``. ``int8``: the
    linear layers dynamically quantized to int8 (as :func:`~sparseformer.export.to_executorch_int8`;
    the caches and the attention stay in the model's dtype)."""
    from ..kernels.reference import bmm_products
    from .executorch import _lower

    if isinstance(max_past, bool) or not isinstance(max_past, int) or max_past < 2:
        raise ValueError(f"max_past must be an int >= 2, got {max_past!r}")
    if not isinstance(int8, bool):
        raise TypeError(f"int8 must be a bool, got {type(int8).__name__}")
    with _traced(model, path, batch, chunk) as (step, inputs):
        past = torch.export.Dim.AUTO(min=1, max=max_past)
        growing = tuple({2: past} if c is None else {} for c in step.capacities for _ in "kv")
        seen = torch.export.Dim.AUTO(min=1 + chunk, max=max_past + chunk)
        shapes = (None, {1: seen}, growing)
        with bmm_products():  # (ExecuTorch copies a 4-D matmul's operands: here, the caches)
            exported = torch.export.export(step, inputs, dynamic_shapes=shapes)
            if int8:
                from .quantize import quantize_linears

                graph = quantize_linears(exported.module(), inputs)
                exported = torch.export.export(graph, inputs, dynamic_shapes=(*shapes[:2], *growing))  # flat args
    constants = {
        "sparseformer_decode_capacities": [-1 if c is None else c for c in step.capacities],
        "sparseformer_decode_max_past": max_past,
        "sparseformer_decode_chunk": chunk,
    }
    buffer = _lower(exported, constants)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer))


class _StepDecoder:
    """Greedy generation with an exported decode step: subclasses set ``capacities`` (None for a
    full layer), ``kv_heads``, ``head_dim``, ``batch``, ``chunk`` (new tokens per call),
    ``max_past`` (None: unbounded) and ``step(*inputs) -> (logits, *present)``; ``prefill`` is
    None or a decoder of the same model whose file takes ``chunk > 1`` tokens per call."""

    capacities: list[int | None]
    kv_heads: int
    head_dim: int
    batch: int
    chunk: int
    max_past: int | None
    prefill: _StepDecoder | None = None

    def step(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _set_prefill(self, prefill: _StepDecoder, path: str | os.PathLike) -> None:
        """Read prompts through ``prefill`` (loaded from ``path``), after checking it fits this step."""
        mine = (self.capacities, self.kv_heads, self.head_dim, self.batch)
        theirs = (prefill.capacities, prefill.kv_heads, prefill.head_dim, prefill.batch)
        if self.chunk != 1 or prefill.chunk < 2 or mine != theirs:
            raise ValueError(
                f"prefill {str(path)!r} must be a chunk > 1 export of the same model and batch as a chunk 1 step: "
                f"(capacities, kv_heads, head_dim, batch) {theirs} chunk {prefill.chunk} against {mine} chunk "
                f"{self.chunk}"
            )
        self.prefill = prefill

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The prompt ``input_ids`` ``[B, L]`` (left padding marked 0 in ``attention_mask``) followed
        by ``max_new_tokens >= 1`` greedy tokens: ``[B, L + max_new_tokens]``. After one padding
        slot (the export's past length is at least 1) the prompt goes through the prefill file
        ``C`` tokens per call, left-padded to a multiple of ``C`` (without a prefill, ``C = 1``), then
        each new token through the step."""
        b = self.batch
        if (
            input_ids.dim() != 2
            or input_ids.shape[0] != b
            or input_ids.shape[1] < 1
            or attention_mask.shape != input_ids.shape
        ):
            raise ValueError(
                f"this export takes {b} rows: input_ids and attention_mask [{b}, L >= 1], got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        first = self if self.prefill is None else self.prefill
        pad = -input_ids.shape[1] % first.chunk
        ids = torch.cat([input_ids.new_zeros(b, pad), input_ids], dim=1)  # [B, pad + L]
        real = torch.cat([attention_mask.new_zeros(b, pad), attention_mask], dim=1).long()
        for decoder, longest in ((first, ids.shape[1] + 1 - first.chunk), (self, ids.shape[1] + max_new_tokens - 1)):
            if decoder.max_past is not None and longest > decoder.max_past:
                raise ValueError(
                    f"this export serves past lengths up to {decoder.max_past} (max_past); a prompt of "
                    f"{input_ids.shape[1]}{f' (+{pad} padding)' if pad else ''} and {max_new_tokens} new tokens "
                    f"need {longest}"
                )
        past = []
        for c in self.capacities:
            shape = (b, self.kv_heads, 1 if c is None else c, self.head_dim)
            past += [torch.zeros(shape), torch.zeros(shape)]
        mask = torch.zeros(b, 1, dtype=torch.long)  # the padding slot
        for i in range(0, ids.shape[1], first.chunk):
            mask = torch.cat([mask, real[:, i : i + first.chunk]], dim=1)
            logits, *past = first.step(ids[:, i : i + first.chunk], mask, *past)
        tokens = input_ids
        for t in range(max_new_tokens):
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            if t < max_new_tokens - 1:
                mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
                logits, *past = self.step(tokens[:, -1:], mask, *past)
        return tokens


class OnnxDecoder(_StepDecoder):
    """Greedy generation with a file of :func:`to_onnx_decode_step` in ONNX Runtime; ``prefill``:
    a ``chunk > 1`` file of the same model that reads the prompt."""

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, prefill: str | os.PathLike | None = None
    ) -> None:
        from .onnx import OnnxRunner, read_metadata

        meta = read_metadata(path).get(META_DECODE)
        if meta is None:
            raise ValueError(f"{str(path)!r} is not a decode-step export (no {META_DECODE} metadata)")
        meta = json.loads(meta)
        self.capacities, self.kv_heads, self.head_dim = meta["capacities"], meta["kv_heads"], meta["head_dim"]
        self.batch, self.chunk, self.max_past = meta["batch"], meta["chunk"], None
        self.runner = OnnxRunner(path, threads=threads)
        if prefill is not None:
            self._set_prefill(OnnxDecoder(prefill, threads), prefill)

    def step(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.runner(*inputs)


class ExecuTorchDecoder(_StepDecoder):
    """Greedy generation with a ``.pte`` of :func:`to_executorch_decode_step` in
    ``executorch.runtime``; ``prefill``: a ``chunk > 1`` ``.pte`` of the same model."""

    def __init__(self, path: str | os.PathLike, prefill: str | os.PathLike | None = None) -> None:
        from .executorch import ExecuTorchRunner

        runner = ExecuTorchRunner(path)
        if "sparseformer_decode_capacities" not in runner.program.method_names:
            raise ValueError(f"{str(path)!r} is not a decode-step export (no sparseformer_decode_capacities method)")
        capacities = runner.constant("sparseformer_decode_capacities")
        self.capacities = [None if c < 0 else int(c) for c in capacities]
        self.max_past = int(runner.constant("sparseformer_decode_max_past")[0])
        self.chunk = int(runner.constant("sparseformer_decode_chunk")[0])
        self.batch, self.kv_heads, _, self.head_dim = runner.input_shapes[2]
        self.method = runner.method
        self._dtypes = runner.input_dtypes
        # the inputs' shapes, None where the past length P goes: the mask's [B, P + T], a full layer's caches
        self._shapes = [list(shape) for shape in runner.input_shapes]
        self._shapes[1][1] = None
        for i, c in enumerate(self.capacities):
            if c is None:
                self._shapes[2 + 2 * i][2] = self._shapes[3 + 2 * i][2] = None
        self._storage: list[torch.Tensor] = []  # per output, the flat tensor step() copies it into
        if prefill is not None:
            self._set_prefill(ExecuTorchDecoder(prefill), prefill)

    def step(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One call of the program. The outputs are views of tensors this decoder owns, which its
        next call overwrites (feed them to that call, or copy them). ``Method.execute`` would clone
        every output into a fresh tensor; at 32k past keys that is about 200 MiB of new pages per
        step. Here the runtime's outputs are read without a
        clone and copied into storage that only grows (by doubling). Inputs of another count,
        dtype or shape, a past longer than ``max_past`` and a mask of other values than 0 and 1 are
        refused (TypeError / ValueError) before the program runs."""
        self._check(inputs)
        outs = self.method._method([t.contiguous() for t in inputs], clone_outputs=False)  # (runtime's memory)
        kept = []
        for i, out in enumerate(outs):
            if i == len(self._storage):
                self._storage.append(torch.empty(0, dtype=out.dtype))
            if self._storage[i].numel() < out.numel():
                self._storage[i] = torch.empty(max(out.numel(), 2 * self._storage[i].numel()), dtype=out.dtype)
            kept.append(self._storage[i][: out.numel()].view(out.shape).copy_(out))
        return tuple(kept)

    def _check(self, inputs: tuple) -> None:
        from ._common import check_dtypes, check_inputs
        from .hf import check_mask

        if len(inputs) != len(self._shapes):
            raise ValueError(
                f"this step takes {len(self._shapes)} inputs (input_ids, attention_mask, then the key and the value "
                f"of each layer), got {len(inputs)}"
            )
        check_dtypes(self._dtypes, check_inputs(inputs))
        for i, (t, shape) in enumerate(zip(inputs, self._shapes)):
            if t.dim() != len(shape) or any(w is not None and w != n for w, n in zip(shape, t.shape)):
                shown = ["P" if w is None else w for w in shape]
                raise ValueError(f"input {i} must have shape {shown} (P: the past length), got {list(t.shape)}")
        past = inputs[1].shape[1] - self.chunk
        if not 1 <= past <= self.max_past:
            raise ValueError(f"this export serves past lengths 1 to {self.max_past} (max_past), got {past}")
        for i, c in enumerate(self.capacities):
            if c is None and inputs[2 + 2 * i].shape[2] != past:
                raise ValueError(
                    f"layer {i}'s cache must hold the P = {past} past keys the mask covers, got {inputs[2 + 2 * i].shape[2]}"
                )
        check_mask(inputs[1])
