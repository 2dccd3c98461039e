"""A bounded KV cache for ``generate()`` with a full-attention transformers decoder sparsified with
the streaming pattern ``P.SlidingWindow(W, right=0) | P.Global(tokens=S)`` (StreamingLLM: ``S``
attention sinks and a causal window; ``S = 0``: the window alone).

>>> model = sfh.sparsify(llama, P.SlidingWindow(W, right=0) | P.Global(tokens=S), block_size=64)
>>> out = model.generate(ids, attention_mask=mask, past_key_values=sfh.streaming_cache(model), ...)

The query at (padded) position ``t`` attends the keys ``j`` with ``j < S`` or ``t - W <= j <= t``
(:mod:`sparseformer.cache` gives the same definition), so a key ``j`` with ``S <= j < t - W`` is
never attended again once the query ``t`` has run: the cache evicts it and the tokens are exactly
those of ``generate()`` with transformers' ``DynamicCache`` on the same sparsified model.

Per layer, between steps, the cache holds the positions ``0 .. A-1`` and the last ``W`` positions,
``A + W`` keys whatever the length, with ``A = max(S, p)``, ``p`` the longest left padding of the
prompt (``A = S`` without padding); a step sees those and its own keys (``A + W + 1`` for one new
token). Keys are stored after the rotary embedding, in position order.

How the mask stays exact. transformers' mask builder describes the keys a layer receives by one
offset: key ``j`` at position ``kv_offset + j``, its padding read from the 2-D ``attention_mask`` at
that position. Once keys are evicted they are not contiguous, so the cache numbers them by *slot*:
slot ``s < A`` is position ``s``; slot ``s >= A`` is position ``s + D``, ``D`` the number of evicted
keys, and the queries sit at slots ``seen - D ..`` (:meth:`query_offset`), ``kv_offset = 0``. In
slot numbers the pattern keeps exactly the pairs it keeps in positions: distances between the window
and the queries are unchanged, the sinks are the same slots, and the slots ``S .. A-1`` lie more
than ``W`` before every query. The padding read at slot ``s`` is that of position ``s``: exact for
``s < A``, and for ``s >= A`` both position ``s`` and position ``s + D`` are real tokens, because
``A`` covers the left padding of every row.

Left padding. The sinks are the positions ``0 .. S-1`` of the padded batch, as ``Global(tokens=S)``
means on a padded input under any cache: a row whose first tokens are padding attends only its
real tokens among them (none if it has ``S`` padding tokens or more), exactly as with
``DynamicCache``. The cache reads each row's padding from the ``position_ids`` the first forward
passes to the layers, as ``generate()`` makes them from the ``attention_mask``
(``cumsum - 1``, padding at 0); position ids of any other form raise ValueError. Only the prompt
may be padded, on the left.
"""

from __future__ import annotations

import functools

import torch

from ..cache import SinkWindowSpec, sink_window_spec
from .attention import NAME, settings
from .native import CAUSAL, native_spans


def streaming_cache(model):
    """An empty bounded cache (a transformers ``Cache``) for ``model.generate(...,
    past_key_values=...)`` (or ``cache=...``), one layer per decoder layer.

    ``model`` must be a full-attention decoder (Llama, Qwen2/3 and Mistral without sliding
    window, GPT-2, ...) sparsified on every layer with ``P.SlidingWindow(W, right=0)`` or
    ``P.SlidingWindow(W, right=0) | P.Global(tokens=S)`` (token units); anything else raises
    ValueError naming what was expected. A model whose own attention is sliding keeps a different
    window per layer: use transformers' ``DynamicCache(config=model.config)``, which bounds those
    layers already."""
    from ._deps import require

    transformers = require("transformers")
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config.get_text_config(decoder=True)
    expected = "sfh.sparsify(model, P.SlidingWindow(W, right=0) | P.Global(tokens=S))"
    if config._attn_implementation != NAME:
        raise ValueError(
            f"a streaming cache needs a model sparsified with {expected}, "
            f"got attn_implementation={config._attn_implementation!r}"
        )
    entry = settings(config)
    if entry.pattern is None or entry.layers is not None:
        raise ValueError(
            f"a streaming cache needs the sink + window pattern on every layer ({expected}), got "
            f"pattern={entry.pattern!r}, layers={None if entry.layers is None else list(entry.layers)}"
        )
    spec = sink_window_spec(entry.pattern)
    local = {i: str(s) for i, s in enumerate(native_spans(config)) if s not in (None, CAUSAL)}
    if local:
        raise ValueError(
            f"a streaming cache needs a model whose own attention is full and causal on every layer, but "
            f"{config.model_type} attends {local} (layer: pairs); its sliding layers keep their own windows: "
            "use transformers' DynamicCache(config=model.config)"
        )
    _, cache_class = _classes()
    return cache_class(spec, config.num_hidden_layers)


