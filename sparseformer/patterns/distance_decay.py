"""``DistanceDecay``: the seed's distance-based attention, a decay ``exp(-rate * |p - j|)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import FULL, Pattern, Shape, decay_width, distance_states, positions


def alibi_slopes(num_heads: int) -> tuple[float, ...]:
    """ALiBi's geometric slopes (Press et al. 2022): head ``h`` gets ``2 ** (-8 (h + 1) / n)``
    for ``n = num_heads`` a power of two; otherwise the slopes of the next power of two below,
    then every other slope of the one above, as in the paper's reference code."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def pow2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    low = 2 ** math.floor(math.log2(num_heads))
    slopes = pow2(low)
    if low < num_heads:
        slopes += pow2(2 * low)[0::2][: num_heads - low]
    return tuple(slopes)


@dataclass(frozen=True)
class DistanceDecay(Pattern):
    """Score bias ``-rate[h] * |p - j|`` on every attending pair.

    ``rate`` is one float for all heads or a sequence with one rate per head (e.g.
    :func:`alibi_slopes`). The attention weight of a pair is thereby multiplied by
    ``exp(-rate * |p - j|)``. Without ``eps`` every pair attends (dense, biased). With ``eps``
    in (0, 1) the pairs whose factor falls under ``eps`` are dropped: the pair attends iff
    ``|p - j| <= floor(ln(1/eps) / rate[h])``, a band, hence sparse.
    """

    rate: float | tuple[float, ...]
    eps: float | None = None

    def __post_init__(self) -> None:
        rates = self.rate if isinstance(self.rate, (tuple, list)) else (self.rate,)
        for r in rates:
            if isinstance(r, bool) or not isinstance(r, (int, float)):
                raise TypeError(f"rate must be a float or a sequence of floats, got {type(r).__name__}")
            if not r > 0 or math.isinf(r):
                raise ValueError(f"rate must be > 0 and finite, got {r}")
        if isinstance(self.rate, list):
            object.__setattr__(self, "rate", tuple(float(r) for r in self.rate))
        if self.eps is not None and not (0 < self.eps < 1):
            raise ValueError(f"eps must lie in the open interval (0, 1), got {self.eps}")

    def _rates(self, shape: Shape) -> tuple[float, ...]:
        if not isinstance(self.rate, tuple):
            return (float(self.rate),) * shape.num_heads
        if len(self.rate) != shape.num_heads:
            raise ValueError(
                f"DistanceDecay has {len(self.rate)} rates but the layout has num_heads={shape.num_heads}; "
                "give one rate per head or a single float"
            )
        return self.rate

    def _widths(self, shape: Shape) -> list[float]:
        if self.eps is None:
            return [math.inf] * shape.num_heads
        return [decay_width(r, self.eps) for r in self._rates(shape)]

    @property
    def _shift_invariant(self) -> bool:
        return True

    def _states(self, shape: Shape) -> torch.Tensor:
        widths = self._widths(shape)
        if self.eps is None:
            return torch.full((1, shape.nq, shape.nk), FULL, dtype=torch.uint8)
        if len(set(widths)) == 1:
            return distance_states(shape, -widths[0], widths[0])
        return torch.cat([distance_states(shape, -w, w) for w in widths])

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        w = self._widths(shape)[h]
        return (positions(shape, i) - j).abs() <= w

    def _slopes(self, shape: Shape) -> torch.Tensor:
        return torch.tensor(self._rates(shape), dtype=torch.float64)
