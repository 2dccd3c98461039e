"""Presets written as compositions: ``BigBird`` and ``Longformer`` with DeepSpeed's parameter
names (``BigBirdSparsityConfig``, ``BSLongformerSparsityConfig``), and ``from_deepspeed``."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Pattern, check_choice, check_int
from .causal import Causal
from .fixed import Fixed
from .global_tokens import Global
from .random_blocks import RandomBlocks
from .sliding_window import SlidingWindow


def BigBird(  # noqa: N802 - reads as a pattern class
    num_random_blocks: int = 1,
    num_sliding_window_blocks: int = 3,
    num_global_blocks: int = 1,
    attention: str = "bidirectional",
    *,
    seed: int = 0,
    reweight: bool = True,
) -> Pattern:
    """BigBird (Zaheer et al. 2020): in blocks, ``|r - c| <= num_sliding_window_blocks // 2``, or
    ``r < G`` or ``c < G`` (``G = num_global_blocks``), plus ``num_random_blocks`` re-weighted
    random key blocks per query block (:class:`RandomBlocks`) drawn among the others;
    ``attention="unidirectional"`` adds ``p >= j``. Same sliding and global blocks as DeepSpeed."""
    check_int("num_sliding_window_blocks", num_sliding_window_blocks)
    check_int("num_global_blocks", num_global_blocks)
    check_choice("attention", attention, ("bidirectional", "unidirectional"))
    p: Pattern = SlidingWindow(num_sliding_window_blocks // 2, unit="block") | Global(blocks=num_global_blocks)
    if num_random_blocks:
        p = p | RandomBlocks(check_int("num_random_blocks", num_random_blocks), seed=seed, reweight=reweight)
    return p & Causal() if attention == "unidirectional" else p


def Longformer(  # noqa: N802
    num_sliding_window_blocks: int = 3,
    global_block_indices: Sequence[int] = (0,),
    global_block_end_indices: Sequence[int] | None = None,
    attention: str = "bidirectional",
) -> Pattern:
    """Longformer (Beltagy et al. 2020), block-sparse as DeepSpeed's ``BSLongformerSparsityConfig``:
    ``|r - c| <= num_sliding_window_blocks // 2``, plus global blocks (attending to and attended by
    all): the blocks ``global_block_indices``, or with ``global_block_end_indices`` the ranges
    ``[start, end)``. ``attention="unidirectional"`` adds ``p >= j``. Indices must be >= 0."""
    check_int("num_sliding_window_blocks", num_sliding_window_blocks)
    check_choice("attention", attention, ("bidirectional", "unidirectional"))
    starts = list(global_block_indices)
    if global_block_end_indices is None:
        blocks = starts
    else:
        ends = list(global_block_end_indices)
        if len(ends) != len(starts):
            raise ValueError(
                f"global_block_end_indices has {len(ends)} entries, global_block_indices {len(starts)}; they must match"
            )
        for s, e in zip(starts, ends):
            if s >= e:
                raise ValueError(f"global block start index {s} must be smaller than its end index {e}")
        blocks = [b for s, e in zip(starts, ends) for b in range(s, e)]
    p: Pattern = SlidingWindow(num_sliding_window_blocks // 2, unit="block")
    if blocks:
        p = p | Global(blocks=tuple(blocks))
    return p & Causal() if attention == "unidirectional" else p


def from_deepspeed(config: object) -> tuple[Pattern, int]:
    """The pattern and block size of a DeepSpeed sparsity config object (duck-typed by class name:
    ``FixedSparsityConfig``, ``BigBirdSparsityConfig``, ``BSLongformerSparsityConfig``,
    ``DenseSparsityConfig``)."""
    from .dense import Dense

    name = type(config).__name__
    get = lambda attr, default=None: getattr(config, attr, default)  # noqa: E731
    block = get("block", 16)
    if name == "FixedSparsityConfig":
        p: Pattern = Fixed(
            num_local_blocks=get("num_local_blocks"),
            num_global_blocks=get("num_global_blocks"),
            attention=get("attention"),
            horizontal_global_attention=get("horizontal_global_attention"),
            num_different_global_patterns=get("num_different_global_patterns"),
            different_layout_per_head=get("different_layout_per_head", False),
        )
    elif name == "BigBirdSparsityConfig":
        p = BigBird(
            get("num_random_blocks"), get("num_sliding_window_blocks"), get("num_global_blocks"), get("attention")
        )
    elif name == "BSLongformerSparsityConfig":
        p = Longformer(
            get("num_sliding_window_blocks"),
            get("global_block_indices"),
            get("global_block_end_indices"),
            get("attention", "bidirectional"),
        )
    elif name == "DenseSparsityConfig":
        p = Dense()
    else:
        raise TypeError(f"config must be a DeepSpeed sparsity config, got {name}")
    return p, block
