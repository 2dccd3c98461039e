"""``RandomBlocks``: the seed's random sparse attention, re-weighted to stay unbiased."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FULL, NONE, Pattern, Shape, check_int


@dataclass(frozen=True)
class RandomBlocks(Pattern):
    """Each query tile also visits ``n`` key tiles sampled uniformly without replacement.

    The candidates of a query tile (per head) are the key tiles in which the rest of the
    pattern keeps no pair (in a union: its other parts; under ``causal`` or an intersection:
    only tiles where a pair may attend at all). If a row has ``C`` candidates, ``min(n, C)``
    are drawn, and with ``reweight=True`` every score in a drawn tile gets ``+log(C / min(n, C))``.
    Then the numerator and the denominator of the softmax over the drawn candidates are
    unbiased estimates of their sums over all candidates, so the output is the self-normalised
    importance-sampling estimate of attention over kept + candidate keys.

    Draws use ``torch.Generator`` seeded with ``seed`` on the CPU, heads in order, so a seed gives
    the same blocks on every device. Every pair in a drawn tile attends.
    """

    n: int
    seed: int = 0
    reweight: bool = True

    def __post_init__(self) -> None:
        check_int("n", self.n)
        check_int("seed", self.seed, minimum=0)

    @property
    def _fills_gaps(self) -> bool:
        return True

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        h, nq, nk = shape.num_heads, shape.nq, shape.nk
        free = torch.ones(h, nq, nk, dtype=torch.bool) if allowed is None else allowed.expand(h, nq, nk)
        gen = torch.Generator().manual_seed(self.seed)
        keys = torch.rand(h, nq, nk, generator=gen, dtype=torch.float64)
        keys = keys.masked_fill(~free, -1.0)
        k = min(self.n, nk)
        top = keys.topk(k, dim=-1).indices  # [H, nq, k]
        drawn = torch.zeros(h, nq, nk, dtype=torch.bool)
        drawn.scatter_(-1, top, True)
        drawn &= free
        count = free.sum(-1, keepdim=True).double()  # C per row, [H, nq, 1]
        taken = drawn.sum(-1, keepdim=True).double()  # min(n, C)
        logw = torch.log(count / taken.clamp(min=1)) if self.reweight else torch.zeros_like(count)
        return SampledBlocks(drawn, torch.where(drawn, logw, 0.0))


class SampledBlocks(Pattern):
    """The tiles a :class:`RandomBlocks` drew for one shape (not built by users)."""

    def __init__(self, drawn: torch.Tensor, logw: torch.Tensor) -> None:
        self.drawn = drawn  # bool [H, nq, nk]
        self.logw = logw  # float64 [H, nq, nk]

    def _states(self, shape: Shape) -> torch.Tensor:
        return torch.where(self.drawn, FULL, NONE).to(torch.uint8)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        bs = shape.block_size
        return self.drawn[h][i // bs, j // bs]

    def _logw(self, shape: Shape) -> torch.Tensor:
        return self.logw
