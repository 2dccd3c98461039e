"""Hugging Face transformers models in the exporters.

``to_onnx``, ``to_executorch`` and ``to_executorch_int8`` take a transformers ``PreTrainedModel``
(stock, sparsified with :func:`sparseformer.hf.sparsify`, or loaded with
:func:`sparseformer.hf.load_distilled`) with the tokenizer's inputs: the exported program's
inputs are ``input_ids`` and ``attention_mask`` (int64 ``[B, L]``, 1 = real token, 0 = padding,
left or right), its output the model's main tensor (:class:`TokenModel`). The padding mask is a
graph input, read at run time: one file serves every padding of its shape. Other inputs
(``token_type_ids``: all zeros, one segment; ``position_ids``: from the model's defaults) are not
exported.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import nn

#: The exported program's input names, in order.
INPUT_NAMES = ("input_ids", "attention_mask")


def is_hf_model(model: object) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (without importing transformers)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


class TokenModel(nn.Module):
    """``forward(input_ids [B, L], attention_mask [B, L])``: the model's ``logits`` if it returns
    them (``[B, L, V]`` for a language-model head), else its ``last_hidden_state`` ``[B, L, E]``;
    one full forward, no KV cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # the exporters restore this mode on the way out
        self.output_name: str | None = None  # "logits" or "last_hidden_state", known after a forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"use_cache": False} if getattr(self.model.config, "use_cache", None) is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        self.output_name = "logits" if "logits" in out else "last_hidden_state"
        return out[self.output_name]


def token_inputs(example_inputs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` from what a tokenizer returns (a mapping with those keys,
    e.g. ``tokenizer(texts, return_tensors="pt", padding=True)``) or from such a pair; both int64
    ``[B, L]`` of one shape, the mask of 0s and 1s. TypeError / ValueError naming what is wrong."""
    if isinstance(example_inputs, Mapping):
        missing = [k for k in INPUT_NAMES if k not in example_inputs]
        if missing:
            raise ValueError(f"example_inputs of a transformers model must hold {INPUT_NAMES}, missing {missing}")
        example_inputs = tuple(example_inputs[k] for k in INPUT_NAMES)
    if not isinstance(example_inputs, (tuple, list)) or len(example_inputs) != 2:
        raise TypeError(
            "example_inputs of a transformers model must be the tokenizer's output (a mapping with input_ids and "
            f"attention_mask) or the pair (input_ids, attention_mask), got {type(example_inputs).__name__}"
        )
    for name, t in zip(INPUT_NAMES, example_inputs):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 2:
            got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be an int64 tensor [B, L], got {got}")
    ids, mask = example_inputs
    if ids.shape != mask.shape:
        raise ValueError(f"attention_mask must have input_ids' shape {tuple(ids.shape)}, got {tuple(mask.shape)}")
    check_mask(mask)
    return ids, mask


def check_mask(mask) -> None:
    """ValueError unless the ``attention_mask`` (a tensor or an array) holds 0s and 1s only."""
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold 0 (padding) and 1 (real token) only")


def ordered_inputs(input_names: list[str], inputs: tuple, named: Mapping[str, object]) -> tuple:
    """A runner's inputs in the export's order, from ``runner(*inputs)`` or ``runner(**named)``
    (e.g. ``runner(**tokenizer(texts, return_tensors="pt", padding=True))``). A tokenizer's
    ``token_type_ids``, which a transformers export does not take (one segment), may come along if
    it is all zeros; ValueError for any other mix or name."""
    if not named:
        return inputs
    named = dict(named)
    segments = named.pop("token_type_ids", None) if "attention_mask" in input_names else None
    if inputs or set(named) != set(input_names):
        raise ValueError(
            f"pass the inputs either positionally or all by name {input_names}, got {len(inputs)} positional and "
            f"names {sorted(named)}"
        )
    if segments is not None and bool((torch.as_tensor(segments) != 0).any()):
        raise ValueError("token_type_ids must be all 0: a transformers export takes one segment (it has no such input)")
    return tuple(named[name] for name in input_names)


def layer_patterns(model: nn.Module) -> list[tuple[str, object, int, int]]:
    """``(layer name, pattern, block size, heads)`` of every self-attention layer of a transformers
    model run by sparseformer (``attn_implementation="sparseformer"``): the model's own window
    (:func:`~sparseformer.hf.native_spans`; ``P.Dense()`` on full layers) restricted to the
    ``config.sparseformer`` pattern of that layer; empty for another attention implementation."""
    from ..hf.attention import NAME, layer_pattern, settings
    from ..hf.native import native_spans

    config = model.config.get_text_config()
    if config._attn_implementation != NAME:
        return []
    entry = settings(config)
    heads = config.num_attention_heads
    out = []
    for i, span in enumerate(native_spans(config)):
        pattern = layer_pattern(span, entry.pattern_of(i))
        out.append((f"layer {i}", pattern, entry.block_size, heads))
    return out


def position_limit(model: nn.Module) -> int | None:
    """The longest input a transformers model's learned absolute position tables serve (the
    smallest table's rows, less the rows up to its ``padding_idx``, which RoBERTa-style tables keep
    before the first position); None for a model without one (rotary or relative positions)."""
    from ..hf.positions import learned_position_tables

    limits = [
        emb.num_embeddings - (0 if emb.padding_idx is None else emb.padding_idx + 1)
        for _, _, emb in learned_position_tables(model)
    ]
    return min(limits, default=None)
