"""Pick a strategy and block size from the measurements.

Quality is what :class:`~sparseformer.bench.quality.Quality` reads: the pretrained model's
embedding cosine of the (strategy, block size) when given, else the encoder's output cosine vs
dense at that length. Dense's quality is 1.0.

**No budget given (the default).** For each measured length, the fastest configuration
(dense included; ties go to the higher quality) whose quality is at least the floor
(``min_quality`` when given, else :data:`DEFAULT_MIN_QUALITY`, see :data:`FLOOR_WHY`), leaving out sparse configurations whose
layout keeps every pair at that length (density 1: dense attention through a sparse kernel,
e.g. a stride longer than the sequence). The *break-even length* is the shortest
measured length L such that at L and at every longer measured length that choice is a sparse
configuration with a median encoder latency strictly below dense's; None when the longest
measured length's choice is dense. The headline is the choice at ``seq_len`` (default: the
longest measured length).

**A budget given** (``budget_ms`` or ``budget_mb``, with or without ``min_quality``). Candidates
are the measurements at ``seq_len``. A candidate meets
``budget_ms`` when its median encoder latency is at most that, ``budget_mb`` when its peak memory
is measured and at most that, ``min_quality`` when its quality is at least that. Among those that
meet all given constraints the highest quality wins; ties go to the lower latency. When none
does, we say for each constraint whether relaxing it alone would leave a candidate, and to what value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .quality import Quality, measured_note
from .strategies import DENSE

DEFAULT_MIN_QUALITY = 0.97
FLOOR_WHY = (
    "0.97 is the low end of what docs/quality.md measured for zero-shot sparse patterns that stay close to "
    "dense on all-MiniLM-L6-v2 (mean embedding cosine 0.97-0.99 at 512 tokens; truncating the input to "
    "half its length gives 0.84)"
)

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


def label(strategy: str, block_size: int | None) -> str:
    return strategy if block_size is None else f"{strategy} (block {block_size})"


def candidates(measurements: list[dict], length: int, q: Quality) -> list[dict]:
    """The records at ``length`` whose quality ``q`` knows, with ``quality_cosine`` set to it and
    ``quality_measured_at`` added."""
    return [
        {**m, "quality_cosine": q.value(m), "quality_measured_at": q.measured_at(m)}
        for m in measurements
        if m["seq_len"] == length and q.value(m) is not None
    ]


def _quality_text(best: dict, q: Quality) -> str:
    note = measured_note(best["seq_len"], best["quality_measured_at"])
    return f"quality {best['quality_cosine']:.4f} ({q.source()}{'; ' + note if note else ''})"


def _choice(best: dict, dense: dict | None) -> dict:
    """One length's choice, JSON-ready."""
    dense_ms = None if dense is None else dense["latency_ms"]["median"]
    return {
        "seq_len": best["seq_len"],
        "strategy": best["strategy"],
        "block_size": best["block_size"],
        "latency_ms": best["latency_ms"]["median"],
        "dense_ms": dense_ms,
        "peak_mib": best["peak_mib"],
        "quality_cosine": best["quality_cosine"],
        "quality_measured_at": best["quality_measured_at"],
    }


def pays_off(choice: dict) -> bool:
    """Whether a length's choice is sparse and strictly faster than dense there."""
    return choice["strategy"] != DENSE and choice["dense_ms"] is not None and choice["latency_ms"] < choice["dense_ms"]


def break_even(per_length: list[dict]) -> int | None:
    """The shortest length from which every choice (``per_length``, sorted by length) pays off."""
    out = None
    for choice in reversed(per_length):
        if not pays_off(choice):
            break
        out = choice["seq_len"]
    return out


def _break_even_message(per_length: list[dict], length: int | None, floor: float) -> str:
    paid = [c["seq_len"] for c in per_length if pays_off(c)]
    if length is not None:
        on = [c["seq_len"] for c in per_length if c["seq_len"] >= length]
        shortest = " or shorter (the shortest length measured)" if length == per_length[0]["seq_len"] else ""
        return (
            f"break-even length {length}{shortest}: from {length} tokens on (measured: {', '.join(map(str, on))}) "
            f"a sparse configuration with quality >= {floor:g} is faster than dense on this device"
        )
    if not paid:
        return f"sparse attention with quality >= {floor:g} was not faster than dense at any measured length"
    return (
        f"no break-even length: sparse attention with quality >= {floor:g} was faster than dense at "
        f"{', '.join(map(str, paid))} tokens but not at the longest measured length {per_length[-1]['seq_len']}"
    )


