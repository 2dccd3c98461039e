"""``SlidingWindow``: a band around the diagonal, in tokens or in blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FULL, PARTIAL, Pattern, Shape, check_choice, check_int, distance_states, positions


@dataclass(frozen=True)
class SlidingWindow(Pattern):
    """A query attends to the keys within ``left`` before and ``right`` after it.

    ``unit="token"``: the pair attends iff ``-right <= p - j <= left`` (bounds inclusive).
    ``unit="block"``: the same on position blocks, ``-right <= p//bs - j//bs <= left``.
    ``right`` defaults to ``left`` (symmetric); ``right=0`` is a causal window. So
    ``SlidingWindow(1, unit="block")`` is "my block and one block on each side".
    """

    left: int
    right: int | None = None
    unit: str = "token"

    def __post_init__(self) -> None:
        check_int("left", self.left, minimum=0)
        if self.right is not None:
            check_int("right", self.right, minimum=0)
        check_choice("unit", self.unit, ("token", "block"))

    @property
    def _right(self) -> int:
        return self.left if self.right is None else self.right

    @property
    def _shift_invariant(self) -> bool:
        return self.unit == "token"

    def _states(self, shape: Shape) -> torch.Tensor:
        if self.unit == "token":
            return distance_states(shape, -self._right, self.left)
        bs = shape.block_size
        # Band on block indices d_b = p//bs - j//bs. With tiles aligned to position blocks
        # (q_offset % bs == 0) it is exact on a grid of one cell per tile. Otherwise, writing
        # d = p - j: -right*bs <= d <= left*bs implies the band (full), and the band implies
        # -(right+1)*bs < d < (left+1)*bs (outside it the tile is empty).
        if shape.q_offset % bs == 0:
            coarse = Shape(shape.nq, shape.nk, 1, 1, shape.q_offset // bs)
            return distance_states(coarse, -self._right, self.left)
        inner = distance_states(shape, -self._right * bs, self.left * bs)
        outer = distance_states(shape, -(self._right + 1) * bs + 1, (self.left + 1) * bs - 1)
        return torch.where(inner == FULL, FULL, torch.clamp(outer, max=PARTIAL)).to(torch.uint8)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        p = positions(shape, i)
        if self.unit == "block":
            p, j = p // shape.block_size, j // shape.block_size
        d = p - j
        return (d >= -self._right) & (d <= self.left)
