"""Training throughput: tokens per second of the full training step (forward, backward, gradient
clipping, AdamW) of several configurations on the same batches, in one process on the CPU.

The configurations take turns: round ``r`` times one step of each, in order, on the training
batch of step ``r`` (:func:`.data.batch`); the first ``warmup`` rounds are discarded (layout
compilation, allocator and thread-pool warm-up). A configuration's figure is ``batch_size *
context / t`` for ``t`` the median (and, beside it, the minimum) of its kept step times.
Interleaving exposes every configuration to the same background load on a shared machine.
"""

from __future__ import annotations

import statistics
import time

import torch

from . import data
from .config import TrainConfig
from .loop import _Loss, build, train_step


def forward_flops(cfg: TrainConfig) -> float:
    """Matrix-multiply FLOPs of one forward pass of ``cfg``'s model over its batch: every linear
    layer (output layer included, ``2 * tokens * in * out``) and the attention's two products over
    the (query, key) pairs each computes (``4 * pairs * head_dim`` per head): dense causal SDPA
    ``L (L + 1) / 2`` pairs per head, a pattern every pair of the tiles its block kernel visits
    (partial tiles in full). Element-wise work (norms, activations, softmax, AdamW) is not counted:
    the ratio of two such counts bounds a speed-up from above only where matrix products dominate."""
    from ..nn.causal_lm import SparseCausalLM

    lm = SparseCausalLM(cfg.model_config())
    tokens = cfg.batch_size * cfg.context
    linear = sum(2 * tokens * m.in_features * m.out_features for m in lm.modules() if isinstance(m, torch.nn.Linear))
    length, heads = cfg.context, cfg.n_heads
    if cfg.pattern is None:
        pairs = heads * length * (length + 1) / 2
    else:
        layout = cfg.pattern.compile(q_len=length, num_heads=heads, block_size=cfg.block_size, causal=True)
        pairs = layout.visited_tiles * cfg.block_size**2
    attention = cfg.n_layers * cfg.batch_size * 4 * pairs * (cfg.d_model // heads)
    return float(linear + attention)


def measure(configs: dict[str, TrainConfig], *, rounds: int = 5, warmup: int = 1) -> dict[str, dict]:
    """``{name: {"median_tokens_per_s", "best_tokens_per_s", "median_step_s", "steps_timed"}}``."""
    if rounds <= warmup or warmup < 0:
        raise ValueError(f"rounds must exceed warmup >= 0, got rounds {rounds}, warmup {warmup}")
    corpus = data.load("train")
    runs = {}
    for name, cfg in configs.items():
        lm, opt = build(cfg, torch.device("cpu"))
        runs[name] = (_Loss(lm), opt, cfg, [])
    for r in range(rounds):
        for step_model, opt, cfg, times in runs.values():
            x = data.batch(corpus, seed=cfg.seed, step=r, batch_size=cfg.batch_size, context=cfg.context)
            started = time.perf_counter()
            train_step(step_model, opt, x, cfg.grad_clip)
            if r >= warmup:
                times.append(time.perf_counter() - started)
    out = {}
    for name, (_, _, cfg, times) in runs.items():
        tokens = cfg.batch_size * cfg.context
        med = statistics.median(times)
        out[name] = {
            "median_tokens_per_s": tokens / med,
            "best_tokens_per_s": tokens / min(times),
            "median_step_s": med,
            "steps_timed": len(times),
        }
    return out
