"""Training text: the ``.py`` files of CPython's standard library, as bytes (vocabulary 256).

Definitions:

* *files*: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (or ``root``), in sorted
  order of their path relative to the root, except those with a directory named ``test``,
  ``tests`` or ``site-packages`` in that path (test data holds deliberately odd bytes; installed
  packages are not the standard library).
* *split*: a file is held out iff ``crc32(relative path, POSIX form, UTF-8) % 10 == 0`` (about
  10%), else it trains; the two splits share no file.
* *stream* of a split: its files' raw bytes in file order, each file followed by one ``0`` byte
  (end of file), as ``uint8 [N]``.
* *context*: ``context + 1`` consecutive bytes of a stream (the model reads the first ``context``
  and predicts the last ``context``); it may span a file boundary.
* *training batch* of global step ``s``: ``batch_size`` contexts whose starts are drawn uniformly
  from ``[0, N - context - 1]`` by ``numpy.random.default_rng([seed, s])``; rank ``r``
  of ``w`` takes rows ``[r * batch_size / w, (r + 1) * batch_size / w)``. The batch is a pure
  function of ``(seed, s)``, so a resumed run and a DDP run see the very samples of one
  uninterrupted process.
* *evaluation contexts* of a split: ``n`` contexts starting at ``round(i * (N - context - 1) /
  (n - 1))``, ``i = 0 .. n-1`` (evenly spread over the whole split, no randomness).
"""

from __future__ import annotations

import functools
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "heldout")
SKIPPED_DIRS = frozenset({"test", "tests", "site-packages"})
EOF_BYTE = 0


def split_of(relative_path: str) -> str:
    """``"heldout"`` iff ``crc32(relative_path) % 10 == 0``, else ``"train"``."""
    return "heldout" if zlib.crc32(relative_path.encode()) % 10 == 0 else "train"


def source_files(root: str | None = None) -> list[str]:
    """Relative POSIX paths of the corpus files under ``root`` (default: the standard library), sorted."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise ValueError(f"root must be a directory, got {str(base)!r}")
    rels = (p.relative_to(base) for p in base.rglob("*.py") if p.is_file())
    return sorted(r.as_posix() for r in rels if not SKIPPED_DIRS.intersection(r.parts[:-1]))


@dataclass(frozen=True)
class Corpus:
    """One split: its files (relative paths) and its byte stream ``uint8 [N]`` (module doc)."""

    split: str
    files: tuple[str, ...]
    stream: torch.Tensor

    def check_context(self, context: int) -> None:
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be an int >= 1, got {context!r}")
        if self.stream.numel() < context + 2:
            raise ValueError(f"context must be <= {self.stream.numel() - 2} for the {self.split} split, got {context}")


@functools.lru_cache(maxsize=4)
def load(split: str, root: str | None = None) -> Corpus:
    """The ``split`` corpus (cached per ``(split, root)``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = Path(root or sysconfig.get_paths()["stdlib"])
    files = tuple(f for f in source_files(root) if split_of(f) == split)
    if not files:
        raise ValueError(f"no {split} files under {str(base)!r}")
    chunks = [(base / f).read_bytes() + bytes([EOF_BYTE]) for f in files]
    stream = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)
    return Corpus(split, files, stream)


def seed_of(*keys: int) -> int:
    """A 32-bit seed drawn from the integers ``keys`` (``numpy.random.SeedSequence``): distinct keys
    give independent streams (a torch generator uses only the low 32 bits of its seed)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _take(stream: torch.Tensor, starts: torch.Tensor, context: int) -> torch.Tensor:
    rows = starts[:, None] + torch.arange(context + 1)  # [n, context + 1]
    return stream[rows].long()


def batch(
    corpus: Corpus, *, seed: int, step: int, batch_size: int, context: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Rank ``rank``'s rows of the training batch of global step ``step``: ``int64 [batch_size /
    world_size, context + 1]`` (module doc)."""
    corpus.check_context(context)
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"batch_size must be a positive multiple of the world size {world_size}, got {batch_size}")
    if step < 0 or seed < 0:
        raise ValueError(f"step and seed must be >= 0, got step {step}, seed {seed}")
    rng = np.random.default_rng([seed, step])
    starts = torch.from_numpy(rng.integers(0, corpus.stream.numel() - context, batch_size))  # [batch_size]
    per = batch_size // world_size
    return _take(corpus.stream, starts[rank * per : (rank + 1) * per], context)


def eval_contexts(corpus: Corpus, n: int, context: int) -> torch.Tensor:
    """The ``n`` evaluation contexts of ``corpus``: ``int64 [n, context + 1]`` (module doc)."""
    corpus.check_context(context)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    last = corpus.stream.numel() - context - 1
    starts = torch.tensor([round(i * last / max(n - 1, 1)) for i in range(n)])  # [n]
    return _take(corpus.stream, starts, context)
