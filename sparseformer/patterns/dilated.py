"""``Dilated``: a sliding window with gaps (Longformer's dilated window)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PARTIAL, Pattern, Shape, check_int, distance_states, positions


@dataclass(frozen=True)
class Dilated(Pattern):
    """With ``d = p - j``: the pair attends iff ``|d| <= window * dilation`` and
    ``d % dilation == 0``, i.e. the keys ``p + m * dilation`` for ``m`` in ``[-window, window]``.
    ``dilation=1`` is ``SlidingWindow(window)``.
    """

    window: int
    dilation: int = 2

    def __post_init__(self) -> None:
        check_int("window", self.window, minimum=0)
        check_int("dilation", self.dilation)

    @property
    def _shift_invariant(self) -> bool:
        return True

    def _states(self, shape: Shape) -> torch.Tensor:
        reach = self.window * self.dilation
        band = distance_states(shape, -reach, reach)
        return band if self.dilation == 1 else torch.clamp(band, max=PARTIAL)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        d = positions(shape, i) - j
        return (d.abs() <= self.window * self.dilation) & (torch.remainder(d, self.dilation) == 0)
