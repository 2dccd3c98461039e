"""``train``: one training run of :class:`~sparseformer.nn.SparseCausalLM` on standard-library
bytes, resumable, the same under ``torchrun`` (DDP) as in one process.

The output directory holds ``config.json`` (the :class:`TrainConfig` as JSON),
``metrics.jsonl`` (:mod:`.metrics`) and ``checkpoint.safetensors`` (:mod:`.checkpoint`), written
by rank 0 only. Every random draw is a pure function of ``(seed, step, rank)``: the batch of
step ``s`` (:func:`.data.batch`) and, for dropout, the torch RNG seeded with
``data.seed_of(seed, s, rank)`` before each step. So a run resumed from its checkpoint
takes exactly the steps an uninterrupted run takes (its parameters equal that run's: within 1e-6
in ``tests/train/test_resume.py``), and ``N``
DDP processes with the same global batch follow one process's loss curve (without dropout: the
dropout masks of a sample depend on which rank draws it).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import write_text
from ..nn.causal_lm import SparseCausalLM
from . import checkpoint, data, distributed, metrics
from .config import TrainConfig

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.json"


class _Loss(nn.Module):
    """``forward(idx [B, L + 1]) -> mean next-byte loss``, so that DDP wraps the whole step."""

    def __init__(self, lm: SparseCausalLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm.loss(idx)


def _init_weights(lm: SparseCausalLM) -> None:
    """GPT-2's initialisation: every linear and embedding weight ``N(0, 0.02)``, biases zero (the
    module's default ``N(0, 1)`` embedding, tied to the output, starts at ~20 nats per byte)."""
    for m in lm.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = list(model.parameters())  # unique: the tied embedding appears once
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def build(cfg: TrainConfig, device: torch.device) -> tuple[SparseCausalLM, torch.optim.AdamW]:
    """The model of ``cfg``, initialised from ``torch.manual_seed(cfg.seed)`` (the same weights
    on every rank), on ``device``, and its optimizer."""
    torch.manual_seed(cfg.seed)
    lm = SparseCausalLM(cfg.model_config())
    _init_weights(lm)
    lm.to(device)
    return lm, _optimizer(lm, cfg)


