"""Softmax over the attending keys only, shared by the PyTorch-op backends."""

from __future__ import annotations

import torch


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax`` of ``scores`` over the last dim restricted to ``keep`` (broadcastable bool).

    Dropped scores are set to the dtype's lowest finite value (not -inf), so a row that keeps
    nothing stays finite, and it is then zeroed: all zeros, never NaN, in values and gradients.
    In a row that keeps anything, ``exp(lowest - max)`` is exactly 0. With ``dropout_p > 0`` the
    probabilities are dropped and rescaled like SDPA's.
    """
    s = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    p = torch.softmax(s, dim=-1) * keep.any(-1, keepdim=True)
    if dropout_p > 0:
        p = torch.nn.functional.dropout(p, dropout_p)
    return p
