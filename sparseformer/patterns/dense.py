"""``Dense``: every pair attends."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FULL, Pattern, Shape


@dataclass(frozen=True)
class Dense(Pattern):
    """All pairs ``(i, j)`` attend: ``0 <= i < q_len``, ``0 <= j < kv_len``."""

    @property
    def _shift_invariant(self) -> bool:
        return True

    def _states(self, shape: Shape) -> torch.Tensor:
        return torch.full((1, shape.nq, shape.nk), FULL, dtype=torch.uint8)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.ones(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool)
