"""Sparse attention patterns: which (query, key) pairs attend and how their scores change.

See :mod:`sparseformer.patterns.base` for the coordinates every definition uses.
"""

from .base import Pattern, Shape
from .block_local import BlockLocal
from .causal import Causal
from .compose import Intersection, PerHead, Union
from .dense import Dense
from .dilated import Dilated
from .distance_decay import DistanceDecay, alibi_slopes
from .fixed import Fixed
from .global_tokens import Global
from .presets import BigBird, Longformer, from_deepspeed
from .random_blocks import RandomBlocks
from .sliding_window import SlidingWindow
from .strided import Strided
from .strided_sample import StridedSample

__all__ = [
    "BigBird",
    "BlockLocal",
    "Causal",
    "Dense",
    "Dilated",
    "DistanceDecay",
    "Fixed",
    "Global",
    "Intersection",
    "Longformer",
    "Pattern",
    "PerHead",
    "RandomBlocks",
    "Shape",
    "SlidingWindow",
    "Strided",
    "StridedSample",
    "Union",
    "alibi_slopes",
    "from_deepspeed",
]