def left_padding(position_ids: torch.Tensor | None, length: int) -> int:
    """The longest left padding of a prompt of ``length`` tokens whose ``position_ids`` (int
    ``[B or 1, length]``) are as ``generate()`` makes them: ``0`` on the ``p`` padding tokens of a
    row, then ``0, 1, ..``; ValueError for anything else (no position ids, right padding, an
    offset)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] != length:
        raise ValueError(
            f"a streaming cache reads the prompt's left padding from position_ids [batch, {length}], got "
            f"{None if position_ids is None else tuple(position_ids.shape)}"
        )
    steps = torch.arange(length, device=position_ids.device)
    pads = (length - 1) - position_ids[:, -1:]  # [B, 1]
    bad = ((position_ids != (steps - pads).clamp(min=0)).any(1) | (pads[:, 0] < 0)).nonzero()  # [rows, 1]
    if len(bad):
        row = int(bad[0, 0])
        raise ValueError(
            "a streaming cache needs the prompt left-padded, with position_ids as generate() makes them "
            f"(attention_mask.cumsum(-1) - 1, padding at 0), got row {row}: {position_ids[row, :32].tolist()}"
        )
    return int(pads.max())


@functools.cache
def _classes():
    """``(StreamingLayer, StreamingCache)``, defined on first use so that importing this module
    does not import transformers."""
    from ._deps import require

    cache_utils = require("transformers.cache_utils")

    class StreamingLayer(cache_utils.DynamicLayer):
        """One layer: ``keys``/``values`` ``[B, Hk, A + min(W, seen - A), D]`` (positions
        ``0 .. A-1`` and the last ``W``), ``cumulative_length`` = tokens seen."""

        is_croppable = False

        def __init__(self, spec: SinkWindowSpec) -> None:
            super().__init__()
            self.spec = spec
            self.cumulative_length = 0
            self.kept = spec.sinks  # A; set from the prompt's padding on the first update

        def update(self, key_states, value_states, *args, **kwargs):
            """Append ``key_states``/``value_states`` ``[B, Hk, q, D]``; returns every key the
            new queries attend or that lines up the padding (kept ++ new), then evicts."""
            q = key_states.shape[-2]
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                position_ids = (kwargs.get("kwargs") or {}).get("position_ids")
                self.kept = max(self.spec.sinks, left_padding(position_ids, q))
            keys = torch.cat([self.keys, key_states], dim=-2)  # [B, Hk, n + q, D]
            values = torch.cat([self.values, value_states], dim=-2)
            self.cumulative_length += q
            n, a, w = keys.shape[-2], self.kept, self.spec.window
            if n > a + w:  # evict positions before the window of the next query
                self.keys = torch.cat([keys[..., :a, :], keys[..., n - w :, :]], dim=-2)  # [B, Hk, A + W, D]
                self.values = torch.cat([values[..., :a, :], values[..., n - w :, :]], dim=-2)
            else:
                self.keys, self.values = keys, values
            return keys, values

        def query_offset(self) -> int:
            """The slot of the next query: the number of keys held."""
            return self.keys.shape[-2] if self.is_initialized else 0

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            """``(kv_length, kv_offset)`` in slot numbers (module docstring)."""
            return self.query_offset() + query_length, 0

        def get_seq_length(self) -> int:
            return self.cumulative_length

        def get_max_length(self) -> int:
            return -1

        def crop(self, tokens_to_remove: int) -> None:
            raise ValueError("a streaming cache cannot be cropped: it has evicted the keys a rollback would need")

    class StreamingCache(cache_utils.Cache):
        """A transformers ``Cache`` of :class:`StreamingLayer` (see :func:`streaming_cache`)."""

        def __init__(self, spec: SinkWindowSpec, num_layers: int) -> None:
            super().__init__(layers=[StreamingLayer(spec) for _ in range(num_layers)])
            self.spec = spec

        def get_query_offset(self, layer_idx: int = 0) -> int:
            return self.layers[layer_idx].query_offset()

        @property
        def nbytes(self) -> int:
            """Bytes of the keys and values held now."""
            return sum(t.nbytes for layer in self.layers if layer.is_initialized for t in (layer.keys, layer.values))

    return StreamingLayer, StreamingCache
