"""Distillation: fine-tune a sparse model until its embeddings match the dense model's.

The student is the base model with sparse attention (:func:`~sparseformer.hf.sparsify`), the
teacher the same base model, dense and frozen. Loss per batch of training passages
(:mod:`~sparseformer.hf.data`, train topics only):

* ``loss="cos"``: ``mean(1 - cos(s, t))`` of the mean-pooled embeddings; ``loss="mse"``:
  ``mean((s - t)**2)``;
* plus ``hidden_weight * mean over tokens of (1 - cos(h_s, h_t))`` on the last hidden states
  (``hidden_layers="last"``) or averaged over the outputs of every layer (``"all"``).

Both models run in eval mode (no dropout), so the student learns what the teacher computes at
inference. ``sparse_layers`` makes only those layers sparse (the others stay dense, see
:func:`~sparseformer.hf.sparsify`). ``trainable="attention"`` trains only the attention and
LayerNorm parameters (the feed-forward weights and embeddings stay the dense model's); ``"all"``
trains every weight. AdamW, linear warm-up over ``warmup`` steps then cosine decay to 0 at
``steps``. A run stops after ``steps`` steps or ``max_minutes`` of training, whichever comes first.

The output directory holds ``config.json`` (with ``config.sparseformer``), ``model.safetensors``,
the tokenizer, ``optimizer.safetensors`` and ``state.json`` (settings, step, seconds trained,
held-out figures); each file is written atomically, ``state.json`` last, so a crash leaves the
previous checkpoint usable and ``resume=True`` continues it on the same passage order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..files import write_json, write_text
from . import checkpoint as ck
from . import data
from ._deps import progress, require
from .quality import agreement, embed, pool, preset
from .spec import to_spec

HIDDEN_LAYERS = ("last", "all")
TRAINABLE = ("attention", "all")


@dataclass(frozen=True)
class DistillConfig:
    base: str  # path of the dense model (a transformers directory)
    pattern: str = "sliding-cls-strided"  # a preset of sparseformer.hf.quality.PRESETS
    block_size: int = 16
    length: int = 512  # tokens per training passage
    steps: int = 380
    batch_size: int = 4
    lr: float = 3e-5
    warmup: int = 10
    loss: str = "cos"  # "cos" | "mse"
    hidden_weight: float = 1.0
    hidden_layers: str = "all"  # "last" | "all"
    trainable: str = "attention"  # "attention" (attention and LayerNorm parameters only) | "all"
    max_minutes: float = 10.0
    seed: int = 0
    sources: tuple[str, ...] = data.SOURCES
    sparse_layers: tuple[int, ...] | None = None  # layer indices made sparse; None: every layer

    def __post_init__(self) -> None:
        preset(self.pattern)
        if self.loss not in ("cos", "mse"):
            raise ValueError(f"loss must be 'cos' or 'mse', got {self.loss!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.hidden_layers not in HIDDEN_LAYERS:
            raise ValueError(f"hidden_layers must be one of {HIDDEN_LAYERS}, got {self.hidden_layers!r}")
        for name in ("block_size", "length", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("lr", "max_minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.hidden_weight < 0 or self.warmup < 0:
            raise ValueError(f"hidden_weight and warmup must be >= 0, got {self.hidden_weight}, {self.warmup}")
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.sparse_layers is not None:
            if not isinstance(self.sparse_layers, (list, tuple)):
                raise ValueError(f"sparse_layers must be None or a list of layer indices, got {self.sparse_layers!r}")
            object.__setattr__(self, "sparse_layers", tuple(self.sparse_layers))
        object.__setattr__(self, "base", str(self.base))


def lr_at(cfg: DistillConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then cosine to 0 at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _batch_indices(cfg: DistillConfig, n: int, step: int) -> list[int]:
    """Passages of step ``step``: epoch ``e`` visits a permutation seeded by ``seed + e``."""
    out = []
    for k in range(step * cfg.batch_size, (step + 1) * cfg.batch_size):
        epoch, pos = divmod(k, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        out.append(int(perm[pos]))
    return out


def _models(cfg: DistillConfig, out: Path, resume: bool):
    transformers = require("transformers")
    from .model import sparsify

    teacher = transformers.AutoModel.from_pretrained(cfg.base).eval().requires_grad_(False)
    src = out if resume else cfg.base
    student = transformers.AutoModel.from_pretrained(src)
    sparsify(student, preset(cfg.pattern), block_size=cfg.block_size, layers=cfg.sparse_layers)
    if cfg.trainable == "attention":
        for name, p in student.named_parameters():
            p.requires_grad_(".attention." in name or "layernorm" in name.lower())
    return teacher, student.eval()


def hidden_loss(s_states, t_states, layers: str = "all") -> torch.Tensor:
    """Mean over tokens of ``1 - cos`` between student and teacher hidden states (``L + 1``
    tensors ``[B, L, D]`` each, embeddings first, as ``output_hidden_states`` gives them), of the
    last layer's output (``layers="last"``) or averaged over every layer's output (``"all"``)."""
    if layers not in HIDDEN_LAYERS:
        raise ValueError(f"layers must be one of {HIDDEN_LAYERS}, got {layers!r}")
    pairs = list(zip(s_states[1:], t_states[1:]))
    pairs = pairs[-1:] if layers == "last" else pairs
    return torch.stack([(1 - F.cosine_similarity(s, t, dim=-1)).mean() for s, t in pairs]).mean()


def distill(cfg: DistillConfig, out: str | os.PathLike, *, resume: bool = False, eval_passages: int = 100) -> dict:
    """Train (or with ``resume``, continue training) into ``out``; returns the final ``state.json``
    dict, whose ``"heldout"`` holds :func:`~sparseformer.hf.quality.agreement` of the student
    against the teacher on ``eval_passages`` held-out passages (0: skip)."""
    transformers = require("transformers")
    out = Path(out)
    state = {"step": 0, "seconds": 0.0, "config": dataclasses.asdict(cfg)}
    if resume:
        if not (out / "state.json").exists():
            raise ValueError(f"resume=True needs a checkpoint in {out}, found no state.json")
        state = json.loads((out / "state.json").read_text())
        saved = DistillConfig(**state["config"])
        if dataclasses.replace(saved, steps=cfg.steps, max_minutes=cfg.max_minutes) != cfg:
            raise ValueError(
                f"resume: the settings differ from the checkpoint's ({state['config']}); only steps and max_minutes may change"
            )
        state["config"] = dataclasses.asdict(cfg)
    elif (out / "state.json").exists():
        raise ValueError(f"{out} already holds a checkpoint; pass resume=True (--resume) or choose another directory")
    torch.manual_seed(cfg.seed)
    tok = transformers.AutoTokenizer.from_pretrained(cfg.base)
    teacher, student = _models(cfg, out, resume)
    train = torch.stack([ids for _, ids in data.passages(tok, cfg.length, "train", sources=cfg.sources)])  # [N, L]
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    if resume:
        ck.load_optimizer(opt, ck.read_tensors(out / "optimizer.safetensors"), state["optimizer_groups"])
    start, t0 = state["step"], time.monotonic() - state["seconds"]
    bar = progress(range(start, cfg.steps), desc="distill", initial=start, total=cfg.steps)
    for step in bar:
        idx = _batch_indices(cfg, train.shape[0], step)
        ids = train[idx]  # [B, L]
        with torch.no_grad():
            t_states = teacher(input_ids=ids, output_hidden_states=True).hidden_states  # L+1 x [B, L, D]
        t_pool = pool(t_states[-1])  # [B, D]
        s_states = student(input_ids=ids, output_hidden_states=True).hidden_states
        s_pool = pool(s_states[-1])
        pooled_cos = F.cosine_similarity(s_pool, t_pool, dim=-1)  # [B]
        loss = (1 - pooled_cos).mean() if cfg.loss == "cos" else F.mse_loss(s_pool, t_pool)
        if cfg.hidden_weight > 0:
            loss = loss + cfg.hidden_weight * hidden_loss(s_states, t_states, cfg.hidden_layers)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"], state["seconds"] = step + 1, time.monotonic() - t0
        bar.set_postfix(
            loss=f"{loss.item():.4f}", cos=f"{pooled_cos.mean().item():.4f}", min=f"{state['seconds'] / 60:.1f}"
        )
        if state["seconds"] >= cfg.max_minutes * 60:
            break
    bar.close()
    state["finished"] = state["step"] >= cfg.steps or state["seconds"] >= cfg.max_minutes * 60
    if eval_passages:
        held = torch.stack(
            [
                ids
                for _, ids in data.passages(
                    tok, cfg.length, "heldout", limit=eval_passages, seed=cfg.seed, sources=cfg.sources
                )
            ]
        )
        ref = embed(teacher, held, desc="held-out, dense")
        state["heldout"] = {"passages": eval_passages, **agreement(ref, embed(student, held, desc="held-out, sparse"))}
    save(student, tok, opt, state, out)
    return state


def save(student, tok, opt, state: dict, out: Path) -> None:
    """Write the checkpoint (module doc), ``state.json`` last."""
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", student.config.to_json_string())
    ck.write_tensors(out / "model.safetensors", student.state_dict())
    flat, groups = ck.optimizer_tensors(opt)
    ck.write_tensors(out / "optimizer.safetensors", flat)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for name in tok.save_pretrained(tmp):
            if Path(name).exists():
                os.replace(name, out / Path(name).name)
    write_json(
        out / "state.json",
        {**state, "optimizer_groups": groups, "pattern_spec": to_spec(preset(state["config"]["pattern"]))},
    )


def load_distilled(path: str | os.PathLike, *, max_positions: int | None = None, backend: str = "auto"):
    """The sparse model that ``sparseformer distill`` wrote to ``path``, in eval mode, with its
    pattern (``config.sparseformer``). ``max_positions`` extends its learned positions
    (:func:`~sparseformer.hf.extend_positions`) to read longer passages; ``backend`` picks the
    sparse kernel. The tokenizer is in the same directory: ``AutoTokenizer.from_pretrained(path)``."""
    from .attention import NAME, config_entry, register, settings
    from .positions import extend_positions

    transformers = require("transformers")
    if not (Path(path) / "config.json").exists():
        raise ValueError(f"path must be a directory written by sparseformer distill, found no config.json in {path}")
    register()
    config = transformers.AutoConfig.from_pretrained(path)
    saved = settings(config)
    entry = config_entry(saved.pattern, block_size=saved.block_size, backend=backend, layers=saved.layers)
    setattr(config, NAME, entry)
    model = transformers.AutoModel.from_pretrained(path, config=config, attn_implementation=NAME).eval()
    if max_positions is not None:
        extend_positions(model, max_positions)
    return model
