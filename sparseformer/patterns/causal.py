"""``Causal``: a query sees only keys at or before its own position."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Pattern, Shape, distance_states, positions


@dataclass(frozen=True)
class Causal(Pattern):
    """Pairs with ``p >= j`` (``p = i + q_offset``; the diagonal included).

    ``pattern.compile(..., causal=True)`` is ``(pattern & Causal()).compile(...)``.
    """

    @property
    def _shift_invariant(self) -> bool:
        return True

    def _states(self, shape: Shape) -> torch.Tensor:
        return distance_states(shape, 0, math.inf)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return positions(shape, i) >= j