def _by_floor(
    measurements: list[dict], lengths: list[int], seq_len: int | None, q: Quality, floor: float, floor_name: str
) -> dict:
    per_length = []
    for length in lengths:
        recs = candidates(measurements, length, q)
        ok = [r for r in recs if r["quality_cosine"] >= floor and (r["strategy"] == DENSE or r["density"] < 1)]
        if ok:
            best = min(ok, key=lambda r: (r["latency_ms"]["median"], -r["quality_cosine"]))
            per_length.append(_choice(best, next((r for r in recs if r["strategy"] == DENSE), None)))
    length = break_even(per_length)
    out = {"floor": floor, "per_length": per_length, "break_even": length}
    out["break_even_message"] = _break_even_message(per_length, length, floor)
    at = next((c for c in per_length if c["seq_len"] == seq_len), None)
    if at is None:
        if seq_len not in lengths:
            why = "nothing was measured"
        elif not candidates(measurements, seq_len, q):
            why = f"the quality measured ({q.source()}) covers none of the configurations measured"
        else:
            why = f"no configuration reached quality {floor:g}"
        return {**out, "found": False, "message": f"{why} at sequence length {seq_len} (measured: {lengths})"}
    mem = "not measured" if at["peak_mib"] is None else f"{at['peak_mib']:.1f} MiB"
    speed = ""
    if at["dense_ms"] is not None and at["strategy"] != DENSE:
        speed = f" ({at['dense_ms'] / at['latency_ms']:.2f}x faster than dense's {at['dense_ms']:.1f} ms)"
    why = (
        f"the fastest configuration with quality >= {floor:g} ({floor_name})"
        if at["strategy"] != DENSE
        else f"no sparse configuration with quality >= {floor:g} ({floor_name}) was faster than dense here"
    )
    msg = f"at length {seq_len}: {label(at['strategy'], at['block_size'])}: {at['latency_ms']:.1f} ms{speed}, {mem}, "
    msg += f"{_quality_text(at, q)}: {why}"
    return {**out, **at, "found": True, "message": msg}


def recommend(
    measurements: list[dict],
    seq_len: int | None,
    c: Constraints,
    model_quality: dict | None = None,
    floor: float = DEFAULT_MIN_QUALITY,
) -> dict:
    """The recommendation as a JSON-ready dict with a human ``message`` (see the module doc).

    ``model_quality``: what :func:`~sparseformer.bench.model_quality.model_quality` returned, or
    None for the encoder output cosine. ``floor``: the quality floor used when ``c`` gives no budget
    and no ``min_quality``."""
    lengths = sorted({m["seq_len"] for m in measurements})
    if seq_len is None:
        seq_len = lengths[-1] if lengths else None
    q = Quality.of(model_quality)
    base = {"seq_len": seq_len, "constraints": c.given(), "quality_source": q.source(), "relax": []}
    given = c.given()
    if c.budget_ms is None and c.budget_mb is None:
        named = c.min_quality is not None
        floor, name = (c.min_quality, "--min-quality") if named else (floor, "the default floor")
        return {**base, **_by_floor(measurements, lengths, seq_len, q, floor, name)}
    recs = candidates(measurements, seq_len, q)
    if not recs:
        msg = f"nothing was measured at sequence length {seq_len} (measured: {lengths or 'none'})"
        return {**base, "found": False, "message": msg}
    ok = [r for r in recs if all(_meets(r, k, v) for k, v in given.items())]
    if ok:
        best = max(ok, key=lambda r: (r["quality_cosine"], -r["latency_ms"]["median"]))
        mem = "not measured" if best["peak_mib"] is None else f"{best['peak_mib']:.1f} MiB"
        msg = (
            f"at length {seq_len}: {label(best['strategy'], best['block_size'])}: "
            f"{best['latency_ms']['median']:.1f} ms, {mem}, {_quality_text(best, q)}"
        )
        dense = next((r for r in recs if r["strategy"] == DENSE), None)
        return {**base, **_choice(best, dense), "found": True, "message": msg}
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
