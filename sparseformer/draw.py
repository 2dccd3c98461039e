"""Pictures of a layout: ASCII for the terminal, PNG with matplotlib."""

from __future__ import annotations

import os
import tempfile

import torch

from .layout import BlockLayout

_GLYPHS = {0: "·", 1: "▒", 2: "█"}


def block_picture(layout: BlockLayout, head: int = 0, max_cells: int = 64) -> torch.Tensor:
    """Tile states of one head, ``uint8 [rows, cols]`` with at most ``max_cells`` per side: each
    cell shows the strongest state among the tiles it covers (full > partial > none)."""
    states = layout.to_block_states()[head if layout.layout_heads > 1 else 0]  # [nq, nk]
    fq = -(-states.shape[0] // max_cells)
    fk = -(-states.shape[1] // max_cells)
    if fq == 1 and fk == 1:
        return states
    pooled = torch.nn.functional.max_pool2d(states[None, None].float(), (fq, fk), ceil_mode=True)
    return pooled[0, 0].to(torch.uint8)


def ascii_picture(layout: BlockLayout, head: int = 0, max_cells: int = 64) -> str:
    """Rows of glyphs: █ full tile, ▒ partial tile (element mask), · not visited."""
    pic = block_picture(layout, head, max_cells)
    return "\n".join("".join(_GLYPHS[int(c)] for c in row) for row in pic)


def save_png(layout: BlockLayout, path: str, head: int = 0, title: str | None = None) -> str:
    """Draw the tile states of ``head`` into a PNG at ``path`` (written atomically)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("drawing PNGs needs matplotlib: pip install 'sparseformer[plot]'") from e
    pic = block_picture(layout, head, max_cells=512)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(pic.numpy(), cmap="Blues", vmin=0, vmax=2, interpolation="nearest")
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    ax.set_title(title or f"density {layout.density:.3f} (block {layout.block_size})")
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
