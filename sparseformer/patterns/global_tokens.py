"""``Global``: tokens that attend to every key and are attended by every query."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern, Shape, check_int, key_set_states, positions, query_set_states


def _as_indices(name: str, value: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | int | None:
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        if value is not None:
            check_int(name, value, minimum=0)
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            check_int(f"{name}[...]", v, minimum=0)
        return tuple(sorted(set(value)))
    raise TypeError(f"{name} must be an int (the first n) or a sequence of indices, got {type(value).__name__}")


@dataclass(frozen=True)
class Global(Pattern):
    """Global positions ``G``: every query attends to keys in ``G``; with ``horizontal=True``
    (default) queries in ``G`` also attend to every key.

    ``G`` is the union of ``tokens`` and ``blocks``. An int ``n`` means the first ``n``
    (``tokens=1`` is a [CLS] token, positions ``{0}``); a sequence lists indices. Block ``b``
    covers positions ``[b*bs, (b+1)*bs)`` (half-open, ``bs`` the layout block size). The pair
    ``(i, j)`` attends iff ``j in G`` or (``horizontal`` and ``p in G``). Indices beyond the
    sequence are ignored, so one pattern serves every length.
    """

    tokens: int | tuple[int, ...] | None = None
    blocks: int | tuple[int, ...] | None = None
    horizontal: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", _as_indices("tokens", self.tokens))
        object.__setattr__(self, "blocks", _as_indices("blocks", self.blocks))
        if self.tokens is None and self.blocks is None:
            raise ValueError("Global needs tokens or blocks, got neither")

    def _member(self, shape: Shape, pos: torch.Tensor) -> torch.Tensor:
        """Whether each position in ``pos`` is global."""
        bs = shape.block_size
        out = torch.zeros(pos.shape, dtype=torch.bool)
        for value, unit in ((self.tokens, pos), (self.blocks, torch.div(pos, bs, rounding_mode="floor"))):
            if value is None:
                continue
            if isinstance(value, int):
                out |= (unit >= 0) & (unit < value)
            else:
                out |= torch.isin(unit, torch.tensor(value, dtype=unit.dtype))
        return out

    def _states(self, shape: Shape) -> torch.Tensor:
        cols = key_set_states(shape, self._member(shape, torch.arange(shape.kv_len)))
        if not self.horizontal:
            return cols
        rows = query_set_states(shape, self._member(shape, positions(shape, torch.arange(shape.q_len))))
        return torch.maximum(cols, rows)

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        out = self._member(shape, j)
        if self.horizontal:
            out = out | self._member(shape, positions(shape, i))
        return out
