"""``sparsify``: switch a loaded transformers model to sparse attention, in place."""

from __future__ import annotations

from .. import patterns as P
from .attention import NAME, config_entry, register


def _configs(model) -> list:
    """The model's config and every distinct config of its sub-models."""
    seen: dict[int, object] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def sparsify(
    model, pattern: P.Pattern, *, block_size: int = 64, backend: str = "auto", layers: list[int] | None = None
):
    """Make the attention layers of ``model`` (a transformers ``PreTrainedModel``) use ``pattern``:
    every layer, or with ``layers`` only those whose ``layer_idx`` is listed (0-based, each
    ``< config.num_hidden_layers``); the others keep exact dense attention.

    Sets ``config.sparseformer = config_entry(pattern, block_size=..., backend=..., layers=...)`` on
    the model's configs and switches them to ``attn_implementation="sparseformer"``. Decoder layers
    (those with ``is_causal``) compile the pattern with ``causal=True``. With ``P.Dense()`` the
    model computes what it computed before. Returns ``model``.
    """
    from ._deps import require

    transformers = require("transformers")
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    entry = config_entry(pattern, block_size=block_size, backend=backend, layers=layers)
    n = getattr(model.config, "num_hidden_layers", None)
    if layers is not None and n is not None and max(layers) >= n:
        raise ValueError(f"layers must be indices below num_hidden_layers={n}, got {sorted(layers)}")
    register()
    for cfg in _configs(model):
        setattr(cfg, NAME, entry)
    model.set_attn_implementation(NAME)
    if model.config._attn_implementation != NAME:
        raise ValueError(f"{type(model).__name__} does not dispatch attention through transformers' AttentionInterface")
    return model
