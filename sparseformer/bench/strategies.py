"""The strategies the benchmark compares: a name, the pattern for a block size, and the one line
of Python that builds that pattern (what the recommendation prints)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .. import patterns as P
from ..patterns.base import Pattern

DENSE = "dense"  # the baseline: nn.TransformerEncoderLayer with F.scaled_dot_product_attention


@dataclass(frozen=True)
class Strategy:
    """``code(block_size)`` is a Python expression (with ``from sparseformer import patterns as P``)
    whose value equals ``build(block_size)``."""

    name: str
    code: Callable[[int], str]

    def build(self, block_size: int) -> Pattern:
        return eval(self.code(block_size), {"P": P})  # our own fixed expressions, so the printed line is what ran


def decay_rate(block_size: int, eps: float = 0.01) -> float:
    """The decay rate whose truncation width ``ln(1/eps) / rate`` is two blocks (4 significant digits)."""
    return float(f"{math.log(1 / eps) / (2 * block_size):.4g}")


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("block-local", lambda bs: "P.BlockLocal()"),
    Strategy("sliding", lambda bs: 'P.SlidingWindow(1, unit="block")'),
    Strategy("sliding+global", lambda bs: 'P.SlidingWindow(1, unit="block") | P.Global(blocks=1)'),
    Strategy(
        "bigbird",
        lambda bs: "P.BigBird(num_random_blocks=2, num_sliding_window_blocks=3, num_global_blocks=1, seed=0)",
    ),
    Strategy("distance-decay", lambda bs: f"P.DistanceDecay(rate={decay_rate(bs)}, eps=0.01)"),
    Strategy("strided", lambda bs: f"P.Strided(stride={4 * bs})"),
)

BY_NAME = {s.name: s for s in STRATEGIES}


def dense_code(hidden: int, heads: int) -> str:
    """The line that builds one layer of the dense baseline."""
    return (
        f"sparseformer.bench.workload.SDPAEncoderLayer({hidden}, {heads}, {4 * hidden}, 0.0, 'gelu', batch_first=True)"
    )
