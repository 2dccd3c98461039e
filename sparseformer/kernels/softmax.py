"""Softmax over the attending keys only, shared by the PyTorch-op backends."""

from __future__ import annotations

import torch


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax`` of ``scores`` over the last dim restricted to ``keep`` (broadcastable bool).

    A row that keeps nothing gives all zeros, never NaN, and no NaN gradient either. With
    ``dropout_p > 0`` the probabilities are dropped and rescaled like SDPA's.
    """
    s = scores.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)  # exp(-inf) = 0 on dropped pairs
    denom = p.sum(-1, keepdim=True)
    p = p / torch.where(denom > 0, denom, torch.ones_like(denom))
    if dropout_p > 0:
        p = torch.nn.functional.dropout(p, dropout_p)
    return p
