"""The attention strategies that ``sparseformer train`` names and ``sparseformer study`` compares.

Every sparse strategy keeps the same local part, a causal sliding window of ``window_blocks``
key blocks before the query's own block (query block ``r`` sees key blocks ``r - window_blocks
.. r``, causal within block ``r``), and adds one thing:

* ``dense``: no pattern; every causal pair, computed by ``scaled_dot_product_attention(is_causal=True)``;
* ``sliding``: the window alone;
* ``sliding+global``: plus the first key block, seen by every query (and seeing all before it);
* ``bigbird``: plus ``random_blocks`` key blocks per query block, drawn among the causal blocks the
  rest leaves empty (seed 0), scores re-weighted by ``+log(C / n)`` (:class:`~sparseformer.patterns.RandomBlocks`);
* ``bigbird-noreweight``: the same blocks (same seed) without the ``log(C / n)`` term;
* ``decay``: instead of the window, a distance decay ``-rate * (p - j)`` truncated where
  ``exp(-rate * (p - j)) < 0.01``, i.e. at ``p - j <= (window_blocks + 1) * block_size`` tokens;
* ``strided-sample``: sliding + global plus every ``stride``-th key of the remaining causal
  blocks, shifted per query and head, re-weighted by ``+log(stride)``
  (:class:`~sparseformer.patterns.StridedSample`).

``code`` is the Python expression (with ``from sparseformer import patterns as P``) that builds
each pattern; ``build`` evaluates exactly that expression, so the printed line is what ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import patterns as P
from ..patterns.base import Pattern

DENSE = "dense"
NAMES = (DENSE, "sliding", "sliding+global", "bigbird", "bigbird-noreweight", "decay", "strided-sample")


@dataclass(frozen=True)
class Geometry:
    """The sizes every strategy is built from (module doc)."""

    block_size: int = 64
    window_blocks: int = 3
    random_blocks: int = 2
    stride: int = 16

    def __post_init__(self) -> None:
        for name in ("block_size", "window_blocks", "random_blocks", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def code(name: str, g: Geometry) -> str | None:
    """The Python expression of strategy ``name``, or None for ``dense``."""
    window = f'P.SlidingWindow({g.window_blocks}, right=0, unit="block")'
    rate = float(f"{math.log(100) / ((g.window_blocks + 1) * g.block_size):.4g}")
    codes = {
        DENSE: None,
        "sliding": window,
        "sliding+global": f"{window} | P.Global(blocks=1)",
        "bigbird": f"{window} | P.Global(blocks=1) | P.RandomBlocks({g.random_blocks}, seed=0)",
        "bigbird-noreweight": f"{window} | P.Global(blocks=1) | P.RandomBlocks({g.random_blocks}, seed=0, reweight=False)",
        "decay": f"P.DistanceDecay({rate}, eps=0.01)",
        "strided-sample": f"{window} | P.Global(blocks=1) | P.StridedSample({g.stride})",
    }
    if name not in codes:
        raise ValueError(f"strategy must be one of {list(NAMES)}, got {name!r}")
    return codes[name]


def build(name: str, g: Geometry) -> Pattern | None:
    """The pattern of strategy ``name`` (None: dense SDPA)."""
    expr = code(name, g)
    return None if expr is None else eval(expr, {"P": P})  # our own fixed expressions (see ``code``)
