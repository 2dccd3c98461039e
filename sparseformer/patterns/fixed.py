"""``Fixed``: the fixed pattern of Child et al. (2019), with DeepSpeed's ``FixedSparsityConfig``
parameters and block layouts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern, Shape, check_choice, check_int
from .block_local import BlockLocal
from .causal import Causal
from .compose import PerHead
from .global_tokens import Global


@dataclass(frozen=True)
class Fixed(Pattern):
    """Fixed local windows plus "summary" key blocks that carry information across windows.

    In blocks (``r = p // bs``, ``c = j // bs``, ``nb`` = number of key blocks, ``L =
    num_local_blocks``, ``G = num_global_blocks``, ``P = num_different_global_patterns``):

    * local: ``r // L == c // L`` (disjoint windows ``[kL, kL + L)``; the last may be short);
    * summary: head ``h`` uses offset ``f = L - (1 + h % P) * G``; in every full window ``k``
      (``kL + f < nb - nb % L``) the blocks ``[kL + f, kL + f + G)`` are summary blocks, and in a
      short last window the blocks ``[s, s + G)`` with ``s = min((nb - nb % L) + f, nb - G)``.
      Every query attends to summary keys; with ``horizontal_global_attention`` summary queries
      also attend to every key.
    * ``attention="unidirectional"`` adds ``p >= j`` on every pair. (DeepSpeed's own
      unidirectional layout with ``G >= 2`` also lets a summary group's first row block see the
      group's later blocks, i.e. the future; we keep causality exact instead.)

    ``P > 1`` needs ``different_layout_per_head=True``. Same validation as DeepSpeed.
    """

    num_local_blocks: int = 4
    num_global_blocks: int = 1
    attention: str = "bidirectional"
    horizontal_global_attention: bool = False
    num_different_global_patterns: int = 1
    different_layout_per_head: bool = False

    def __post_init__(self) -> None:
        L = check_int("num_local_blocks", self.num_local_blocks)
        G = check_int("num_global_blocks", self.num_global_blocks)
        P = check_int("num_different_global_patterns", self.num_different_global_patterns)
        if L % G != 0:
            raise ValueError(f"num_local_blocks ({L}) must be divisible by num_global_blocks ({G})")
        check_choice("attention", self.attention, ("bidirectional", "unidirectional"))
        if self.horizontal_global_attention and self.attention != "bidirectional":
            raise ValueError("horizontal_global_attention=True needs attention='bidirectional'")
        if P > 1 and not self.different_layout_per_head:
            raise ValueError(f"num_different_global_patterns={P} needs different_layout_per_head=True")
        if P > L // G:
            raise ValueError(
                f"num_different_global_patterns ({P}) must be <= num_local_blocks // num_global_blocks ({L // G})"
            )

    def summary_blocks(self, nb: int, h: int) -> tuple[int, ...]:
        """Indices of head ``h``'s summary key blocks among ``nb`` key blocks."""
        L, G = self.num_local_blocks, self.num_global_blocks
        f = L - (1 + h % self.num_different_global_patterns) * G
        whole = nb - nb % L
        out = [b for k in range(0, whole, L) if k + f < whole for b in range(k + f, k + f + G)]
        if nb % L:
            s = min(whole + f, nb - G)
            out += range(max(s, 0), s + G)
        return tuple(b for b in out if 0 <= b < nb)

    def _head(self, shape: Shape, h: int) -> Pattern:
        local = BlockLocal(self.num_local_blocks * shape.block_size)
        summary = self.summary_blocks(shape.nk, h)
        p = local | Global(blocks=summary, horizontal=self.horizontal_global_attention) if summary else local
        return p & Causal() if self.attention == "unidirectional" else p

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        if self.num_different_global_patterns == 1:
            return self._head(shape, 0)
        return PerHead(*(self._head(shape, h) for h in range(shape.num_heads)))
