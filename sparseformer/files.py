"""Atomic file writes: write to a temporary name beside the target, then ``os.replace``; an
interrupted or failed write leaves the target as it was and no temporary file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` (a str beside ``path``, in its folder), then rename the temporary
    file to ``path``; if ``write`` raises, the temporary file is removed and ``path`` untouched."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` to ``path`` (UTF-8), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, write)


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON with sorted keys, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True))
