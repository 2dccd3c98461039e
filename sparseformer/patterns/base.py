"""The pattern protocol: which (query, key) pairs attend, and how their scores change.

Coordinates used by every pattern (exact, for all docstrings in this package):

* ``i`` is a query *index* in ``[0, q_len)``, ``j`` a key index in ``[0, kv_len)``.
* A query sits at the absolute *position* ``p = i + q_offset`` (``q_offset`` defaults to
  ``kv_len - q_len``: queries are the last ``q_len`` positions of the key sequence, as in
  decoding with a KV cache; it is 0 when ``q_len == kv_len``). A key sits at position ``j``.
* ``d = p - j`` is the signed distance (positive: the key is in the past).
* ``bs`` is the layout's block size; the *tile* of query ``i`` is ``i // bs``, of key ``j`` is
  ``j // bs``. Patterns stated "in blocks" use position blocks ``p // bs`` and ``j // bs``.

A pattern answers three questions for a :class:`Shape`:

* ``_states(shape)``: for every (tile of queries, tile of keys), whether *no* pair, *some*
  pairs (partial) or *every* pair attends: ``uint8 [Hp, nq, nk]`` with Hp 1 (same for all heads)
  or ``num_heads``. It may be conservative (say PARTIAL where the truth is NONE or FULL), never
  wrong (never FULL or NONE where it is not).
* ``_pairs(shape, h, i, j)``: the exact element predicate for head ``h`` on broadcastable index
  tensors. Only ever evaluated on PARTIAL tiles, so its cost follows the layout, not L².
* ``_slopes(shape)`` and ``_logw(shape)``: score terms (distance-decay slope per head; log-weight
  per tile for sampled random blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

NONE, PARTIAL, FULL = 0, 1, 2


@dataclass(frozen=True)
class Shape:
    """The sizes a pattern is compiled for."""

    q_len: int
    kv_len: int
    num_heads: int
    block_size: int
    q_offset: int

    @property
    def nq(self) -> int:
        return -(-self.q_len // self.block_size)

    @property
    def nk(self) -> int:
        return -(-self.kv_len // self.block_size)

    @cached_property
    def q_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive first and last query *position* of each query tile, ``int64 [nq]``."""
        lo = torch.arange(self.nq) * self.block_size
        hi = torch.clamp(lo + self.block_size, max=self.q_len) - 1
        return lo + self.q_offset, hi + self.q_offset

    @cached_property
    def k_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive first and last key position of each key tile, ``int64 [nk]``."""
        lo = torch.arange(self.nk) * self.block_size
        hi = torch.clamp(lo + self.block_size, max=self.kv_len) - 1
        return lo, hi


class Pattern:
    """Base class of all patterns. Subclasses are frozen dataclasses, hence hashable."""

    # -- composition -------------------------------------------------------------------------
    def __or__(self, other: Pattern) -> Pattern:
        from .compose import Union

        return Union.of(self, other)

    def __and__(self, other: Pattern) -> Pattern:
        from .compose import Intersection

        return Intersection.of(self, other)

    def compile(
        self,
        q_len: int,
        num_heads: int,
        block_size: int = 64,
        *,
        kv_len: int | None = None,
        causal: bool = False,
        q_offset: int | None = None,
    ):
        """Compile for one shape into a cached :class:`~sparseformer.layout.BlockLayout`.

        ``kv_len`` defaults to ``q_len``; ``q_offset`` to ``kv_len - q_len`` (see module doc);
        ``causal=True`` keeps only pairs with ``p >= j``.
        """
        from ..layout import compile_layout

        return compile_layout(
            self,
            q_len=q_len,
            num_heads=num_heads,
            block_size=block_size,
            kv_len=kv_len,
            causal=causal,
            q_offset=q_offset,
        )

    # -- the protocol ------------------------------------------------------------------------
    def _states(self, shape: Shape) -> torch.Tensor:
        raise NotImplementedError

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _slopes(self, shape: Shape) -> torch.Tensor | None:
        return None

    def _logw(self, shape: Shape) -> torch.Tensor | None:
        return None

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        """Replace gap-filling parts (``_fills_gaps``) by what they keep for this shape.
        ``allowed`` is ``bool [Hp, nq, nk]``: the tiles where the enclosing pattern can keep a pair
        (None: all)."""
        return self

    @property
    def _fills_gaps(self) -> bool:
        return False

    @property
    def _shift_invariant(self) -> bool:
        """Whether ``_pairs`` depends on the head and ``p - j`` only (compilation groups tiles)."""
        return False


# -- helpers shared by the pattern families ------------------------------------------------------


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def distance_states(shape: Shape, lo: float, hi: float) -> torch.Tensor:
    """Exact tile states of the band ``lo <= p - j <= hi`` (bounds inclusive, may be ±inf).

    Over a tile the distances ``p - j`` take every integer in ``[dmin, dmax]``, so the tile is
    full iff that interval lies inside the band and empty iff it misses it. ``uint8 [1, nq, nk]``.
    """
    qlo, qhi = shape.q_range
    klo, khi = shape.k_range
    dmin = qlo[:, None] - khi[None, :]  # [nq, nk]
    dmax = qhi[:, None] - klo[None, :]
    full = (dmin >= lo) & (dmax <= hi)
    empty = (dmax < lo) | (dmin > hi)
    return _states_from(full, empty)[None]


def key_set_states(shape: Shape, keep: torch.Tensor) -> torch.Tensor:
    """Exact tile states of "the key j is in a set", ``keep: bool [kv_len]`` -> ``uint8 [1, nq, nk]``."""
    full, empty = _tile_all_any(keep, shape.block_size)
    return _states_from(full, empty)[None, None, :].expand(1, shape.nq, shape.nk)


def query_set_states(shape: Shape, keep: torch.Tensor) -> torch.Tensor:
    """Exact tile states of "the query i is in a set", ``keep: bool [q_len]`` -> ``uint8 [1, nq, nk]``."""
    full, empty = _tile_all_any(keep, shape.block_size)
    return _states_from(full, empty)[None, :, None].expand(1, shape.nq, shape.nk)


def _tile_all_any(keep: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = keep.numel()
    tiles = -(-n // bs)
    valid = torch.zeros(tiles * bs, dtype=torch.bool)
    valid[:n] = True
    padded = torch.zeros(tiles * bs, dtype=torch.bool)
    padded[:n] = keep
    # Padding counts as kept for "all" (it is never attended: the layout masks it) and as
    # not kept for "any".
    full = (padded | ~valid).view(tiles, bs).all(-1)
    empty = ~padded.view(tiles, bs).any(-1)
    return full, empty


def _states_from(full: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    out = torch.full(full.shape, PARTIAL, dtype=torch.uint8)
    out[full] = FULL
    out[empty] = NONE
    return out


def positions(shape: Shape, i: torch.Tensor) -> torch.Tensor:
    """Absolute position of query index ``i``."""
    return i + shape.q_offset


def decay_width(rate: float, eps: float) -> int:
    """Largest distance kept by a decay of ``rate`` truncated at ``eps``: ``floor(ln(1/eps)/rate)``."""
    return math.floor(math.log(1.0 / eps) / rate)
