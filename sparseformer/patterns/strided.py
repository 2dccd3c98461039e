"""``Strided``: the strided pattern of Child et al. (2019), "Generating Long Sequences with
Sparse Transformers", both of its factors in one head."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NONE, PARTIAL, Pattern, Shape, check_int, distance_states, positions


@dataclass(frozen=True)
class Strided(Pattern):
    """With ``l = stride`` and ``d = p - j``, the pair attends iff ``|d| < l`` (the local factor)
    or ``d % l == 0`` (the strided factor: every ``l``-th key, counted from the query).

    The paper's causal form is ``compile(..., causal=True)``: ``0 <= d < l`` or ``d % l == 0``
    with ``d >= 0``. The strided factor touches most tiles when ``l`` is smaller than the block
    size; choose ``l`` of about ``sqrt(L)`` and at least the block size.
    """

    stride: int

    def __post_init__(self) -> None:
        check_int("stride", self.stride)

    @property
    def _shift_invariant(self) -> bool:
        return True

    def _states(self, shape: Shape) -> torch.Tensor:
        ln = self.stride
        local = distance_states(shape, -(ln - 1), ln - 1)
        qlo, qhi = shape.q_range
        klo, khi = shape.k_range
        dmin = qlo[:, None] - khi[None, :]
        dmax = qhi[:, None] - klo[None, :]
        # A multiple of l lies in [dmin, dmax] iff floor(dmax / l) * l >= dmin.
        hit = torch.div(dmax, ln, rounding_mode="floor") * ln >= dmin
        strided = torch.where(hit, PARTIAL, NONE).to(torch.uint8)[None]
        return torch.maximum(local, strided)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        d = positions(shape, i) - j
        return (d.abs() < self.stride) | (torch.remainder(d, self.stride) == 0)
