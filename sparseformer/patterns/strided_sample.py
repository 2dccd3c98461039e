"""``StridedSample``: every ``stride``-th key of the tiles the rest of a pattern leaves empty,
re-weighted so that the softmax over them estimates the softmax over all of them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import NONE, PARTIAL, Pattern, Shape, check_int, positions


@dataclass(frozen=True)
class StridedSample(Pattern):
    """In its *candidate* tiles, head ``h`` keeps the pair ``(i, j)`` iff
    ``(p - j - h) mod stride == 0`` (``p`` the query's position): every ``stride``-th key counted
    from the query, shifted by one per head.

    The candidates of a query tile are the key tiles in which the rest of the pattern keeps no
    pair (in a union: its other parts; under ``causal`` or an intersection: only tiles where a
    pair may attend; alone: every tile). With ``reweight=True`` every kept score gets
    ``+log(stride)``: a kept key stands for the ``stride`` keys of its residue class, so the
    numerator and the denominator of the softmax over the kept candidates are systematic-sample
    estimates of their sums over all candidate keys (exact where the candidates' scores are
    constant over each run of ``stride`` keys). Consecutive queries keep disjoint key subsets,
    so a local window in the next layer reads every key.

    Unlike :class:`RandomBlocks` this keeps pairs in every candidate tile: the block layout is
    as dense as its candidates (every such tile partial), only the pairs are sparse.
    """

    stride: int
    reweight: bool = True

    def __post_init__(self) -> None:
        check_int("stride", self.stride)

    @property
    def _fills_gaps(self) -> bool:
        return True

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        h, nq, nk = shape.num_heads, shape.nq, shape.nk
        tiles = torch.ones(h, nq, nk, dtype=torch.bool) if allowed is None else allowed.expand(h, nq, nk).clone()
        return _StridedIn(self.stride, self.reweight, tiles)


class _StridedIn(Pattern):
    """A :class:`StridedSample` restricted to its candidate tiles for one shape (not built by users)."""

    def __init__(self, stride: int, reweight: bool, tiles: torch.Tensor) -> None:
        self.stride, self.reweight = stride, reweight
        self.tiles = tiles  # bool [H, nq, nk]

    def _states(self, shape: Shape) -> torch.Tensor:
        return torch.where(self.tiles, PARTIAL, NONE).to(torch.uint8)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        bs = shape.block_size
        on_grid = torch.remainder(positions(shape, i) - j - h, self.stride) == 0
        return self.tiles[h][i // bs, j // bs] & on_grid

    def _logw(self, shape: Shape) -> torch.Tensor | None:
        if not self.reweight or self.stride == 1:
            return None
        return torch.where(self.tiles, torch.tensor(math.log(self.stride), dtype=torch.float64), 0.0)  # float64
