"""``BlockLocal``: the seed's block-sparse attention inside one block."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FULL, NONE, PARTIAL, Pattern, Shape, check_int, positions


@dataclass(frozen=True)
class BlockLocal(Pattern):
    """A query attends only to the keys of its own block.

    With block length ``S`` (``size``, default: the layout's block size), the pair ``(i, j)``
    attends iff ``p // S == j // S``: blocks are ``[m*S, (m+1)*S)`` in positions, half-open.
    """

    size: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            check_int("size", self.size)

    def _s(self, shape: Shape) -> int:
        return self.size or shape.block_size

    def _states(self, shape: Shape) -> torch.Tensor:
        s = self._s(shape)
        qlo, qhi = (x // s for x in shape.q_range)
        klo, khi = (x // s for x in shape.k_range)
        one_group = (qlo == qhi)[:, None] & (klo == khi)[None, :]
        full = one_group & (qlo[:, None] == klo[None, :])
        empty = (qhi[:, None] < klo[None, :]) | (qlo[:, None] > khi[None, :])
        out = torch.full(full.shape, PARTIAL, dtype=torch.uint8)
        out[full] = FULL
        out[empty] = NONE
        return out[None]

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        s = self._s(shape)
        return positions(shape, i) // s == j // s