def train_step(step_model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, grad_clip: float) -> float:
    """One optimizer step on ``x [b, L + 1]``: forward, backward, clip, AdamW; returns the loss
    (``step_model`` is the :class:`_Loss` of the model, DDP-wrapped or not)."""
    loss = step_model(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(step_model.parameters(), grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(lm: SparseCausalLM, contexts: torch.Tensor, world: distributed.World, batch_size: int) -> float:
    """Mean next-byte cross-entropy (nats) of ``lm`` over ``contexts [n, L + 1]``; the ranks
    split the contexts (rank ``r`` takes rows ``r, r + N, ...``) and sum their losses."""
    was_training = lm.training
    lm.eval()
    mine = contexts[world.rank :: world.world_size]
    total = 0.0
    for chunk in mine.split(batch_size):
        logits = lm(chunk[:, :-1].to(world.device))  # [b, L, 256]
        target = chunk[:, 1:].to(world.device)
        total += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
    lm.train(was_training)
    summed, count = distributed.all_sum([total, mine.numel() - mine.shape[0]], world)
    return summed / count


def _resumes(out: Path, cfg: TrainConfig, resume: bool) -> bool:
    """Whether ``out`` holds a checkpoint of ``cfg`` to continue; refuses to mix runs."""
    ckpt = out / CHECKPOINT
    if not ckpt.exists():
        return False
    if not resume:
        raise ValueError(f"out ({out}) already holds a checkpoint; pass resume=True (--resume) or another directory")
    saved = checkpoint.read_state(ckpt)["config"]
    want = cfg.to_json()
    diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
    if diff:
        raise ValueError(f"the checkpoint in {out} was trained with other settings ({', '.join(diff)}); cannot resume")
    return True


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    crash_after: int | None = None,
    device: str = "auto",
) -> dict:
    """Train (or, with ``resume=True``, continue) the run of ``cfg`` in ``out``; returns the last
    metrics record. Runs unchanged under ``torchrun`` (module doc). ``crash_after=j`` kills
    this process with SIGKILL right after step ``j`` (what a crash looks like, for tests);
    ``progress`` draws a tqdm bar on rank 0; ``device``: as :func:`distributed.init`."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    world = distributed.init(device)
    if cfg.batch_size % world.world_size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of the {world.world_size} processes")
    out = Path(out)
    train_split, heldout = data.load("train"), data.load("heldout")
    train_split.check_context(cfg.context)
    heldout.check_context(cfg.context)
    eval_sets = {
        "train_eval_loss": data.eval_contexts(train_split, cfg.eval_contexts, cfg.context),
        "heldout_loss": data.eval_contexts(heldout, cfg.eval_contexts, cfg.context),
    }

    lm, opt = build(cfg, world.device)
    resuming = _resumes(out, cfg, resume)
    state = {"config": cfg.to_json(), "step": 0, "seconds": 0.0, "tokens": 0, "loss_sum": 0.0, "loss_count": 0}
    state.update(mark_seconds=0.0, mark_tokens=0)
    if resuming:
        state = checkpoint.load(out / CHECKPOINT, lm, opt)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(str(out / CONFIG), json.dumps(cfg.to_json(), indent=2, sort_keys=True) + "\n")
        metrics.truncate(out / METRICS, state["step"])
    local_batch = cfg.batch_size // world.world_size

    def log(step: int, lr: float | None) -> dict:
        losses = {k: evaluate(lm, ctx, world, local_batch) for k, ctx in eval_sets.items()}
        dt, dn = state["seconds"] - state["mark_seconds"], state["tokens"] - state["mark_tokens"]
        record = {
            "step": step,
            "seconds": state["seconds"],
            "tokens": state["tokens"],
            "train_loss": state["loss_sum"] / state["loss_count"] if state["loss_count"] else None,
            **losses,
            "heldout_bpb": losses["heldout_loss"] / math.log(2),
            "lr": lr,
            "tokens_per_s": dn / dt if dt > 0 else None,
        }
        state.update(loss_sum=0.0, loss_count=0, mark_seconds=state["seconds"], mark_tokens=state["tokens"])
        if world.is_main:
            metrics.append(out / METRICS, record)
        return record

    logged = metrics.read(out / METRICS) if resuming and world.is_main else []
    if resuming and world.is_main and not logged:
        raise ValueError(f"cannot resume {str(out)!r}: it holds a checkpoint but no {METRICS} lines")
    last = logged[-1] if logged else None
    if state["step"] == 0:
        last = log(0, None)
    step_model = distributed.wrap(_Loss(lm), world)
    bar = _bar(cfg, state["step"]) if progress and world.is_main else None
    for step in range(state["step"], cfg.steps):
        lr = cfg.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        x = data.batch(
            train_split,
            seed=cfg.seed,
            step=step,
            batch_size=cfg.batch_size,
            context=cfg.context,
            rank=world.rank,
            world_size=world.world_size,
        ).to(world.device)  # [batch_size / N, context + 1]
        torch.manual_seed(data.seed_of(cfg.seed, step, world.rank))
        started = time.perf_counter()
        loss = train_step(step_model, opt, x, cfg.grad_clip)
        (global_loss,) = distributed.all_sum([loss / world.world_size], world)
        state["seconds"] += time.perf_counter() - started
        state["tokens"] += cfg.batch_size * cfg.context
        state["loss_sum"] += global_loss
        state["loss_count"] += 1
        state["step"] = done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.3f}", lr=f"{lr:.2e}")
        if done % cfg.eval_every == 0 or done == cfg.steps:
            last = log(done, lr)
            if bar is not None:
                bar.write(
                    f"step {done}: held-out loss {last['heldout_loss']:.4f} ({last['heldout_bpb']:.3f} bits/byte)"
                )
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if world.is_main:
                checkpoint.save(out / CHECKPOINT, lm, opt, state)
            distributed.barrier(world)
        if crash_after is not None and done == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
    if bar is not None:
        bar.close()
    return last


def _bar(cfg: TrainConfig, start: int):
    from ..hf._deps import progress

    return progress(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
