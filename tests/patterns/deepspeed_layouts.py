"""Test oracle mirroring DeepSpeed's block-sparse attention layouts.

This module is an independent, self-contained re-implementation (torch only, no
``deepspeed`` import) of ``make_layout(seq_len)`` of ``FixedSparsityConfig``,
``BigBirdSparsityConfig`` and ``BSLongformerSparsityConfig`` from
``deepspeed/ops/sparse_attention/sparsity_config.py`` in the microsoft/DeepSpeed
repository (file last changed by commit c8d3f5eb1, "fix typo in comments with
deepspeed/ (#3537)"; checked against HEAD 38327e07f6cd, Feb 2025).

It exists so that tests can compare sparseformer's layouts against DeepSpeed's
exact semantics, quirks included:

* every function returns an ``int64`` tensor of shape ``(num_heads, nb, nb)``
  with ``nb = seq_len // block``; entry ``[h, r, c] == 1`` means query block
  row ``r`` attends to key block column ``c`` in head ``h``;
* DeepSpeed's default argument values are kept;
* DeepSpeed's validation errors are raised as ``ValueError``; DeepSpeed's
  ``NotImplementedError`` for an unknown ``attention`` string is raised as
  :class:`UnsupportedAttentionError`, which subclasses both ``ValueError`` and
  ``NotImplementedError``;
* ``different_layout_per_head=False`` computes head 0 only and copies it to all
  heads (as DeepSpeed's ``check_and_propagate_first_head_layout`` does).

BigBird's random blocks are excluded by default (``include_random=False``),
because sparseformer's random blocks differ by design.  With
``include_random=True`` they are drawn like DeepSpeed does (``random.sample``
per row), from ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

__all__ = [
    "UnsupportedAttentionError",
    "fixed_layout",
    "bigbird_layout",
    "longformer_layout",
]

_ATTENTIONS = ("unidirectional", "bidirectional")


class UnsupportedAttentionError(ValueError, NotImplementedError):
    """Unknown ``attention`` string (DeepSpeed raises ``NotImplementedError``)."""


# ---------------------------------------------------------------------------
# shared helpers (SparsityConfig base class)
# ---------------------------------------------------------------------------


def _check_attention(attention: str) -> None:
    if attention != "unidirectional" and attention != "bidirectional":
        raise UnsupportedAttentionError('only "uni/bi-directional" attentions are supported for now!')


def _setup_layout(seq_len: int, num_heads: int, block: int) -> torch.Tensor:
    """SparsityConfig.setup_layout: zero layout, seq_len must be a multiple of block."""
    if seq_len % block != 0:
        raise ValueError(f"Sequence Length, {seq_len}, needs to be dividable by Block size {block}!")
    num_blocks = seq_len // block
    return torch.zeros((num_heads, num_blocks, num_blocks), dtype=torch.int64)


def _num_layout_heads(num_heads: int, different_layout_per_head: bool) -> int:
    return num_heads if different_layout_per_head else 1


def _propagate_first_head(layout: torch.Tensor, num_heads: int, different_layout_per_head: bool) -> torch.Tensor:
    """SparsityConfig.check_and_propagate_first_head_layout."""
    if not different_layout_per_head:
        layout[1:num_heads, :, :] = layout[0, :, :]
    return layout


def _check_global_end_indices(
    global_block_indices: Sequence[int], global_block_end_indices: Sequence[int] | None
) -> None:
    if global_block_end_indices is None:
        return
    if len(global_block_indices) != len(global_block_end_indices):
        raise ValueError(
            f"Global block start indices length, {len(global_block_indices)}, must be same as "
            f"global block end indices length, {len(global_block_end_indices)}!"
        )
    for start_idx, end_idx in zip(global_block_indices, global_block_end_indices):
        if start_idx >= end_idx:
            raise ValueError(
                f"Global block start index, {start_idx}, must be smaller than global block end index, {end_idx}!"
            )


def _set_sliding_window(layout: torch.Tensor, h: int, num_sliding_window_blocks: int) -> None:
    """BigBird/BSLongformer set_sliding_window_layout: |row - col| <= w, w = n // 2 (symmetric)."""
    num_blocks = layout.shape[1]
    if num_blocks < num_sliding_window_blocks:
        raise ValueError(
            f"Number of sliding window blocks, {num_sliding_window_blocks}, must be smaller than "
            f"overall number of blocks in a row, {num_blocks}!"
        )
    w = num_sliding_window_blocks // 2
    for row in range(num_blocks):
        start = max(0, row - w)
        end = min(row + w + 1, num_blocks)
        layout[h, row, start:end] = 1


