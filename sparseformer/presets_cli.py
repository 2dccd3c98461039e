"""Named patterns for the command line (``sparseformer patterns NAME``)."""

from __future__ import annotations

from collections.abc import Callable

from . import patterns as P

# name -> (builder taking the block size, the Python line that builds it)
NAMED: dict[str, tuple[Callable[[], P.Pattern], str]] = {
    "dense": (lambda: P.Dense(), "P.Dense()"),
    "block-local": (lambda: P.BlockLocal(), "P.BlockLocal()"),
    "sliding": (lambda: P.SlidingWindow(1, unit="block"), 'P.SlidingWindow(1, unit="block")'),
    "sliding-global": (
        lambda: P.SlidingWindow(1, unit="block") | P.Global(blocks=1),
        'P.SlidingWindow(1, unit="block") | P.Global(blocks=1)',
    ),
    "bigbird": (lambda: P.BigBird(num_random_blocks=2), "P.BigBird(num_random_blocks=2)"),
    "longformer": (lambda: P.Longformer(), "P.Longformer()"),
    "random": (lambda: P.BlockLocal() | P.RandomBlocks(2), "P.BlockLocal() | P.RandomBlocks(2)"),
    "decay": (lambda: P.DistanceDecay(0.05, eps=1e-3), "P.DistanceDecay(0.05, eps=1e-3)"),
    "strided": (lambda: P.Strided(128), "P.Strided(128)"),
    "fixed": (lambda: P.Fixed(), "P.Fixed()"),
    "dilated": (lambda: P.Dilated(64, dilation=2), "P.Dilated(64, dilation=2)"),
}
