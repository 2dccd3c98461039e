"""Band form: a pattern made of sliding windows plus a prefix of global tokens, resolved for one
block size and number of heads (:class:`Band`, from :func:`band_of`).

A compiled description that lives beside :class:`~sparseformer.layout.BlockLayout`: kernels read a
``Band`` (``sparseformer.kernels.band`` computes attention over it) and never inspect patterns.

A pattern has *band form* when it is a union of

* window parts: ``SlidingWindow`` (token or block unit), ``BlockLocal`` and truncated
  ``DistanceDecay`` (``eps`` set; its score bias ``-rate[h] * |i - j|`` applies to every kept
  pair, as in any composition), and
* ``Global`` parts whose global set is a prefix of positions (``tokens=int`` and/or
  ``blocks=int``),

possibly intersected with ``Causal()``, and it is used for self-attention (``q_len == kv_len``,
``q_offset == 0``, so query ``i`` sits at position ``i``). With ``G`` the global key prefix,
``Gr`` the global query prefix (the horizontal ``Global`` parts) and ``W(i, j)`` the union of the
window parts, the pair ``(i, j)`` attends iff

    (W(i, j) or j < G or i < Gr) and (not causal or j <= i),   0 <= i, j < L,

with the decay parts' score bias ``-sum(rate[h]) * |i - j|`` on every kept pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .patterns.base import Pattern, Shape
from .patterns.block_local import BlockLocal
from .patterns.causal import Causal
from .patterns.compose import Intersection, Union
from .patterns.distance_decay import DistanceDecay
from .patterns.global_tokens import Global
from .patterns.sliding_window import SlidingWindow


@dataclass(frozen=True)
class Band:
    """A band-form pattern resolved for one block size and number of heads (see the module
    docstring)."""

    windows: tuple[Pattern, ...]  # SlidingWindow, BlockLocal and truncated DistanceDecay parts
    global_keys: int  # G: keys [0, G) are global
    global_rows: int  # Gr: queries [0, Gr) attend every key
    causal: bool
    block_size: int
    num_heads: int
    slopes: tuple[float, ...] | None = None  # per head: score bias -slopes[h] * |i - j| on every pair

    @property
    def _shape(self) -> Shape:
        return Shape(0, 0, self.num_heads, self.block_size, 0)  # window parts read heads and block size

    @property
    def reach(self) -> tuple[int, int]:
        """``(wl, wr)``: key tiles before and after a query's own tile that a window can reach."""
        bs, wl, wr = self.block_size, 0, 0
        for p in self.windows:
            if isinstance(p, SlidingWindow):
                left, right = p.left, p._right
                if p.unit == "token":
                    left, right = math.ceil(left / bs), math.ceil(right / bs)
            elif isinstance(p, DistanceDecay):
                left = right = math.ceil(max(p._widths(self._shape)) / bs)
            else:  # BlockLocal of size S: keys in the query's S-block
                size = p.size or bs
                left = right = size // bs - 1 if size % bs == 0 else 0 if bs % size == 0 else math.ceil((size - 1) / bs)
            wl, wr = max(wl, left), max(wr, right)
        return wl, 0 if self.causal else wr

    @property
    def tile_full(self) -> bool:
        """Whether every pair of a query tile and a key tile in its reach attends (up to
        conditions on the key alone) with no score term: block-unit windows and ``BlockLocal`` of
        the block size, not causal, at least one window."""
        return (
            bool(self.windows)
            and not self.causal
            and all(
                (isinstance(p, SlidingWindow) and p.unit == "block")
                or (isinstance(p, BlockLocal) and p.size in (None, self.block_size))
                for p in self.windows
            )
        )

    @property
    def per_head(self) -> bool:
        """Whether the window pairs differ between heads (decay widths per head)."""
        return any(isinstance(p, DistanceDecay) and len(set(p._widths(self._shape))) > 1 for p in self.windows)

    def min_length(self) -> int:
        """Shortest sequence this band serves at a symbolic length (every global token present)."""
        return max(2, self.global_keys, self.global_rows)

    def pairs(self, i: torch.Tensor, j: torch.Tensor, length) -> torch.Tensor:
        """Whether query ``i`` attends key ``j`` (broadcastable int tensors; the definition above),
        with a leading head dim (``num_heads`` if :attr:`per_head`, else 1)."""
        glob = ((j < self.global_keys) | (i < self.global_rows)) & self._ok(i, j, length)
        return self._window_pairs(i, j, length) | glob

    def _ok(self, i: torch.Tensor, j: torch.Tensor, length) -> torch.Tensor:
        ok = (j >= 0) & (j < length) & (i < length)
        return ok & (j <= i) if self.causal else ok

    def _window_pairs(self, i: torch.Tensor, j: torch.Tensor, length) -> torch.Tensor:
        """``bool [H or 1, *broadcast(i, j)]``: the union of the window parts, in range."""
        heads = range(self.num_heads) if self.per_head else range(1)
        hit = torch.zeros(len(heads), *torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool, device=i.device)
        for p in self.windows:
            hit = hit | torch.stack([p._pairs(self._shape, h, i, j) for h in heads])
        return hit & self._ok(i, j, length)

    def _bias(self, i: torch.Tensor, j: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``-slopes[h] * |i - j|``, ``[H, *broadcast(i, j)]``."""
        slopes = torch.tensor(self.slopes, dtype=dtype, device=i.device)
        dist = (i - j).abs().to(dtype)
        return -slopes.view(-1, *([1] * dist.dim())) * dist


def band_of(pattern: Pattern, block_size: int, causal: bool = False, num_heads: int = 1) -> Band | None:
    """The :class:`Band` of ``pattern`` compiled with this block size, ``causal`` and number of
    heads, or None when the pattern is not in band form."""
    parts: tuple[Pattern, ...] = (pattern,)
    if isinstance(pattern, Intersection):
        rest = [p for p in pattern.parts if not isinstance(p, Causal)]
        if len(rest) != 1:
            return None
        causal = True
        parts = (rest[0],)
    elif isinstance(pattern, Causal):
        return None
    if isinstance(parts[0], Union):
        parts = parts[0].parts
    windows, g_keys, g_rows, slopes = [], 0, 0, None
    shape = Shape(0, 0, num_heads, block_size, 0)
    for p in parts:
        if isinstance(p, (SlidingWindow, BlockLocal)):
            windows.append(p)
        elif isinstance(p, DistanceDecay) and p.eps is not None:
            windows.append(p)
            rates = p._rates(shape)
            slopes = rates if slopes is None else tuple(a + b for a, b in zip(slopes, rates))
        elif isinstance(p, Global) and all(v is None or isinstance(v, int) for v in (p.tokens, p.blocks)):
            g = max(p.tokens or 0, (p.blocks or 0) * block_size)
            g_keys = max(g_keys, g)
            g_rows = max(g_rows, g) if p.horizontal else g_rows
        else:
            return None
    return Band(tuple(windows), g_keys, g_rows, causal, block_size, num_heads, slopes)