# ---------------------------------------------------------------------------
# Fixed
# ---------------------------------------------------------------------------


def fixed_layout(
    seq_len: int,
    *,
    num_heads: int,
    block: int = 16,
    different_layout_per_head: bool = False,
    num_local_blocks: int = 4,
    num_global_blocks: int = 1,
    attention: str = "bidirectional",
    horizontal_global_attention: bool = False,
    num_different_global_patterns: int = 1,
) -> torch.Tensor:
    """FixedSparsityConfig(...).make_layout(seq_len)."""
    # __init__ validation, in DeepSpeed's order
    if num_local_blocks % num_global_blocks != 0:
        raise ValueError(
            f"Number of blocks in a local window, {num_local_blocks}, must be dividable by number of "
            f"global blocks, {num_global_blocks}!"
        )
    _check_attention(attention)
    if attention != "bidirectional" and horizontal_global_attention:
        raise ValueError('only "bi-directional" attentions can support horizontal global attention!')
    if num_different_global_patterns > 1 and not different_layout_per_head:
        raise ValueError(
            "Number of different layouts cannot be more than one when you have set a single layout "
            "for all heads! Set different_layout_per_head to True."
        )
    if num_different_global_patterns > (num_local_blocks // num_global_blocks):
        raise ValueError(
            f"Number of layout versions (num_different_global_patterns), {num_different_global_patterns}, "
            f"cannot be larger than number of local window blocks divided by number of global blocks, "
            f"{num_local_blocks} / {num_global_blocks} = {num_local_blocks // num_global_blocks}!"
        )

    layout = _setup_layout(seq_len, num_heads, block)
    num_blocks = layout.shape[1]
    unidirectional = attention == "unidirectional"
    L, G = num_local_blocks, num_global_blocks

    for h in range(_num_layout_heads(num_heads, different_layout_per_head)):
        # local: disjoint windows [i, min(i + L, nb)); causal inside the window if unidirectional
        for i in range(0, num_blocks, L):
            end = min(i + L, num_blocks)
            for row in range(i, end):
                for col in range(i, row + 1 if unidirectional else end):
                    layout[h, row, col] = 1

        # global: G consecutive representative blocks per window, counted from the window's end;
        # head h uses pattern h % num_different_global_patterns
        first_global_block_idx = L - (1 + h % num_different_global_patterns) * G
        end = num_blocks - (num_blocks % L)
        for i in range(first_global_block_idx, end, L):
            first_row = 0 if attention == "bidirectional" else i
            layout[h, first_row:, i : i + G] = 1
            if horizontal_global_attention:
                layout[h, i : i + G, :] = 1

        # short last window
        if end < num_blocks:
            start = min(end + first_global_block_idx, num_blocks - G)
            end = start + G
            first_row = 0 if attention == "bidirectional" else start
            layout[h, first_row:, start:end] = 1
            if horizontal_global_attention:
                layout[h, start:end, :] = 1

    return _propagate_first_head(layout, num_heads, different_layout_per_head)


# ---------------------------------------------------------------------------
# BigBird
# ---------------------------------------------------------------------------


def bigbird_layout(
    seq_len: int,
    *,
    num_heads: int,
    block: int = 16,
    different_layout_per_head: bool = False,
    num_random_blocks: int = 1,
    num_sliding_window_blocks: int = 3,
    num_global_blocks: int = 1,
    attention: str = "bidirectional",
    include_random: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """BigBirdSparsityConfig(...).make_layout(seq_len), random part only if include_random."""
    _check_attention(attention)
    layout = _setup_layout(seq_len, num_heads, block)
    num_blocks = layout.shape[1]
    rng = random.Random(seed)

    for h in range(_num_layout_heads(num_heads, different_layout_per_head)):
        # random (the size check always runs, as in DeepSpeed, even when the blocks are not drawn)
        if num_blocks < num_random_blocks:
            raise ValueError(
                f"Number of random blocks, {num_random_blocks}, must be smaller than overall number of "
                f"blocks in a row, {num_blocks}!"
            )
        if include_random:
            for row in range(num_blocks):
                sample_range = range(0, num_blocks) if attention == "bidirectional" else range(0, row + 1)
                # NB: like DeepSpeed, raises ValueError (from random.sample) when
                # unidirectional and row + 1 < num_random_blocks.
                rnd_cols = rng.sample(sample_range, num_random_blocks)
                layout[h, row, rnd_cols] = 1

        _set_sliding_window(layout, h, num_sliding_window_blocks)

        # global rows and columns [0, G)
        if num_blocks < num_global_blocks:
            raise ValueError(
                f"Number of global blocks, {num_global_blocks}, must be smaller than overall number of "
                f"blocks in a row, {num_blocks}!"
            )
        layout[h, 0:num_global_blocks, :] = 1
        layout[h, :, 0:num_global_blocks] = 1
        if attention == "unidirectional":
            layout = torch.tril(layout)  # masks everything set so far (window, random, global)

    return _propagate_first_head(layout, num_heads, different_layout_per_head)


# ---------------------------------------------------------------------------
# BSLongformer
# ---------------------------------------------------------------------------


def longformer_layout(
    seq_len: int,
    *,
    num_heads: int,
    block: int = 16,
    different_layout_per_head: bool = False,
    num_sliding_window_blocks: int = 3,
    global_block_indices: Sequence[int] = (0,),
    global_block_end_indices: Sequence[int] | None = None,
    attention: str = "bidirectional",
) -> torch.Tensor:
    """BSLongformerSparsityConfig(...).make_layout(seq_len).

    Like DeepSpeed, ``attention`` is not validated: any value other than
    ``"unidirectional"`` behaves as bidirectional.
    """
    _check_global_end_indices(global_block_indices, global_block_end_indices)
    layout = _setup_layout(seq_len, num_heads, block)
    num_blocks = layout.shape[1]

    for h in range(_num_layout_heads(num_heads, different_layout_per_head)):
        _set_sliding_window(layout, h, num_sliding_window_blocks)

        if global_block_end_indices is None:
            for idx in global_block_indices:
                if idx < num_blocks:  # out-of-range indices are silently ignored
                    layout[h, idx, :] = 1
                    layout[h, :, idx] = 1
        else:
            for start_idx, end_idx in zip(global_block_indices, global_block_end_indices):
                if start_idx < num_blocks:
                    end_idx = min(end_idx, num_blocks)
                    layout[h, start_idx:end_idx, :] = 1
                    layout[h, :, start_idx:end_idx] = 1
        if attention == "unidirectional":
            layout = torch.tril(layout)

    return _propagate_first_head(layout, num_heads, different_layout_per_head)


if __name__ == "__main__":

    def _show(title: str, layout: torch.Tensor) -> None:
        print(f"{title}  shape={tuple(layout.shape)}")
        for h in range(layout.shape[0]):
            print(f"  head {h}:")
            for row in layout[h].tolist():
                print("    " + " ".join("#" if v else "." for v in row))

    _show("fixed bi L=4 G=1 nb=10", fixed_layout(160, num_heads=1, block=16))
    _show(
        "fixed uni L=4 G=2 nb=10",
        fixed_layout(10, num_heads=1, block=1, num_global_blocks=2, attention="unidirectional"),
    )
    _show(
        "fixed bi horizontal, 2 patterns, L=4 G=1 nb=8",
        fixed_layout(
            8,
            num_heads=2,
            block=1,
            different_layout_per_head=True,
            horizontal_global_attention=True,
            num_different_global_patterns=2,
        ),
    )
    _show("bigbird bi W=3 G=1 nb=8", bigbird_layout(8, num_heads=1, block=1))
    _show(
        "bigbird uni W=3 G=2 nb=8",
        bigbird_layout(8, num_heads=1, block=1, num_global_blocks=2, attention="unidirectional"),
    )
    _show(
        "longformer bi W=3 globals (0, 5) nb=8", longformer_layout(8, num_heads=1, block=1, global_block_indices=(0, 5))
    )
    _show(
        "longformer uni W=5 globals [1,3) nb=8",
        longformer_layout(
            8,
            num_heads=1,
            block=1,
            num_sliding_window_blocks=5,
            global_block_indices=[1],
            global_block_end_indices=[3],
            attention="unidirectional",
        ),
    )
    for bad in (
        lambda: fixed_layout(64, num_heads=1, num_local_blocks=4, num_global_blocks=3),
        lambda: fixed_layout(64, num_heads=1, attention="causal"),
        lambda: bigbird_layout(30, num_heads=1),
        lambda: longformer_layout(64, num_heads=1, global_block_indices=[2], global_block_end_indices=[2]),
    ):
        try:
            bad()
        except ValueError as exc:
            print(f"ValueError ({type(exc).__name__}): {exc}")
