"""Independent brute-force definitions of every pattern, written from the docstrings with
plain Python integers: the oracle the compiled layouts are checked against."""

from __future__ import annotations

import math

import numpy as np


def dense(lq: int, lk: int, off: int, pred) -> np.ndarray:
    """``bool [lq, lk]``: ``pred(p, j)`` over all pairs, ``p = i + off``."""
    out = np.zeros((lq, lk), dtype=bool)
    for i in range(lq):
        for j in range(lk):
            out[i, j] = pred(i + off, j)
    return out


def block_local(s):
    return lambda p, j: p // s == j // s


def sliding(left, right, unit_bs=None):
    def pred(p, j):
        if unit_bs:
            p, j = p // unit_bs, j // unit_bs
        return -right <= p - j <= left

    return pred


def global_(g: set[int], horizontal: bool):
    return lambda p, j: j in g or (horizontal and p in g)


def decay(rate, eps):
    w = math.floor(math.log(1 / eps) / rate)
    return lambda p, j: abs(p - j) <= w


def strided(stride):
    return lambda p, j: abs(p - j) < stride or (p - j) % stride == 0


def dilated(window, dilation):
    return lambda p, j: abs(p - j) <= window * dilation and (p - j) % dilation == 0


def causal(p, j):
    return p >= j
