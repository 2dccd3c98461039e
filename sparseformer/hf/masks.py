"""The mask hook: transformers' mask builders hand the ``"sparseformer"`` attention a compact
:class:`MaskInfo` (which distances attend, where the queries sit, which keys are padding) instead of
an L x L tensor.

``masking_utils.create_causal_mask`` and its siblings call the function registered for the
attention implementation in ``AttentionMaskInterface`` with the sizes, the offsets, the 2-D padding
mask and a *mask function* ``f(b, h, q_idx, kv_idx) -> bool``. :func:`sparseformer_mask` reads that
function as a :class:`~.native.Span` by its structure (the building blocks of ``masking_utils`` and
the overlays of the families in :data:`~.native.FAMILIES`, combined by ``and_masks`` /
``or_masks``); anything else (packed sequences, image blocks, chunked attention, an unknown
overlay) raises ValueError naming the function. Cost: O(B * kv_length), never O(L^2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .native import BIDIRECTIONAL, CAUSAL, Span

_MU = "transformers.masking_utils"
_GEMMA3 = "transformers.models.gemma3.modeling_gemma3"


@dataclass(frozen=True, eq=False)
class MaskInfo:
    """What one of transformers' mask builders described, for ``q_length`` queries against
    ``kv_length`` keys (the keys the attention function receives, in order).

    Query ``i`` sits at position ``i + q_offset`` and key ``j`` at position ``j`` (both relative to
    the first key: transformers' ``q_offset - kv_offset``); the pair attends iff ``span`` holds its
    distance and ``key_padding[b, j]`` (None: no padding mask was given)."""

    span: Span
    q_length: int
    kv_length: int
    q_offset: int
    key_padding: torch.Tensor | None  # bool [B, kv_length], True = a real token

    @functools.cached_property
    def every_key(self) -> bool:
        """Whether every key is a real token: ``key_padding`` is None or True everywhere. Read
        (one reduction over ``[B, kv_length]`` and a sync) at the first use only: one mask serves
        every layer of its kind in a forward call."""
        return self.key_padding is None or bool(self.key_padding.all())


def _cell(fn: Callable, name: str):
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


def _sliding_overlay(fn):  # kv_idx > q_idx - W
    return Span(None, _cell(fn, "sliding_window") - 1)


def _bidirectional_overlay(fn):  # abs(q_idx - kv_idx) <= W
    w = _cell(fn, "sliding_window")
    return Span(-w, w)


def _gemma3_window(fn):  # abs(q_idx - kv_idx) < W
    w = _cell(fn, "sliding_window")
    return Span(-(w - 1), w - 1)


def _combine(op):
    def read(fn):
        parts = [span_of(f) for f in _cell(fn, "mask_functions")]
        out = parts[0]
        for s in parts[1:]:
            out = op(out, s)
        return out

    return read


# (module, qualname) of a mask function -> its span. Read from the installed sources.
_KNOWN: dict[tuple[str, str], Callable[[Callable], Span]] = {
    (_MU, "causal_mask_function"): lambda fn: CAUSAL,
    (_MU, "bidirectional_mask_function"): lambda fn: BIDIRECTIONAL,
    (_MU, "sliding_window_overlay.<locals>.inner_mask"): _sliding_overlay,
    (_MU, "sliding_window_bidirectional_overlay.<locals>.inner_mask"): _bidirectional_overlay,
    (_MU, "and_masks.<locals>.and_mask"): _combine(Span.__and__),
    (_MU, "or_masks.<locals>.or_mask"): _combine(Span.__or__),
    (_GEMMA3, "_bidirectional_window_overlay.<locals>.inner_mask"): _gemma3_window,
    (_GEMMA3, "Gemma3TextModel.forward.<locals>.<lambda>"): lambda fn: BIDIRECTIONAL,  # returns True
}


def span_of(mask_function: Callable) -> Span:
    """The :class:`Span` of distances ``q_idx - kv_idx`` a transformers mask function keeps.

    Known: ``causal_mask_function`` (``0 <= d``), ``bidirectional_mask_function`` (all),
    ``sliding_window_overlay(W)`` (``d <= W - 1``), ``sliding_window_bidirectional_overlay(W)``
    (``|d| <= W``), Gemma 3's ``_bidirectional_window_overlay(W)`` (``|d| <= W - 1``) and its
    always-True bidirectional overlay, and their ``and_masks`` / ``or_masks``. Anything else
    raises ValueError naming it."""
    key = (getattr(mask_function, "__module__", None), getattr(mask_function, "__qualname__", None))
    read = _KNOWN.get(key)
    if read is None:
        raise ValueError(
            f"attn_implementation='sparseformer' cannot honour the mask function {key[0]}.{key[1]} "
            "(packed sequences, image blocks, chunked attention and custom overlays are not supported); "
            "use 'sdpa' or 'eager' for such inputs"
        )
    return read(mask_function)


def sparseformer_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int | torch.Tensor = 0,
    kv_offset: int = 0,
    mask_function: Callable | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> MaskInfo:
    """The ``AttentionMaskInterface`` entry of ``"sparseformer"``: a :class:`MaskInfo` in place of
    ``sdpa_mask``'s ``bool [B, 1, q_length, kv_length]``. ``attention_mask`` is the 2-D padding
    mask over absolute positions (``[B, seen + q_length]``, True/1 = real token, positions past
    its end count as padding, as in ``masking_utils.prepare_padding_mask``); key ``j`` is the
    absolute position ``j + kv_offset``. Other keyword arguments (``local_size``, ``dtype``, ...)
    only tune the stock builders and are ignored."""
    span = CAUSAL if mask_function is None else span_of(mask_function)
    pad = None
    if attention_mask is not None:
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch_size:
            raise ValueError(
                f"attention_mask must be 2-D [batch={batch_size}, length], got {tuple(attention_mask.shape)}"
            )
        keep = attention_mask.bool()[:, kv_offset : kv_offset + kv_length]  # [B, <= kv_length]
        pad = torch.nn.functional.pad(keep, (0, kv_length - keep.shape[1]), value=False)  # [B, kv_length]
    if not isinstance(q_offset, (int, torch.SymInt)):  # a 0-d tensor (transformers' static caches)
        q_offset = int(q_offset)
    return MaskInfo(span, q_length, kv_length, q_offset - kv_offset, pad)
