"""Composition: ``a | b`` (union), ``a & b`` (intersection) and per-head patterns.

A composed pattern keeps the union (or intersection) of its parts' pairs, and its score terms
are the sums of its parts' terms (decay slopes add; sampled-block log-weights add), applied to
every pair it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NONE, Pattern, Shape


def _sum_optional(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    out = present[0]
    for v in present[1:]:
        out = out + v
    return out


def fills_gaps(p: Pattern) -> bool:
    """Whether ``p`` contains a part that samples among the tiles the other parts leave empty
    (:class:`RandomBlocks`, :class:`StridedSample`)."""
    return p._fills_gaps or any(fills_gaps(c) for c in getattr(p, "parts", ()))


@dataclass(frozen=True)
class _Composite(Pattern):
    parts: tuple[Pattern, ...]

    @classmethod
    def of(cls, *parts: Pattern) -> Pattern:
        flat: list[Pattern] = []
        for p in parts:
            if not isinstance(p, Pattern):
                raise TypeError(f"can only compose Pattern objects, got {type(p).__name__}")
            flat.extend(p.parts if type(p) is cls else (p,))
        return cls(tuple(flat))

    @property
    def _shift_invariant(self) -> bool:
        return all(p._shift_invariant for p in self.parts)

    def _slopes(self, shape: Shape) -> torch.Tensor | None:
        return _sum_optional([p._slopes(shape) for p in self.parts])

    def _logw(self, shape: Shape) -> torch.Tensor | None:
        return _sum_optional([p._logw(shape) for p in self.parts])


@dataclass(frozen=True)
class Union(_Composite):
    """Pairs kept by any part (``a | b``). Gap-filling parts (:func:`fills_gaps`) draw or keep
    pairs only among the tiles the other parts leave empty."""

    def _states(self, shape: Shape) -> torch.Tensor:
        out = self.parts[0]._states(shape)
        for p in self.parts[1:]:
            out = torch.maximum(out, p._states(shape))
        return out

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        out = self.parts[0]._pairs(shape, h, i, j)
        for p in self.parts[1:]:
            out = out | p._pairs(shape, h, i, j)
        return out

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        from ..layout import exact_states

        fixed = [p._resolve(shape, allowed) for p in self.parts if not fills_gaps(p)]
        if len(fixed) == len(self.parts):
            return Union(tuple(fixed))
        resolved = list(fixed)
        free = allowed
        if fixed:
            base = exact_states(Union(tuple(fixed)), shape) == NONE
            free = base if allowed is None else allowed & base
        for p in self.parts:
            if fills_gaps(p):
                r = p._resolve(shape, free)
                resolved.append(r)
                taken = exact_states(r, shape) == NONE
                free = taken if free is None else free & taken
        return Union(tuple(resolved))


@dataclass(frozen=True)
class Intersection(_Composite):
    """Pairs kept by every part (``a & b``). Gap-filling parts (:func:`fills_gaps`) draw or keep
    pairs only where the other parts can keep a pair."""

    def _states(self, shape: Shape) -> torch.Tensor:
        out = self.parts[0]._states(shape)
        for p in self.parts[1:]:
            out = torch.minimum(out, p._states(shape))
        return out

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        out = self.parts[0]._pairs(shape, h, i, j)
        for p in self.parts[1:]:
            out = out & p._pairs(shape, h, i, j)
        return out

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        from ..layout import exact_states

        fixed = [p._resolve(shape, allowed) for p in self.parts if not fills_gaps(p)]
        if len(fixed) == len(self.parts):
            return Intersection(tuple(fixed))
        if fixed:
            ok = exact_states(Intersection(tuple(fixed)), shape) != NONE
            allowed = ok if allowed is None else allowed & ok
        rand = [p._resolve(shape, allowed) for p in self.parts if fills_gaps(p)]
        return Intersection(tuple(fixed + rand))


@dataclass(frozen=True)
class PerHead(Pattern):
    """Head ``h`` uses ``patterns[h]``; compile with ``num_heads == len(patterns)``."""

    patterns: tuple[Pattern, ...]

    def __init__(self, *patterns: Pattern) -> None:
        if len(patterns) == 1 and isinstance(patterns[0], (list, tuple)):
            patterns = tuple(patterns[0])
        if not patterns:
            raise ValueError("PerHead needs at least one pattern, got none")
        for p in patterns:
            if not isinstance(p, Pattern):
                raise TypeError(f"PerHead takes Pattern objects, got {type(p).__name__}")
        object.__setattr__(self, "patterns", tuple(patterns))

    @property
    def parts(self) -> tuple[Pattern, ...]:
        return self.patterns

    @property
    def _shift_invariant(self) -> bool:
        return all(p._shift_invariant for p in self.patterns)

    def _check(self, shape: Shape) -> None:
        if len(self.patterns) != shape.num_heads:
            raise ValueError(
                f"PerHead has {len(self.patterns)} patterns but the layout has num_heads={shape.num_heads}"
            )

    def _resolve(self, shape: Shape, allowed: torch.Tensor | None) -> Pattern:
        self._check(shape)
        out = []
        for h, p in enumerate(self.patterns):
            a = None if allowed is None else allowed[h if allowed.shape[0] > 1 else 0][None]
            r = p._resolve(shape, a)
            out.append(r)  # a gap-filling part resolves for every head; head h reads row h
        return PerHead(*out)

    def _states(self, shape: Shape) -> torch.Tensor:
        self._check(shape)
        rows = [p._states(shape) for p in self.patterns]
        return torch.cat([s[h if s.shape[0] > 1 else 0][None] for h, s in enumerate(rows)])

    def _pairs(self, shape: Shape, h: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return self.patterns[h]._pairs(shape, h, i, j)

    def _slopes(self, shape: Shape) -> torch.Tensor | None:
        per = [p._slopes(shape) for p in self.patterns]
        if all(s is None for s in per):
            return None
        return torch.stack(
            [s[h] if s is not None else torch.tensor(0.0, dtype=torch.float64) for h, s in enumerate(per)]
        )

    def _logw(self, shape: Shape) -> torch.Tensor | None:
        per = [p._logw(shape) for p in self.patterns]
        if all(w is None for w in per):
            return None
        zero = torch.zeros(1, shape.nq, shape.nk, dtype=torch.float64)
        return torch.cat(
            [
                (w if w is not None else zero)[h if w is not None and w.shape[0] > 1 else 0][None]
                for h, w in enumerate(per)
            ]
        )
