"""Patterns as JSON-able dicts, so that a pattern can live in a Hugging Face ``config.json``.

``to_spec(P.SlidingWindow(1, unit="block") | P.Global(tokens=1))`` gives
``{"type": "Union", "parts": [{"type": "SlidingWindow", "left": 1, ...}, {"type": "Global", ...}]}``:
a pattern's class name under ``"type"`` and its dataclass fields, nested patterns as nested dicts,
tuples as lists. ``from_spec`` inverts it: ``from_spec(to_spec(p)) == p``.
"""

from __future__ import annotations

import dataclasses

from .. import patterns as P


def to_spec(pattern: P.Pattern) -> dict:
    """The JSON-able dict of ``pattern`` (see the module doc)."""
    if not isinstance(pattern, P.Pattern) or not dataclasses.is_dataclass(pattern):
        raise TypeError(f"pattern must be a sparseformer pattern (e.g. P.Dense()), got {type(pattern).__name__}")
    name = type(pattern).__name__
    if getattr(P, name, None) is not type(pattern):
        raise TypeError(f"pattern type {name} is not exported by sparseformer.patterns, so it cannot be stored")
    return {"type": name, **{f.name: _value(getattr(pattern, f.name)) for f in dataclasses.fields(pattern)}}


def _value(v):
    if isinstance(v, P.Pattern):
        return to_spec(v)
    if isinstance(v, (tuple, list)):
        return [_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot store a pattern field of type {type(v).__name__} ({v!r})")


def from_spec(spec: dict) -> P.Pattern:
    """The pattern that :func:`to_spec` stored as ``spec``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise TypeError(f"spec must be a dict with a 'type' key, got {spec!r}")
    cls = getattr(P, spec["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, P.Pattern)):
        raise ValueError(f"spec['type'] must name a pattern of sparseformer.patterns, got {spec['type']!r}")
    kwargs = {k: _load(v) for k, v in spec.items() if k != "type"}
    if cls is P.PerHead:  # PerHead(*patterns)
        return cls(*kwargs["patterns"])
    return cls(**kwargs)


def _load(v):
    if isinstance(v, dict):
        return from_spec(v)
    if isinstance(v, list):
        return tuple(_load(x) for x in v)
    return v
