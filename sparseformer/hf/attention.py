"""The ``"sparseformer"`` attention implementation for Hugging Face transformers (5.x).

:func:`register` adds :func:`sparseformer_attention` to transformers' ``AttentionInterface`` and
:func:`~.masks.sparseformer_mask` to its ``AttentionMaskInterface``. A model whose
``config._attn_implementation == "sparseformer"`` then builds compact masks
(:class:`~.masks.MaskInfo`: which distances attend, query offset, key padding; never L x L) and
calls :func:`sparseformer_attention` in every attention layer, which computes the layer's own
attention (:mod:`.native`: causal or not, sliding window or not), restricted to the pattern of
``config.sparseformer`` if it names one (see :func:`config_entry`), with
:func:`sparseformer.sparse_attention`.
"""

from __future__ import annotations

import copy
import json
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import patterns as P
from ..attention import BACKENDS, pattern_attention, sparse_attention
from ..kernels.reference import masked_attention
from .masks import MaskInfo, sparseformer_mask
from .native import BIDIRECTIONAL, CAUSAL, Span, flash_window, native_spans
from .spec import from_spec, to_spec

NAME = "sparseformer"
_REFUSED = ("position_bias", "cu_seq_lens_q", "cu_seq_lens_k")


def config_entry(
    pattern: P.Pattern | None = None,
    *,
    block_size: int = 64,
    backend: str = "auto",
    layers: tuple[int, ...] | None = None,
) -> dict:
    """The JSON-able dict to put at ``config.sparseformer``: ``{"pattern": spec or None,
    "block_size": int, "backend": str, "layers": list of int or None}``.

    Every layer computes the model's own attention (:func:`~.native.native_spans`: its causal or
    bidirectional mask, its sliding window if it has one) exactly. With a ``pattern``, the layers
    whose ``layer_idx`` is in ``layers`` (every layer when ``layers`` is None) keep only the pairs
    that the pattern also keeps (``pattern & P.SlidingWindow(...)`` on a sliding layer, the pattern
    compiled with ``causal=True`` on a causal one). The pattern's positions are token indices of the
    (padded) input. ``layers`` needs a pattern."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or not layers or any(_not_index(i) for i in layers):
            raise ValueError(f"layers must be None or a non-empty list of layer indices >= 0, got {layers!r}")
        if pattern is None:
            raise ValueError(
                f"layers={list(layers)} needs a pattern (without one every layer runs the model's own attention)"
            )
        layers = sorted(set(layers))
    spec = None if pattern is None else to_spec(pattern)
    return {"pattern": spec, "block_size": block_size, "backend": backend, "layers": layers}


def _not_index(i) -> bool:
    return isinstance(i, bool) or not isinstance(i, int) or i < 0


class Settings(NamedTuple):
    """What ``config.sparseformer`` holds (see :func:`config_entry`)."""

    pattern: P.Pattern | None  # None: the model's own attention only
    block_size: int
    backend: str
    layers: tuple[int, ...] | None  # None: every layer uses the pattern

    def pattern_of(self, layer: int | None) -> P.Pattern:
        """The pattern attention layer ``layer`` (its ``layer_idx``) restricts its own attention
        to: ``P.Dense()`` (no restriction) without a pattern or outside ``layers``."""
        if self.pattern is None:
            return P.Dense()
        if self.layers is None:
            return self.pattern
        if layer is None:
            raise ValueError(
                f"config.{NAME} names sparse layers {list(self.layers)}, but this attention module has no layer_idx"
            )
        return self.pattern if layer in self.layers else P.Dense()

    def density(self, length: int, num_heads: int, num_layers: int) -> float:
        """Attending (query, key) pairs of the pattern (not of the model's own windows) over all
        pairs, averaged over ``num_layers`` layers of self-attention at ``length`` tokens (a layer
        without a pattern counts 1)."""
        per = [
            self.pattern_of(i).compile(q_len=length, num_heads=num_heads, block_size=self.block_size).density
            for i in range(num_layers)
        ]
        return sum(per) / num_layers


def _parse(entry: dict) -> Settings:
    entry = json.loads(json.dumps(entry))  # what a saved and reloaded config would hold
    layers = entry.get("layers")
    spec = entry.get("pattern")
    return Settings(
        None if spec is None else from_spec(spec),
        int(entry.get("block_size", 64)),
        entry.get("backend", "auto"),
        None if layers is None else tuple(int(i) for i in layers),
    )


_DEFAULT = _parse(config_entry())
_PARSED: dict[int, tuple[dict, Settings]] = {}  # id(entry) -> (a copy of that entry, its Settings)
_PARSED_MAX = 64


def settings(config) -> Settings:
    """:class:`Settings` from ``config.sparseformer``; without that entry, the model's own
    attention with the defaults of :func:`config_entry`.

    Every attention layer asks at every call, so an entry is parsed once and its Settings kept
    while the entry still equals the copy taken then (a changed or replaced entry is parsed anew)."""
    entry = getattr(config, NAME, None)
    if entry is None:
        return _DEFAULT
    seen = _PARSED.get(id(entry))
    if seen is not None and seen[0] == entry:
        return seen[1]
    if not isinstance(entry, dict) or "pattern" not in entry:
        raise ValueError(f"config.{NAME} must be a dict made by sparseformer.hf.config_entry(...), got {entry!r}")
    out = _parse(entry)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[id(entry)] = (copy.deepcopy(entry), out)
    return out


def layer_span(
    module: torch.nn.Module, mask: MaskInfo | None, sliding_window: int | None, is_causal: bool | None
) -> Span:
    """The :class:`~.native.Span` attention layer ``module`` computes, after checking that the
    model's mask (``mask``, see :mod:`.masks`), its config (:func:`~.native.native_spans` at
    ``module.layer_idx``) and the ``sliding_window`` keyword the layer passed agree; ValueError
    naming the layer when they do not. Without a mask, the config decides; for a family whose
    config does not say (full attention), ``is_causal`` / ``module.is_causal`` does."""
    spans = native_spans(module.config) if mask is None else _mask_spans(mask, module.config)
    layer = getattr(module, "layer_idx", None)
    if layer is not None:
        expected = spans[layer]
    elif len(set(spans)) == 1:
        expected = spans[0]
    else:
        raise ValueError(f"{type(module).__name__} has no layer_idx, but the layers of this model attend differently")
    if mask is not None:
        span = mask.span
    elif expected is not None:
        span = expected
    else:
        span = (
            CAUSAL
            if bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
            else BIDIRECTIONAL
        )
    if expected is not None and span != expected:
        raise ValueError(f"layer {layer}: the model's mask attends {span}, but its config says {expected}")
    if expected is None and span not in (CAUSAL, BIDIRECTIONAL):
        raise ValueError(f"layer {layer}: the model's mask attends {span}, but its config names no local attention")
    if sliding_window is not None and flash_window(sliding_window, span.causal) != span:
        raise ValueError(
            f"layer {layer}: sliding_window={sliding_window!r} means {flash_window(sliding_window, span.causal)}, "
            f"but the model's mask attends {span}"
        )
    return span


def layer_pattern(span: Span | None, user: P.Pattern) -> P.Pattern:
    """The pattern a layer whose own attention is ``span`` (None: full attention) computes under the
    user's pattern ``user`` (:meth:`Settings.pattern_of`): the span's window
    (:meth:`~.native.Span.pattern`; ``P.Dense()`` for full attention) intersected with ``user``,
    the other one alone where one of them is ``P.Dense()``. Compiled with ``causal=span.causal``
    it keeps exactly the pairs of the span that ``user`` keeps."""
    window = P.Dense() if span is None else span.pattern()[0]
    return user if isinstance(window, P.Dense) else window if isinstance(user, P.Dense) else user & window


_SPANS: weakref.WeakKeyDictionary[MaskInfo, tuple[object, tuple[Span | None, ...]]] = weakref.WeakKeyDictionary()


def _mask_spans(mask: MaskInfo, config) -> tuple[Span | None, ...]:
    """``native_spans(config)``, read once per (mask, config): a mask serves every layer of its
    kind in one forward call, so its layers need not read the config each."""
    seen = _SPANS.get(mask)
    if seen is None or seen[0] is not config:
        seen = (config, native_spans(config))
        _SPANS[mask] = seen
    return seen[1]


def _sees_every_key(span: Span, q_offset: int, kv_length: int) -> bool:
    """Whether the query at position ``q_offset`` attends every key ``0 <= j < kv_length``:
    ``lo <= q_offset - j <= hi`` for ``j = kv_length - 1`` and ``j = 0`` (None bounds: unbounded)."""
    return (span.lo is None or span.lo <= q_offset - (kv_length - 1)) and (span.hi is None or q_offset <= span.hi)


def _span_keep(span: Span, lq: int, lk: int, q_offset: int, device: torch.device) -> torch.Tensor:  # bool [Lq, Lk]
    """Which pairs ``span`` keeps when query ``i`` sits at position ``i + q_offset`` and key ``j``
    at ``j``: ``lo <= i + q_offset - j <= hi`` (None bounds: unbounded)."""
    d = torch.arange(lq, device=device)[:, None] + q_offset - torch.arange(lk, device=device)[None, :]  # [Lq, Lk]
    keep = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if span.lo is not None:
        keep = keep & (d >= span.lo)
    if span.hi is not None:
        keep = keep & (d <= span.hi)
    return keep


def _cached_step(
    query: torch.Tensor,  # [B, H, Lq, D]
    key: torch.Tensor,  # [B, Hk, Lk, D]
    value: torch.Tensor,  # [B, Hk, Lk, Dv]
    span: Span,
    q_offset: int,
    mask: MaskInfo | None,
    dropout: float,
    scaling: float | None,
    softcap: float | None,
    sinks: torch.Tensor | None,
) -> torch.Tensor:  # [B, Lq, H, Dv]
    """Queries after a cache (query ``i`` at position ``i + q_offset``) attending the keys they are
    given within ``span`` but those ``mask`` marks padding, densely over the ``[Lq, Lk]`` pairs.

    One query that attends every key (``span`` holds them all) runs
    ``F.scaled_dot_product_attention`` when nothing is padding (read once per mask in eager mode;
    a traced graph keeps the padding) and there is no ``softcap`` or ``sinks``; anything else runs
    :func:`~sparseformer.kernels.reference.masked_attention` (a query with no real key gives 0)."""
    lq, lk = query.shape[2], key.shape[2]
    padding = None if mask is None else mask.key_padding  # bool [B, Lk]
    if padding is not None and not torch.compiler.is_compiling() and mask.every_key:
        padding = None
    every = lq == 1 and _sees_every_key(span, q_offset, lk)
    if every and padding is None and softcap is None and sinks is None:
        out = F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
        )  # [B, H, 1, Dv]
    else:
        if every:
            keep = torch.ones(1, lk, dtype=torch.bool, device=query.device)  # [1, Lk]
        else:
            keep = _span_keep(span, lq, lk, q_offset, query.device)  # [Lq, Lk]
        scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
        out = masked_attention(
            query, key, value, keep, key_padding_mask=padding, scale=scale, dropout_p=dropout, softcap=softcap,
            sinks=sinks,
        )  # fmt: skip
    return out.transpose(1, 2).contiguous()


def sparseformer_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, Lq, D]
    key: torch.Tensor,  # [B, Hk, Lk, D]
    value: torch.Tensor,  # [B, Hk, Lk, Dv]
    attention_mask: MaskInfo | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: returns ``([B, Lq, H, Dv], None)``.

    The layer computes the pairs of its :func:`layer_span` (the model's own attention: causal or
    not, a sliding window or not), restricted to ``config.sparseformer``'s pattern on the layers
    it names (see :func:`config_entry`): ``pattern & P.SlidingWindow(...)`` on a sliding layer.
    Query ``i`` sits at key position ``i + mask.q_offset`` (``Lk - Lq`` without a mask: the last
    ``Lq`` positions, as with a KV cache); keys marked padding in the mask are left out. Also
    honoured: ``scaling`` (None = ``1/sqrt(D)``), ``dropout``, ``softcap`` (Gemma 2: scores
    ``c * tanh(s / c)``), ``s_aux`` (GPT-OSS sinks: one logit per head in the softmax
    denominator), grouped-query heads. ``position_bias``, ``cu_seq_lens_q/k`` and a 4-D tensor
    mask raise ValueError.

    With no user pattern, queries after a cache run :func:`_cached_step` (dense over the pairs
    they are given, masked by the span) when a layout would not serve: a decode step whose one
    query attends every key it is given (a full layer, or a sliding layer whose cache holds only
    the window), with less overhead per call than a layout; or a traced graph whose cache length
    is symbolic (a chunk of queries after a full layer's cache in an exported decode step), where
    no layout can be compiled. Self-attention without a cache (``Lq == Lk``, offset 0) runs
    :func:`sparseformer.pattern_attention` with :func:`layer_pattern`; anything else a layout of
    that pattern at the queries' offset.
    """
    for name in _REFUSED:
        if kwargs.get(name) is not None:
            raise ValueError(f"attn_implementation='{NAME}' does not support {name}=...; use 'sdpa' or 'eager'")
    if attention_mask is not None and not isinstance(attention_mask, MaskInfo):
        raise ValueError(
            f"attn_implementation='{NAME}' takes the 2-D padding mask (attention_mask=[B, L] of 0/1), got a "
            f"{type(attention_mask).__name__} of shape {tuple(getattr(attention_mask, 'shape', ()))}; a custom "
            "4-D mask cannot be read without O(L^2) work: express its structure as a sparseformer pattern"
        )
    config = settings(module.config)
    span = layer_span(module, attention_mask, sliding_window, is_causal)
    user = config.pattern_of(getattr(module, "layer_idx", None))
    b, h, lq, _ = query.shape
    lk = key.shape[2]
    q_offset, kpm = lk - lq, None
    if attention_mask is not None:
        if (attention_mask.q_length, attention_mask.kv_length) != (lq, lk):
            raise ValueError(
                f"the mask describes {attention_mask.q_length} queries x {attention_mask.kv_length} keys, "
                f"the layer has {lq} x {lk}"
            )
        q_offset, kpm = attention_mask.q_offset, attention_mask.key_padding
    cached = not (q_offset == 0 and lq == lk)  # queries after a cache (else self-attention)
    symbolic = isinstance(lk, torch.SymInt) or isinstance(q_offset, torch.SymInt)
    if isinstance(user, P.Dense) and cached and (symbolic or (lq == 1 and _sees_every_key(span, q_offset, lk))):
        out = _cached_step(query, key, value, span, q_offset, attention_mask, float(dropout), scaling, softcap, s_aux)
        return out, None
    pattern = layer_pattern(span, user)
    kw = dict(key_padding_mask=kpm, dropout_p=float(dropout), scale=scaling, softcap=softcap, sinks=s_aux)
    # self-attention without a cache: sf.pattern_attention, which compiles no layout on gather (an exported
    # graph keeps the length symbolic); otherwise the layout at the queries' offset
    if not cached:
        out = pattern_attention(
            query, key, value, pattern, block_size=config.block_size, causal=span.causal, backend=config.backend, **kw
        )  # [B, H, Lq, Dv]
    else:
        layout = pattern.compile(
            q_len=lq, num_heads=h, block_size=config.block_size, kv_len=lk, causal=span.causal, q_offset=q_offset
        )
        out = sparse_attention(query, key, value, layout, backend=config.backend, **kw)  # [B, H, Lq, Dv]
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation="sparseformer"`` available to every transformers model.
    Idempotent. Masks are built by :func:`~.masks.sparseformer_mask`: a compact
    :class:`~.masks.MaskInfo`, never an L x L tensor."""
    from ._deps import require

    mu = require("transformers.modeling_utils")
    masking = require("transformers.masking_utils")
    mu.AttentionInterface.register(NAME, sparseformer_attention)
    masking.AttentionMaskInterface.register(NAME, sparseformer_mask)
