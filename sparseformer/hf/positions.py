"""``extend_positions``: grow a model's learned absolute position embeddings."""

from __future__ import annotations

import torch
from torch import nn

_POSITION_NAMES = ("position_embeddings", "wpe", "embed_positions")


def learned_position_tables(model) -> list[tuple[nn.Module, str, nn.Embedding]]:
    """(parent, attribute, embedding) for every learned absolute position table."""
    found = []
    for parent in model.modules():
        for attr in _POSITION_NAMES:
            emb = getattr(parent, attr, None)
            if isinstance(emb, nn.Embedding):
                found.append((parent, attr, emb))
    return found


def _tile(weight: torch.Tensor, new_max: int, offset: int) -> torch.Tensor:
    """Rows ``[0, offset)`` kept; the rest tiled: row ``offset + t`` is old row ``offset + t % n``."""
    n = weight.shape[0] - offset
    idx = torch.arange(new_max - offset) % n + offset
    return torch.cat([weight[:offset], weight[idx]])


def extend_positions(model, new_max: int):
    """Grow every learned position embedding of ``model`` to ``new_max`` positions, in place.

    Like DeepSpeed's ``extend_position_embedding``, the new table tiles the pretrained one: position
    ``p`` gets the pretrained embedding of ``p mod n`` (``n`` the old size; for tables with a
    ``padding_idx`` such as RoBERTa's, the first ``padding_idx + 1`` rows stay in place and the rest
    is tiled). Also resizes the ``position_ids`` / ``token_type_ids`` buffers beside the table and
    sets ``config.max_position_embeddings = new_max``. Shrinking is refused. Returns ``model``.
    """
    if isinstance(new_max, bool) or not isinstance(new_max, int) or new_max < 1:
        raise ValueError(f"new_max must be an int >= 1, got {new_max!r}")
    tables = learned_position_tables(model)
    if not tables:
        raise ValueError(f"{type(model).__name__} has no learned position embedding (names tried: {_POSITION_NAMES})")
    for parent, attr, emb in tables:
        old = emb.num_embeddings
        if new_max < old:
            raise ValueError(f"new_max must be >= the current {old} positions, got {new_max}")
        offset = 0 if emb.padding_idx is None else emb.padding_idx + 1
        new = nn.Embedding(new_max, emb.embedding_dim, padding_idx=emb.padding_idx)
        new.to(device=emb.weight.device, dtype=emb.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(_tile(emb.weight, new_max, offset))
        new.weight.requires_grad_(emb.weight.requires_grad)
        setattr(parent, attr, new)
        for name in ("position_ids", "token_type_ids"):
            buf = getattr(parent, name, None)
            if isinstance(buf, torch.Tensor) and buf.shape[-1] == old:
                fill = torch.arange(new_max) if name == "position_ids" else torch.zeros(new_max)
                parent.register_buffer(name, fill.to(buf.device, buf.dtype).expand(1, -1).clone(), persistent=False)
    for cfg in {
        id(c): c for c in [model.config, *(getattr(m, "config", None) for m in model.modules())] if c is not None
    }.values():
        if hasattr(cfg, "max_position_embeddings"):
            cfg.max_position_embeddings = new_max
    return model
