"""The ``"sparseformer"`` attention implementation for Hugging Face transformers (5.x).

:func:`register` adds :func:`sparseformer_attention` to transformers' ``AttentionInterface`` and
the matching mask builder to its ``AttentionMaskInterface``. A model whose
``config._attn_implementation == "sparseformer"`` then calls :func:`sparseformer_attention` in
every attention layer, which reads its settings from ``config.sparseformer`` (see
:func:`config_entry`), converts the model's mask to a key padding mask and runs
:func:`sparseformer.sparse_attention`.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import torch

from .. import patterns as P
from ..attention import BACKENDS, sparse_attention
from .spec import from_spec, to_spec

NAME = "sparseformer"


def config_entry(
    pattern: P.Pattern, *, block_size: int = 64, backend: str = "auto", layers: tuple[int, ...] | None = None
) -> dict:
    """The JSON-able dict to put at ``config.sparseformer``: ``{"pattern": spec, "block_size": int,
    "backend": str, "layers": list of int or None}``. The attention layers whose ``layer_idx`` is in
    ``layers`` (every layer when ``layers`` is None) use this pattern (compiled per shape, causal for
    decoder layers); the others compute exact dense attention (the pattern ``P.Dense()``). The
    pattern's positions are token indices of the (padded) input."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or not layers or any(_not_index(i) for i in layers):
            raise ValueError(f"layers must be None or a non-empty list of layer indices >= 0, got {layers!r}")
        layers = sorted(set(layers))
    return {"pattern": to_spec(pattern), "block_size": block_size, "backend": backend, "layers": layers}


def _not_index(i) -> bool:
    return isinstance(i, bool) or not isinstance(i, int) or i < 0


class Settings(NamedTuple):
    """What ``config.sparseformer`` holds (see :func:`config_entry`)."""

    pattern: P.Pattern
    block_size: int
    backend: str
    layers: tuple[int, ...] | None  # None: every layer is sparse

    def pattern_of(self, layer: int | None) -> P.Pattern:
        """The pattern attention layer ``layer`` (its ``layer_idx``) computes."""
        if self.layers is None:
            return self.pattern
        if layer is None:
            raise ValueError(
                f"config.{NAME} names sparse layers {list(self.layers)}, but this attention module has no layer_idx"
            )
        return self.pattern if layer in self.layers else P.Dense()

    def density(self, length: int, num_heads: int, num_layers: int) -> float:
        """Attending (query, key) pairs over all pairs, averaged over ``num_layers`` layers of
        self-attention at ``length`` tokens (a dense layer counts 1)."""
        per = [
            self.pattern_of(i).compile(q_len=length, num_heads=num_heads, block_size=self.block_size).density
            for i in range(num_layers)
        ]
        return sum(per) / num_layers


@functools.lru_cache(maxsize=64)
def _parse(entry_json: str) -> Settings:
    entry = json.loads(entry_json)
    layers = entry.get("layers")
    return Settings(
        from_spec(entry["pattern"]),
        int(entry.get("block_size", 64)),
        entry.get("backend", "auto"),
        None if layers is None else tuple(int(i) for i in layers),
    )


def settings(config) -> Settings:
    """:class:`Settings` from ``config.sparseformer``."""
    entry = getattr(config, NAME, None)
    if not isinstance(entry, dict) or "pattern" not in entry:
        raise ValueError(
            f"attn_implementation='{NAME}' needs config.{NAME} = sparseformer.hf.config_entry(pattern, ...), "
            f"got {entry!r}; or call sparseformer.hf.sparsify(model, pattern)"
        )
    return _parse(json.dumps(entry, sort_keys=True))


