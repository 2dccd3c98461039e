"""What each attention layer of a transformers model attends to, read from its config.

A layer's pairs are a :class:`Span` of signed distances ``d = p - j`` (``p`` the query's position,
``j`` the key's, both absolute token indices of the padded input): the pair attends iff
``lo <= d <= hi``. :func:`native_spans` reads them from the config, per model family, as the
installed transformers (5.24) computes them; the mask hook (:mod:`.masks`) reads the same spans from
the masks the model builds, and the attention function checks that both agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import patterns as P

_CAUSAL_LAYER_TYPES = ("qwen2", "qwen3", "ministral", "cohere2", "olmo3", "gpt_oss", "gemma2", "gemma3_text")
FAMILIES = ("mistral", *_CAUSAL_LAYER_TYPES, "modernbert")
_LOCAL_KEYS = ("sliding_window", "attention_chunk_size", "local_attention")


@dataclass(frozen=True)
class Span:
    """The pair (query at position ``p``, key at position ``j``) attends iff ``lo <= p - j <= hi``
    (bounds inclusive; None = unbounded). ``Span(0, None)`` is causal attention,
    ``Span(None, None)`` full bidirectional attention, ``Span(0, W - 1)`` a causal window of ``W``
    keys (the query's own key included), ``Span(-h, h)`` a bidirectional window of ``2h + 1`` keys."""

    lo: int | None
    hi: int | None

    def __post_init__(self) -> None:
        for name in ("lo", "hi"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(f"Span.{name} must be an int or None, got {v!r}")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"Span is empty: lo={self.lo} > hi={self.hi}")

    @property
    def causal(self) -> bool:
        """Whether no key after the query attends (``lo >= 0``)."""
        return self.lo is not None and self.lo >= 0

    @property
    def is_window(self) -> bool:
        """Both bounds finite: a sliding window."""
        return self.lo is not None and self.hi is not None

    def pattern(self) -> tuple[P.Pattern, bool]:
        """``(pattern, causal)`` such that ``pattern.compile(..., causal=causal)`` keeps exactly the
        pairs of this span: ``(P.SlidingWindow(hi, -lo), lo == 0)`` for a window containing ``d = 0``,
        ``(P.Dense(), lo == 0)`` for ``lo`` in ``{None, 0}`` and ``hi = None``. Other spans (a window
        that leaves out the query's own position, a one-sided unbounded band) raise ValueError."""
        if self.is_window and self.lo <= 0 <= self.hi:
            return P.SlidingWindow(self.hi, -self.lo), self.lo == 0
        if self.hi is None and self.lo in (None, 0):
            return P.Dense(), self.lo == 0
        raise ValueError(
            f"sparseformer cannot run the attention span {self} (expected lo <= 0 <= hi, or lo in (None, 0) with hi=None)"
        )

    def __and__(self, other: Span) -> Span:
        lo = _pick(max, self.lo, other.lo)
        hi = _pick(min, self.hi, other.hi)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"the attention span {self} & {other} is empty")
        return Span(lo, hi)

    def __or__(self, other: Span) -> Span:
        """The union; ValueError when it is not one span (two bands with a gap between them)."""
        a, b = sorted((self, other), key=lambda s: -float("inf") if s.lo is None else s.lo)
        if a.hi is not None and b.lo is not None and b.lo > a.hi + 1:
            raise ValueError(f"the attention span {self} | {other} has a gap: not one band")
        return Span(a.lo, None if a.hi is None or b.hi is None else max(a.hi, b.hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else self.lo
        hi = "inf" if self.hi is None else self.hi
        return f"{lo} <= p - j <= {hi}"


CAUSAL = Span(0, None)
BIDIRECTIONAL = Span(None, None)


def _pick(f, a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else f(a, b)


@functools.lru_cache(maxsize=256)
def flash_window(sliding_window: int, causal: bool) -> Span:
    """What the ``sliding_window=W`` keyword that models pass to the attention function means (the
    flash-attention convention every family above follows): keys at distance ``|d| <= W - 1`` on
    the attended side(s)."""
    return Span(0 if causal else -(sliding_window - 1), sliding_window - 1)


def native_spans(config) -> tuple[Span | None, ...]:
    """The :class:`Span` of every attention layer of a model with this (text) ``config``, as the
    installed transformers computes it (read from ``masking_utils`` and each model file, and
    checked against the stock models in ``tests/hf/test_native_*.py``). ``W`` is
    ``config.sliding_window``, ``d = p - j``:

    * Mistral (``mistral``): every layer ``0 <= d <= W - 1`` (W keys, the query's own included);
      ``sliding_window=None``: every layer causal, ``0 <= d``.
    * Ministral, Qwen2, Qwen3, Cohere2, OLMo 3, GPT-OSS, Gemma 2, Gemma 3 (causal):
      ``config.layer_types[i] == "sliding_attention"``: ``0 <= d <= W - 1``; ``"full_attention"``:
      ``0 <= d``. (Their configs derive ``layer_types``: Gemma 3 every layer but each 6th sliding,
      Cohere2 every layer but each 4th, GPT-OSS the even layers, OLMo 3 three of four; Qwen2/3
      the layers ``i >= max_window_layers`` when ``use_sliding_window``.)
    * Gemma 3 with ``use_bidirectional_attention`` (EmbeddingGemma): the config stores
      ``W = window // 2 + 1``; sliding layers ``|d| <= W - 1``, full layers every pair.
    * ModernBERT (``modernbert``): ``W = local_attention // 2``; sliding layers ``|d| <= W``
      (``local_attention + 1`` keys), full layers (``layer_types``, by default every
      ``global_attn_every_n_layers``-th from layer 0) every pair.
    * Any other model whose config names no local attention (``sliding_window``,
      ``attention_chunk_size``, ``local_attention`` unset, ``layer_types`` all ``"full_attention"``,
      e.g. BERT, GPT-2, Llama): every layer full, causal or not as the model's mask says (None).
      Such a model runs exactly dense.

    Any other family with local attention, a layer type other than sliding/full attention, or
    Gemma 2 with ``use_bidirectional_attention`` raises ValueError naming it.
    """
    local = tuple(k for k in _LOCAL_KEYS if getattr(config, k, None) is not None)
    types = getattr(config, "layer_types", None)
    return _spans(
        getattr(config, "model_type", None),
        config.num_hidden_layers,
        None if types is None else tuple(types),
        getattr(config, "sliding_window", None),
        bool(getattr(config, "use_bidirectional_attention", False)),
        local,
    )


@functools.lru_cache(maxsize=256)
def _spans(kind, n, types, window, bidirectional, local) -> tuple[Span | None, ...]:
    if kind not in FAMILIES:
        others = sorted({t for t in (types or ()) if t != "full_attention"})
        if local or others:
            raise ValueError(
                f"sparseformer does not know how model_type {kind!r} uses its local attention "
                f"({', '.join(local + tuple(others))}); supported families: {', '.join(FAMILIES)}"
            )
        return (None,) * n
    if kind == "mistral":
        return (CAUSAL if window is None else flash_window(window, True),) * n
    bidirectional = bidirectional or kind == "modernbert"
    if bidirectional and kind == "gemma2":
        raise ValueError("sparseformer does not support gemma2 with use_bidirectional_attention=True")
    spans = []
    for i, t in enumerate(types):
        if t == "full_attention":
            spans.append(BIDIRECTIONAL if bidirectional else CAUSAL)
        elif t == "sliding_attention" and isinstance(window, int) and window >= 1:
            spans.append(Span(-window, window) if kind == "modernbert" else flash_window(window, not bidirectional))
        else:
            raise ValueError(
                f"sparseformer does not support layer type {t!r} with sliding_window={window!r} (layer {i} of {kind})"
            )
    return tuple(spans)
