"""The tables of ``sparseformer quality`` (definitions in :mod:`sparseformer.hf.quality`)."""

from __future__ import annotations

import torch

from . import data
from ._deps import require
from .quality import PRESETS, agreement, chunk_mean, embed, parse_preset, preset, truncate

HEADER = "| model | L | density | mean cos | p5 cos | NN agree |\n|---|---|---|---|---|---|\n"


def _row(name: str, length: int, density: str, a: dict) -> str:
    return f"| {name} | {length} | {density} | {a['mean_cos']:.4f} | {a['p5_cos']:.4f} | {a['nn_agree']:.3f} |\n"


def _sparse(base: str, name: str, block_size: int, max_positions: int | None):
    from .model import sparsify
    from .positions import extend_positions

    model = require("transformers").AutoModel.from_pretrained(base).eval()
    if max_positions and max_positions > model.config.max_position_embeddings:
        extend_positions(model, max_positions)
    return sparsify(model, preset(name), block_size=block_size)


def _density(name: str, length: int, heads: int, block_size: int) -> str:
    return f"{preset(name).compile(q_len=length, num_heads=heads, block_size=block_size).density:.1%}"


def _student_density(model, length: int) -> str:
    from .attention import settings

    c = model.config
    return f"{settings(c).density(length, c.num_attention_heads, c.num_hidden_layers):.1%}"


def quality_report(base: str, args) -> str:
    """Markdown: one table per length in ``args.lengths`` and, with ``args.long``, the long table."""

    transformers = require("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(base)
    dense = transformers.AutoModel.from_pretrained(base).eval()
    heads, max_pos = dense.config.num_attention_heads, dense.config.max_position_embeddings
    sources = tuple(args.sources)
    out = [
        f"Held-out topics only; sources {', '.join(sources)}; default block size {args.block_size}; seed {args.seed}.\n\n"
    ]
    for length in args.lengths:
        ids = torch.stack(
            [p for _, p in data.passages(tok, length, "heldout", limit=args.passages, seed=args.seed, sources=sources)]
        )
        ref = embed(dense, ids, desc=f"dense L={length}")
        out.append(
            f"**{args.passages} passages of {length} tokens** (reference: dense model on the full passage)\n\n{HEADER}"
        )
        max_positions = length if length > max_pos else None
        out += _sparse_rows(base, args, ids, ref, length, heads, max_positions, batch_size=None)
        t = args.truncate or length // 2
        e = embed(dense, truncate(ids, t, tok.sep_token_id), desc=f"truncate {t}")
        out.append(_row(f"dense, input truncated to {t} tokens", length, "—", agreement(ref, e)))
        out.append("\n")
    if args.long:
        out.append(_long_table(base, args, tok, dense, sources))
    return "".join(out)


def _long_table(base: str, args, tok, dense, sources) -> str:

    length, max_pos = args.long, dense.config.max_position_embeddings
    heads = dense.config.num_attention_heads
    ids = torch.stack(
        [p for _, p in data.passages(tok, length, "heldout", limit=args.long_passages, seed=args.seed, sources=sources)]
    )
    ref = chunk_mean(dense, ids, max_pos, tok.cls_token_id, tok.sep_token_id, desc="dense chunks")
    out = [
        f"**{args.long_passages} passages of {length} tokens** (reference: token-weighted mean of the dense model's "
        f"embeddings of the passage's consecutive {max_pos}-token chunks; positions extended to {length} by tiling)\n\n{HEADER}"
    ]
    e = embed(dense, truncate(ids, max_pos, tok.sep_token_id), desc=f"truncate {max_pos}")
    out.append(_row(f"dense, input truncated to {max_pos} tokens", length, "—", agreement(ref, e)))
    out += _sparse_rows(base, args, ids, ref, length, heads, length, batch_size=1)
    return "".join(out) + "\n"


def _sparse_rows(base, args, ids, ref, length, heads, max_positions, batch_size) -> list[str]:
    """Rows of the zero-shot sparse patterns and the distilled students against ``ref``.
    ``max_positions``: the students' extended positions (None: as trained); ``batch_size``: for
    :func:`embed` (None: its default)."""
    from .attention import settings
    from .distill import load_distilled

    kw = {} if batch_size is None else {"batch_size": batch_size}
    rows = []
    for text in args.patterns:
        name, bs = parse_preset(text, args.block_size)
        e = embed(_sparse(base, name, bs, length), ids, desc=f"{text} L={length}", **kw)
        density = _density(name, length, heads, bs)
        rows.append(_row(f"zero-shot {PRESETS[name][0]}, block {bs}", length, density, agreement(ref, e)))
    for path in args.student:
        model = load_distilled(path, max_positions=max_positions)
        e = embed(model, ids, desc=f"{path} L={length}", **kw)
        bs = settings(model.config).block_size
        rows.append(_row(f"distilled `{path}`, block {bs}", length, _student_density(model, length), agreement(ref, e)))
    return rows