def padding_from_mask(
    mask: torch.Tensor | None, batch: int, q_len: int, kv_len: int, causal_hint: bool
) -> tuple[torch.Tensor | None, bool, int]:
    """Read a transformers attention mask as ``(key_padding_mask, causal, kv_used)``.

    ``mask`` is None or 4-D ``[B or 1, 1 or H, q_len, kv_len]``, bool (True = attend) or additive
    float (0 = attend, ``<= finfo.min / 2`` or ``-inf`` = masked). It must be a *pure padding*
    mask, ``keep[b, i, j] = pad[b, j]``, or a padding mask and a causal one,
    ``keep[b, i, j] = pad[b, j] and j <= i + kv_used - q_len`` with ``keep[b, i, j] = False`` for
    ``j >= kv_used`` (``kv_used < kv_len`` happens with a static KV cache). Anything else (a
    sliding-window mask, a bias) raises ValueError rather than being half-honoured. Returns
    ``key_padding_mask`` as ``bool [B, kv_used]`` (None when nothing is padded), whether the mask
    is causal, and ``kv_used``. Without a mask: ``(None, causal_hint, kv_len)``. When both readings
    fit (e.g. one query), ``causal_hint`` decides.
    """
    if mask is None:
        return None, causal_hint, kv_len
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor or None, got {type(mask).__name__}")
    if mask.dim() != 4 or tuple(mask.shape[-2:]) != (q_len, kv_len) or mask.shape[0] not in (1, batch):
        raise ValueError(f"attention_mask must have shape [B or 1, heads, {q_len}, {kv_len}], got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        keep = mask
    elif mask.is_floating_point():
        masked = mask <= torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | masked).all()):
            raise ValueError(
                "attention_mask holds an additive bias (values other than 0 and -inf); sparseformer only honours padding and causal masks"
            )
        keep = ~masked
    else:
        raise TypeError(f"attention_mask must be bool or floating point, got {mask.dtype}")
    keep = keep.expand(batch, -1, -1, -1)
    if keep.shape[1] > 1 and keep.stride(1) != 0 and not bool((keep == keep[:, :1]).all()):
        raise ValueError("attention_mask differs between heads; sparseformer only honours padding and causal masks")
    keep = keep[:, 0]  # [B, Lq, Lk]
    pad = keep.any(1)  # [B, Lk]: a key is real iff some query attends it
    readings = (causal_hint, not causal_hint)
    for causal in readings:
        if not causal:
            if keep.stride(1) == 0 or bool((keep == pad[:, None, :]).all()):
                return _none_if_full(pad), False, kv_len
            continue
        used = pad.any(0).nonzero()
        kv_used = int(used[-1]) + 1 if used.numel() else kv_len
        if kv_used < q_len:
            continue
        i = torch.arange(q_len, device=keep.device)[:, None] + (kv_used - q_len)
        j = torch.arange(kv_len, device=keep.device)[None, :]
        expected = pad[:, None, :] & (j <= i)  # [B, Lq, Lk]
        if bool((keep == expected).all()):
            return _none_if_full(pad[:, :kv_used]), True, kv_used
    raise ValueError(
        "attention_mask is neither a padding mask nor a padding + causal mask (e.g. a sliding-window or "
        "packed-sequence mask); express such structure as a sparseformer pattern instead"
    )


def _none_if_full(pad: torch.Tensor) -> torch.Tensor | None:
    return None if bool(pad.all()) else pad.contiguous()


def sparseformer_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, Lq, D]
    key: torch.Tensor,  # [B, Hk, Lk, D]
    value: torch.Tensor,  # [B, Hk, Lk, Dv]
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: returns ``([B, Lq, H, Dv], None)``.

    The layout is ``pattern.compile(q_len=Lq, kv_len=Lk, num_heads=H, causal=...)``, ``pattern``
    this layer's (:meth:`Settings.pattern_of` its ``module.layer_idx``), with queries
    aligned bottom-right (``q_offset = Lk - Lq``: the last ``Lq`` positions, as with a KV cache).
    Causal comes from the mask when it has one, else from ``is_causal`` / ``module.is_causal``.
    """
    for name in ("position_bias", "softcap", "sliding_window", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(
                f"attn_implementation='{NAME}' does not support {name}={kwargs[name]!r}; use 'sdpa' or 'eager'"
            )
    config = settings(module.config)
    pattern = config.pattern_of(getattr(module, "layer_idx", None))
    hint = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    b, h, lq, _ = query.shape
    kpm, causal, kv_used = padding_from_mask(attention_mask, b, lq, key.shape[2], hint)
    key, value = key[:, :, :kv_used], value[:, :, :kv_used]
    layout = pattern.compile(q_len=lq, num_heads=h, block_size=config.block_size, kv_len=kv_used, causal=causal)
    out = sparse_attention(
        query, key, value, layout, key_padding_mask=kpm, dropout_p=float(dropout), scale=scaling, backend=config.backend
    )  # [B, H, Lq, Dv]
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation="sparseformer"`` available to every transformers model.
    Idempotent. Masks are built like ``"sdpa"``'s (boolean, or None when no mask is needed)."""
    from ._deps import require

    mu = require("transformers.modeling_utils")
    masking = require("transformers.masking_utils")
    mu.AttentionInterface.register(NAME, sparseformer_attention)
    masking.AttentionMaskInterface.register(NAME, masking.sdpa_mask)
