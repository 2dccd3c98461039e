"""Which quality the recommendation, the tables and the plots read, and the length it was measured at.

Two measures exist (see docs/bench.md):

* the encoder's output cosine vs dense (random weights), measured at every swept length: a
  record's ``quality_cosine``, measured at its own ``seq_len``;
* the pretrained model's mean-pooled embedding cosine vs the unchanged model, measured once per
  (strategy, block size) at one length (512 tokens by default): ``results["model_quality"]``.

:class:`Quality` reads the second when it was measured (and asked for), else the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .strategies import DENSE

ENCODER_QUALITY = "cosine of the encoder outputs vs dense (random weights, this length)"


@dataclass(frozen=True)
class Quality:
    """``table`` maps (strategy, block size) to the model's embedding cosine, measured on
    ``model`` at ``model_len`` tokens; without a table, quality is the encoder cosine."""

    table: dict[tuple[str, int | None], float] | None = None
    model: str | None = None
    model_len: int | None = None

    @classmethod
    def of(cls, model_quality: dict | None) -> Quality:
        """From what :func:`~sparseformer.bench.model_quality.model_quality` returned (or None)."""
        if not model_quality or not model_quality.get("available"):
            return cls()
        table = {(r["strategy"], r["block_size"]): r["embedding_cosine"] for r in model_quality["results"]}
        return cls(table, model_quality["model"], model_quality["seq_len"])

    @property
    def on_model(self) -> bool:
        return self.table is not None

    def value(self, m: dict) -> float | None:
        """The quality of measurement record ``m``; None when the model did not measure its configuration."""
        if self.table is None:
            return m["quality_cosine"]
        return self.table.get((m["strategy"], m["block_size"]))

    def measured_at(self, m: dict) -> int:
        """The sequence length at which :meth:`value` was measured (dense's 1.0 holds at every length)."""
        return m["seq_len"] if self.table is None or m["strategy"] == DENSE else self.model_len

    def source(self) -> str:
        if self.table is None:
            return ENCODER_QUALITY
        return f"embedding cosine of {self.model} vs the unchanged model ({self.model_len} tokens)"

    def note(self, length: int) -> str:
        """What to say beside the model's quality shown at ``length`` (empty without a model)."""
        return "" if self.table is None else measured_note(length, self.model_len)


def measured_note(length: int, measured_at: int) -> str:
    """What to say beside a quality shown at ``length`` that was measured at ``measured_at``."""
    return "" if measured_at == length else f"model quality measured at {measured_at} tokens"
