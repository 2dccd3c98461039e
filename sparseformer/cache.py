"""Bounded KV caches for streaming generation.

:class:`SinkWindowCache` serves the causal pattern ``SlidingWindow(W, right=0) | Global(tokens=S)``
(a sliding window plus ``S`` attention-sink tokens, as in StreamingLLM, Xiao et al. 2023): the
query at position ``t`` attends exactly the keys at positions ``j < S`` and
``t - W <= j <= t``. The cache holds ``S + W + 1`` slots per layer, whatever the length:

* slot ``p`` holds position ``p`` for ``p < S`` (the sinks, written once);
* slots ``S .. S+W`` are a ring: position ``p >= S`` goes to slot ``S + (p - S) % (W + 1)``,
  overwriting (evicting) position ``p - W - 1``, which no later query attends.

``positions[s]`` is the absolute position held by slot ``s``, ``-1`` while unwritten. A decode
step attends only the slots :meth:`SinkWindowCache.attend_mask` keeps: written, and a sink or in
the window. Keys are stored after rotary embedding at their absolute position, so the cache is
exact for RoPE models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .patterns.base import Pattern
from .patterns.compose import Union
from .patterns.global_tokens import Global
from .patterns.sliding_window import SlidingWindow


@dataclass(frozen=True)
class SinkWindowSpec:
    """``window`` W (keys ``t-W .. t``) and ``sinks`` S (keys ``0 .. S-1``)."""

    window: int
    sinks: int


def sink_window_spec(pattern: Pattern) -> SinkWindowSpec:
    """The window and sink count of ``SlidingWindow(W, right=0)`` or
    ``SlidingWindow(W, right=0) | Global(tokens=S)``; ValueError for any other pattern."""
    parts = pattern.parts if isinstance(pattern, Union) else (pattern,)
    windows = [p for p in parts if isinstance(p, SlidingWindow)]
    sinks = [p for p in parts if isinstance(p, Global)]
    ok = (
        len(windows) == 1
        and len(sinks) <= 1
        and len(windows) + len(sinks) == len(parts)
        and windows[0].unit == "token"
        and windows[0].right == 0
        and all(isinstance(g.tokens, int) and g.blocks is None for g in sinks)
    )
    if not ok:
        raise ValueError(
            "a streaming cache needs the pattern SlidingWindow(W, right=0) or "
            f"SlidingWindow(W, right=0) | Global(tokens=S) (token units, causal), got {pattern!r}"
        )
    return SinkWindowSpec(window=windows[0].left, sinks=sinks[0].tokens if sinks else 0)


class SinkWindowCache:
    """Fixed-size KV cache: ``k``/``v`` are ``[n_layers, B, H, S + W + 1, D]``, allocated once."""

    def __init__(
        self,
        spec: SinkWindowSpec,
        *,
        n_layers: int,
        batch: int,
        n_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(spec, SinkWindowSpec):
            raise TypeError(f"spec must be a SinkWindowSpec, got {type(spec).__name__}")
        for name, value in (("n_layers", n_layers), ("batch", batch), ("n_heads", n_heads), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.spec = spec
        self.slots = spec.sinks + spec.window + 1
        shape = (n_layers, batch, n_heads, self.slots, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.positions = torch.full((self.slots,), -1, dtype=torch.int64, device=device)
        self.length = 0  # positions written so far: the next token sits at position `length`

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.positions.nbytes

    def slot(self, pos: int) -> int:
        """The slot that holds absolute position ``pos``."""
        s, w = self.spec.sinks, self.spec.window
        return pos if pos < s else s + (pos - s) % (w + 1)

    def write(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the key and value ``[B, H, D]`` of position ``pos`` for ``layer``.

        Call :meth:`advance` once all layers of ``pos`` are written."""
        if pos != self.length:
            raise ValueError(f"pos must be the next position {self.length}, got {pos}")
        s = self.slot(pos)
        self.k[layer, :, :, s] = k
        self.v[layer, :, :, s] = v
        self.positions[s] = pos

    def advance(self) -> None:
        self.length += 1

    def attend_mask(self, t: int) -> torch.Tensor:
        """``bool [slots]``: the slots the query at position ``t`` attends (written, and a sink
        or within ``t - W .. t``)."""
        p = self.positions
        return (p >= 0) & (p <= t) & ((p < self.spec.sinks) | (p >= t - self.spec.window))
