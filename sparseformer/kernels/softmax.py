"""Softmax over the attending keys, then the values: shared by the PyTorch-op backends."""

from __future__ import annotations

import torch


def drop_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive score term of a keep mask: 0 where kept, half the dtype's lowest finite
    value where dropped (keep-sized; adding it is cheaper in exported graphs than a select over
    the scores). In a row that keeps anything a dropped score's ``exp`` is exactly 0; a row that
    keeps nothing stays finite."""
    return torch.zeros((), dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min / 2)


def soft_cap(scores: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Logit soft-capping (Gemma 2): ``cap * tanh(scores / cap)``; ``cap=None``: the scores."""
    return scores if cap is None else torch.tanh(scores / cap) * cap


def probs(scores: torch.Tensor, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(scores)`` over the last dim; with ``sinks`` (broadcastable to
    ``scores[..., :1]``, one logit per row) the softmax of ``[scores, sink]`` without the sink's
    column: ``exp(s_j) / (sum_k exp(s_k) + exp(sink))`` (GPT-OSS's attention sinks)."""
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    sink = sinks.to(scores.dtype).expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores, sink], -1), dim=-1)[..., :-1]


def attend(
    scores: torch.Tensor,
    v: torch.Tensor,
    seen: torch.Tensor | None,
    dropout_p: float = 0.0,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """``probs(scores, sinks) @ v`` with rows where ``seen`` (bool, broadcastable to
    ``[..., Lq, 1]``) is False set to zeros (values and gradients: never NaN); ``seen=None``: every
    row keeps a key. With ``dropout_p > 0`` the probabilities are dropped and rescaled like SDPA's."""
    p = probs(scores, sinks)
    if dropout_p > 0:
        p = torch.nn.functional.dropout(p, dropout_p)
    out = p @ v
    return out if seen is None else out * seen


def masked_attend(
    scores: torch.Tensor,
    keep: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """``probs(scores restricted to keep, sinks) @ v``; a row that keeps no key gives zeros.
    ``scores [..., Lq, Lk]``, ``keep`` bool broadcastable to it, ``v [..., Lk, Dv]``."""
    return attend(scores + drop_bias(keep, scores.dtype), v, keep.any(-1, keepdim=True), dropout_p, sinks)
