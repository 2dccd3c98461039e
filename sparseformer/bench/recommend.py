"""Pick the strategy and block size that meet the user's constraints with the best quality.

Candidates are the measurements at ``seq_len`` (dense included). A candidate meets
``budget_ms`` when its median encoder latency is at most that, ``budget_mb`` when its peak
memory is measured and at most that, ``min_quality`` when its quality is at least that:
the encoder's output cosine against dense, or, when given, the pretrained model's embedding
cosine for the same strategy and block size. Among those that meet all given constraints the highest cosine wins; ties go to
the lower latency. When none does, we say for each constraint whether relaxing it alone would
leave a candidate, and to what value.
"""

from __future__ import annotations

from dataclasses import dataclass

_LABELS = {"budget_ms": "--budget-ms", "budget_mb": "--budget-mb", "min_quality": "--min-quality"}


@dataclass(frozen=True)
class Constraints:
    budget_ms: float | None = None
    budget_mb: float | None = None
    min_quality: float | None = None

    def given(self) -> dict[str, float]:
        return {k: v for k, v in vars(self).items() if v is not None}


def _meets(rec: dict, name: str, bound: float) -> bool:
    if name == "budget_ms":
        return rec["latency_ms"]["median"] <= bound
    if name == "budget_mb":
        return rec["peak_mib"] is not None and rec["peak_mib"] <= bound
    return rec["quality_cosine"] >= bound


def _needed(recs: list[dict], name: str) -> float | None:
    """The loosest bound on ``name`` that some record in ``recs`` would meet."""
    if name == "budget_ms":
        return min((r["latency_ms"]["median"] for r in recs), default=None)
    if name == "budget_mb":
        return min((r["peak_mib"] for r in recs if r["peak_mib"] is not None), default=None)
    return max((r["quality_cosine"] for r in recs), default=None)


def _label(rec: dict) -> str:
    return rec["strategy"] if rec["block_size"] is None else f"{rec['strategy']} (block {rec['block_size']})"


ENCODER_QUALITY = "cosine of the encoder outputs vs dense (random weights, this length)"


def _model_quality_table(model_quality: dict | None) -> dict[tuple[str, int | None], float] | None:
    if not model_quality or not model_quality.get("available"):
        return None
    return {(r["strategy"], r["block_size"]): r["embedding_cosine"] for r in model_quality["results"]}


def recommend(measurements: list[dict], seq_len: int | None, c: Constraints, model_quality: dict | None = None) -> dict:
    """The recommendation as a JSON-ready dict with a human ``message`` (see the module doc).

    With ``model_quality`` (what :func:`~sparseformer.bench.model_quality.model_quality`
    returned, when available), quality means the pretrained model's embedding cosine of each
    (strategy, block size) instead of the encoder output cosine."""
    lengths = sorted({m["seq_len"] for m in measurements})
    if seq_len is None:
        seq_len = lengths[-1] if lengths else None
    table = _model_quality_table(model_quality)
    source = ENCODER_QUALITY
    if table is not None:
        source = (
            f"embedding cosine of {model_quality['model']} vs the unchanged model ({model_quality['seq_len']} tokens)"
        )
    base = {"seq_len": seq_len, "constraints": c.given(), "quality_source": source}
    recs = [m for m in measurements if m["seq_len"] == seq_len]
    if table is not None:
        recs = [
            {**m, "quality_cosine": table[m["strategy"], m["block_size"]]}
            for m in recs
            if (m["strategy"], m["block_size"]) in table
        ]
    if not recs:
        msg = f"nothing was measured at sequence length {seq_len} (measured: {lengths or 'none'})"
        return {**base, "found": False, "message": msg, "relax": []}
    given = c.given()
    ok = [r for r in recs if all(_meets(r, k, v) for k, v in given.items())]
    if ok:
        best = max(ok, key=lambda r: (r["quality_cosine"], -r["latency_ms"]["median"]))
        mem = "not measured" if best["peak_mib"] is None else f"{best['peak_mib']:.1f} MiB"
        msg = (
            f"at length {seq_len}: {_label(best)}: {best['latency_ms']['median']:.1f} ms, {mem}, "
            f"quality {best['quality_cosine']:.4f} ({source})"
        )
        if not given:
            msg += " (no constraint given: the best quality is dense; pass --budget-ms, --budget-mb or --min-quality)"
        return {
            **base,
            "found": True,
            "message": msg,
            "strategy": best["strategy"],
            "block_size": best["block_size"],
            "code": best["code"],
            "latency_ms": best["latency_ms"]["median"],
            "peak_mib": best["peak_mib"],
            "quality_cosine": best["quality_cosine"],
            "relax": [],
        }
    relax = []
    for name, bound in given.items():
        others = [r for r in recs if all(_meets(r, k, v) for k, v in given.items() if k != name)]
        need = _needed(others, name)
        if name == "budget_mb" and all(r["peak_mib"] is None for r in recs):
            relax.append("memory could not be measured here, so --budget-mb cannot be checked; drop it")
        elif need is None:
            relax.append(f"relaxing {_LABELS[name]} alone is not enough")
        else:
            relax.append(f"{_LABELS[name]} {need:.4g} would do (now {bound:g})")
    want = ", ".join(f"{_LABELS[k]} {v:g}" for k, v in given.items())
    msg = f"no strategy meets {want} at length {seq_len}; " + "; ".join(relax)
    return {**base, "found": False, "message": msg, "relax": relax}
