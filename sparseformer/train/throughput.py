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
