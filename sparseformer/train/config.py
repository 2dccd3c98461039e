"""``TrainConfig``: everything that decides a training run's result, and its learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..attention import BACKENDS
from ..nn.causal_lm import CausalLMConfig
from ..patterns.base import Pattern
from .strategies import Geometry, build


@dataclass(frozen=True)
class TrainConfig:
    """A run of ``steps`` optimizer steps on ``batch_size`` contexts of ``context`` bytes each
    (``batch_size`` is the global batch: each of ``N`` processes takes ``batch_size / N``).

    Model: :class:`~sparseformer.nn.SparseCausalLM` with ``pattern`` (None: dense SDPA) at
    ``block_size``. Optimizer: AdamW (``betas``, ``weight_decay`` on matrices and the embedding,
    none on biases and LayerNorms), gradients clipped to total norm ``grad_clip``. Learning rate
    of step ``s`` (0-based): ``lr * (s + 1) / warmup`` while ``s < warmup``, then cosine from
    ``lr`` down to ``lr * min_lr_ratio`` at ``s = steps``. Every ``eval_every`` steps (and at
    steps 0 and ``steps``) the loss on ``eval_contexts`` fixed held-out and train contexts is
    measured; every ``checkpoint_every`` steps (and at the end) a checkpoint is written.
    """

    pattern: Pattern | None = field(default_factory=lambda: build("sliding+global", Geometry()))
    context: int = 1024
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 2
    block_size: int = 64
    dropout: float = 0.0
    backend: str = "auto"
    batch_size: int = 8
    steps: int = 1000
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_contexts: int = 16
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern is not None and not isinstance(self.pattern, Pattern):
            raise TypeError(
                f"pattern must be a sparseformer Pattern or None (dense), got {type(self.pattern).__name__}"
            )
        ints = ("context", "d_model", "n_layers", "n_heads", "block_size", "batch_size", "steps")
        ints += ("eval_every", "eval_contexts", "checkpoint_every")
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("warmup", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {self.betas!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.weight_decay < 0 or not self.grad_clip > 0 or not 0 <= self.dropout < 1:
            raise ValueError(
                f"weight_decay must be >= 0, grad_clip > 0, dropout in [0, 1), "
                f"got {self.weight_decay}, {self.grad_clip}, {self.dropout}"
            )
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def model_config(self) -> CausalLMConfig:
        return CausalLMConfig(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            block_size=self.block_size,
            pattern=self.pattern,
            backend=self.backend,
        )

    def to_json(self) -> dict:
        """The configuration as JSON values, the pattern as its spec (:func:`sparseformer.hf.to_spec`)."""
        from ..hf.spec import to_spec

        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["pattern"] = None if self.pattern is None else to_spec(self.pattern)
        out["betas"] = list(self.betas)
        return out

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based; see the class doc)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
