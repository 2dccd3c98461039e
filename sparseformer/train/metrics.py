"""The metrics file of a run: JSON lines, one per evaluation, appended as training goes.

Each line: ``step`` (optimizer steps done), ``seconds`` (wall-clock spent in training steps,
evaluation and checkpointing excluded, summed over resumed sessions), ``tokens`` (predicted
bytes trained on, all ranks), ``train_loss`` (mean training-batch loss over the steps since the
previous line; None at step 0), ``train_eval_loss`` and ``heldout_loss`` (mean next-byte
cross-entropy in nats on the fixed evaluation contexts of each split, eval mode),
``heldout_bpb`` (``heldout_loss / ln 2``, bits per byte), ``lr`` (of the last step), and
``tokens_per_s`` (tokens over seconds since the previous line; None at step 0).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text


def append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def read(path: Path) -> list[dict]:
    """The records of ``path`` (an absent file has none; a last line cut short by a killed
    process is ignored)."""
    if not Path(path).exists():
        return []
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return [json.loads(line) for line in lines if line.strip()]


def truncate(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run drops what the killed run logged after its
    checkpoint); rewritten atomically."""
    kept = [r for r in read(path) if r["step"] <= step]
    write_text(str(path), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
