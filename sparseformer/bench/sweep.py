"""The measurement loop: every strategy and block size at growing sequence lengths.

Lengths double from ``min_len``. At each length the dense baseline runs first, then every
sparse (strategy, block size). The sweep stops after the first length at which dense breaks a
given budget (``budget_ms`` on the encoder latency, ``budget_mb`` on its peak memory), at
``max_len``, or when the next length would not finish within ``time_budget_s`` (its cost is
projected from the last length's as 1.5x its sparse part plus 4x its dense part: a sparse
configuration's cost grows at most linearly with length and part of it is fixed per
configuration; dense attention's grows quadratically). A
``seq_len`` the user asks about is measured first, whatever the budgets.

Each record is appended to ``results["measurements"]`` as soon as it is measured, so an
interrupted sweep keeps what it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import sparse_attention
from ..layout import flops
from .measure import peak_memory, time_calls, token_cosine
from .strategies import DENSE, STRATEGIES, Strategy, dense_code
from .workload import Workload, dense_model, sparse_model, text_input


@dataclass(frozen=True)
class SweepPlan:
    min_len: int = 256
    max_len: int = 4096
    block_sizes: tuple[int, ...] = (32, 64)
    strategies: tuple[Strategy, ...] = STRATEGIES
    repeats: int = 3
    min_time_s: float = 0.25  # timed calls continue (up to 10x repeats) until they total this
    warmup: int = 1
    time_budget_s: float = 150.0
    budget_ms: float | None = None
    budget_mb: float | None = None
    seq_len: int | None = None

    def lengths(self) -> list[int]:
        out, n = [], self.min_len
        while n <= self.max_len:
            out.append(n)
            n *= 2
        if self.seq_len is not None:
            out = [self.seq_len] + [n for n in out if n != self.seq_len]
        return out

    @property
    def cells_per_length(self) -> int:
        return 1 + len(self.strategies) * len(self.block_sizes)


def _attention_flops_dense(w: Workload, length: int) -> float:
    return 4.0 * w.batch * w.heads * length * length * w.head_dim


def _record(w, length, strategy, block_size, code, timing, attn, peak, quality, layouts) -> dict:
    """``layouts``: one per layer (None: a dense layer), or None for the dense baseline."""
    layouts = layouts or [None] * w.layers
    dense_flops = _attention_flops_dense(w, length)
    total = sum(dense_flops if lay is None else flops(lay, w.head_dim, w.batch) for lay in layouts)
    return {
        "strategy": strategy,
        "block_size": block_size,
        "seq_len": length,
        "code": code,
        "latency_ms": {"median": timing.median_ms, "spread": timing.spread_ms, "all": list(timing.times_ms)},
        "attention_ms": {"median": attn.median_ms, "spread": attn.spread_ms, "all": list(attn.times_ms)},
        "peak_mib": peak,
        "attention_flops": total,
        "density": sum(1.0 if lay is None else lay.density for lay in layouts) / len(layouts),
        "block_density": sum(1.0 if lay is None else lay.block_density for lay in layouts) / len(layouts),
        "quality_cosine": quality,
    }


def _over_budget(rec: dict, plan: SweepPlan) -> bool:
    if plan.budget_ms is not None and rec["latency_ms"]["median"] > plan.budget_ms:
        return True
    return plan.budget_mb is not None and rec["peak_mib"] is not None and rec["peak_mib"] > plan.budget_mb


def _measure_dense(w: Workload, plan: SweepPlan, dense, x, qkv, device) -> tuple[dict, torch.Tensor]:
    length = x.shape[1]
    with torch.inference_mode():
        ref, peak = peak_memory(lambda: dense(x), device)  # the first warm-up call
        timing = time_calls(lambda: dense(x), plan.repeats, max(plan.warmup - 1, 0), device, plan.min_time_s)
        attn = time_calls(
            lambda: F.scaled_dot_product_attention(*qkv), plan.repeats, plan.warmup, device, plan.min_time_s
        )
    return _record(w, length, DENSE, None, dense_code(w.to_dict()), timing, attn, peak, 1.0, None), ref


def _measure_sparse(w: Workload, plan: SweepPlan, s: Strategy, bs: int, dense, x, ref, qkv, device) -> dict:
    length = x.shape[1]
    patterns = s.layer_patterns(bs, w.layers)
    layout = s.build(bs).compile(length, w.heads, bs)  # the attention timed alone (a native strategy: a window layer)
    model = sparse_model(w, dense, patterns, bs)
    with torch.inference_mode():
        out, peak = peak_memory(lambda: model(x), device)  # the first warm-up call
        quality = token_cosine(out, ref)
        del out
        timing = time_calls(lambda: model(x), plan.repeats, max(plan.warmup - 1, 0), device, plan.min_time_s)
        attn = time_calls(
            lambda: sparse_attention(*qkv, layout, backend=w.backend),
            plan.repeats,
            plan.warmup,
            device,
            plan.min_time_s,
        )
    layouts = [None if p is None else p.compile(length, w.heads, bs) for p in patterns]
    return _record(w, length, s.name, bs, s.code(bs), timing, attn, peak, quality, layouts)


def _inputs(w: Workload, length: int, device: torch.device) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    x = text_input(w, length)  # [B, L, E]
    qkv = torch.randn(3, w.batch, w.heads, length, w.head_dim, dtype=w.torch_dtype, device=device)  # [B, H, L, D] x3
    return x, tuple(qkv)


def run_sweep(w: Workload, plan: SweepPlan, results: dict, progress: Callable[[str], None]) -> None:
    """Measure into ``results["measurements"]``; ``progress(label)`` is called after each cell.
    Sets ``results["stopped_because"]``. One untimed priming pass at the shortest length first
    absorbs one-time costs (loading kernels, starting thread pools)."""
    device = torch.device(w.device)
    dense = dense_model(w)
    x, qkv = _inputs(w, plan.min_len, device)
    prime = SweepPlan(repeats=1, warmup=0, min_time_s=0.0)
    ref = _measure_dense(w, prime, dense, x, qkv, device)[1]
    _measure_sparse(w, prime, plan.strategies[0], plan.block_sizes[0], dense, x, ref, qkv, device)
    start = time.perf_counter()
    lengths = plan.lengths()
    results["stopped_because"] = f"reached max length {plan.max_len}"
    for idx, length in enumerate(lengths):
        t_len = time.perf_counter()
        x, qkv = _inputs(w, length, device)
        rec, ref = _measure_dense(w, plan, dense, x, qkv, device)
        t_dense = time.perf_counter() - t_len
        results["measurements"].append(rec)
        progress(f"L={length} {DENSE}")
        dense_over = _over_budget(rec, plan)
        for s in plan.strategies:
            for bs in plan.block_sizes:
                results["measurements"].append(_measure_sparse(w, plan, s, bs, dense, x, ref, qkv, device))
                progress(f"L={length} {s.name} bs={bs}")
        if dense_over and (plan.seq_len is None or idx > 0):  # the asked-for length never stops the sweep
            results["stopped_because"] = f"dense exceeded the budget at length {length}"
            break
        spent = time.perf_counter() - start
        t_sparse = time.perf_counter() - t_len - t_dense
        if idx + 1 < len(lengths) and spent + 1.5 * t_sparse + 4 * t_dense > plan.time_budget_s:
            results["stopped_because"] = (
                f"the next length would overrun the time budget of {plan.time_budget_s:.0f} s (spent {spent:.0f} s)"
            )
            break
