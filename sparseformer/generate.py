"""Streaming generation with :class:`~sparseformer.nn.SparseCausalLM` in fixed memory.

:func:`decode_step` runs one token through the model's own submodules (embedding, per block
``ln1``, ``attn.qkv``, :func:`~sparseformer.nn.causal_lm.rotate`, ``attn.proj``, ``ln2``, ``mlp``,
then ``ln_f`` and ``head``), attending only the slots of a :class:`~sparseformer.cache.SinkWindowCache`.
For the model's pattern ``SlidingWindow(W, right=0) | Global(tokens=S)`` this is exactly the
model's forward on the whole prefix, evaluated at its last position, at a cost and memory that
do not grow with the length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .cache import SinkWindowCache, sink_window_spec
from .nn.causal_lm import SparseCausalLM, rotate


def new_cache(model: SparseCausalLM, batch: int = 1) -> SinkWindowCache:
    """An empty cache sized for ``model``'s pattern (ValueError if it is not sink + window)."""
    if not isinstance(model, SparseCausalLM):
        raise TypeError(f"model must be a SparseCausalLM, got {type(model).__name__}")
    cfg = model.cfg
    p = next(model.parameters())
    return SinkWindowCache(
        sink_window_spec(cfg.pattern),
        n_layers=cfg.n_layers,
        batch=batch,
        n_heads=cfg.n_heads,
        head_dim=cfg.d_model // cfg.n_heads,
        dtype=p.dtype,
        device=p.device,
    )


@torch.no_grad()
def decode_step(model: SparseCausalLM, cache: SinkWindowCache, token: torch.Tensor) -> torch.Tensor:
    """Feed ``token`` (int64 ``[B]``) at position ``cache.length``; returns logits ``[B, vocab]``."""
    cfg = model.cfg
    t = cache.length
    b = token.shape[0]
    e, h = cfg.d_model, cfg.n_heads
    pos = torch.tensor([t], device=token.device)
    x = model.embed(token)[:, None]  # [B, 1, E]
    for i, blk in enumerate(model.blocks):
        q, k, v = (z.view(b, 1, h, e // h).transpose(1, 2) for z in blk.attn.qkv(blk.ln1(x)).split(e, dim=-1))
        q, k = rotate(q, pos, cfg.rope_base), rotate(k, pos, cfg.rope_base)  # [B, H, 1, d]
        cache.write(i, t, k[:, :, 0], v[:, :, 0])
        keep = cache.attend_mask(t)[None]  # [1, slots], after the write: the token attends itself
        y = F.scaled_dot_product_attention(q, cache.k[i], cache.v[i], attn_mask=keep)  # [B, H, 1, d]
        x = x + blk.attn.proj(y.transpose(1, 2).reshape(b, 1, e))
        x = x + blk.mlp(blk.ln2(x))
    cache.advance()
    return model.head(model.ln_f(x))[:, 0]


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def stream(
    model: SparseCausalLM,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    cache: SinkWindowCache | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` next tokens (int64 ``[B]`` each) after ``prompt`` (int ``[B, P]``,
    P >= 1), greedy when ``temperature == 0``. The prompt is fed one token at a time through the
    same cache, so memory stays ``cache.nbytes`` whatever the length."""
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
        raise ValueError(
            f"prompt must be an integer tensor [B, P] with P >= 1, got {getattr(prompt, 'shape', prompt)!r}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    was_training = model.training
    model.eval()
    try:
        cache = new_cache(model, prompt.shape[0]) if cache is None else cache
        prompt = prompt.long()
        for i in range(prompt.shape[1]):
            logits = decode_step(model, cache, prompt[:, i])
        for _ in range(max_new_tokens):
            token = _pick(logits, temperature, generator)
            yield token
            logits = decode_step(model, cache, token)
    finally:
        model.train(was_training)


def generate(model: SparseCausalLM, prompt: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """``prompt`` followed by ``max_new_tokens`` tokens from :func:`stream`: int64 ``[B, P + N]``."""
    new = list(stream(model, prompt, max_new_tokens, **kwargs))
    return torch.cat([prompt.long(), torch.stack(new, 1)], 1) if new else prompt.long()


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes (Linux ``/proc/self/statm``; elsewhere
    the peak from ``getrusage``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
