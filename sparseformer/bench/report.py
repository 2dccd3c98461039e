"""Tables: the Markdown report (``report.md``) and what the command prints at the end.

The ranked table covers one length (the recommendation's, else the longest measured): rows
sorted by median encoder latency, with the speed-up over dense (dense median / row median).
Every quality column says the length it was measured at: the encoder cosine at the table's
length, the pretrained model's embedding cosine at its own (512 tokens by default)."""

from __future__ import annotations

import sys

from .quality import Quality, measured_note
from .recommend import DEFAULT_MIN_QUALITY, FLOOR_WHY
from .strategies import DENSE

COLUMNS = (
    "strategy", "block", "latency ms", "± ms", "speed-up", "attention ms", "peak MiB",
    "attn GFLOP", "density", "block density",
)  # fmt: skip
SHORT = ("strategy", "bs", "ms", "±", "speed-up", "attn ms", "MiB", "GFLOP", "dens", "blk dens")
RICH_MISSING = "tables in plain text: rich is not installed; pip install sparseformer[bench]"


def _fmt_mem(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def quality_header(length: int, q: Quality, short: bool = False) -> list[str]:
    """The quality columns' names: the encoder cosine at ``length``, then the model's, each with its length."""
    out = [f"cos@{length}" if short else f"encoder cosine vs dense @{length}"]
    if q.on_model:
        out.append(f"model cos@{q.model_len}" if short else f"{q.model} embedding cosine @{q.model_len}")
    return out


def rows_at(measurements: list[dict], seq_len: int, q: Quality | None = None) -> list[list[str]]:
    """Table rows for one length, fastest first; the last columns as :func:`quality_header`."""
    q = q or Quality()
    recs = sorted((m for m in measurements if m["seq_len"] == seq_len), key=lambda m: m["latency_ms"]["median"])
    dense = next((m for m in recs if m["strategy"] == DENSE), None)
    out = []
    for m in recs:
        lat = m["latency_ms"]
        speed = f"{dense['latency_ms']['median'] / lat['median']:.2f}x" if dense else "n/a"
        row = [
            m["strategy"],
            "-" if m["block_size"] is None else str(m["block_size"]),
            f"{lat['median']:.1f}",
            f"{lat['spread']:.1f}",
            speed,
            f"{m['attention_ms']['median']:.2f}",
            _fmt_mem(m["peak_mib"]),
            f"{m['attention_flops'] / 1e9:.3g}",
            f"{m['density']:.3f}",
            f"{m['block_density']:.3f}",
            f"{m['quality_cosine']:.4f}",
        ]  # fmt: skip
        if q.on_model:
            value = q.value(m)
            row.append("n/a" if value is None else f"{value:.4f}")
        out.append(row)
    return out


PER_LENGTH = ("length", "recommended", "block", "ms", "dense ms", "speed-up", "quality", "note")


def per_length_table(rec: dict) -> tuple[list[str], list[list[str]]]:
    """The default recommendation, one row per measured length, as (header, rows); a last column,
    ``note``, says where the quality was measured at another length."""
    out = []
    for c in rec.get("per_length", []):
        speed = "n/a" if c["dense_ms"] is None else f"{c['dense_ms'] / c['latency_ms']:.2f}x"
        out.append([
            str(c["seq_len"]),
            c["strategy"],
            "-" if c["block_size"] is None else str(c["block_size"]),
            f"{c['latency_ms']:.1f}",
            "n/a" if c["dense_ms"] is None else f"{c['dense_ms']:.1f}",
            speed,
            f"{c['quality_cosine']:.4f}",
            measured_note(c["seq_len"], c["quality_measured_at"]),
        ])  # fmt: skip
    if not any(r[-1] for r in out):
        return list(PER_LENGTH[:-1]), [r[:-1] for r in out]
    return list(PER_LENGTH), out


def markdown_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plain_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def ranked_length(results: dict) -> int | None:
    rec = results.get("recommendation") or {}
    lengths = sorted({m["seq_len"] for m in results["measurements"]})
    if rec.get("seq_len") in lengths:
        return rec["seq_len"]
    return lengths[-1] if lengths else None


def floor_title(rec: dict) -> str:
    named = "min_quality" in rec.get("constraints", {})
    return f"Fastest with quality >= {rec['floor']:g} per length ({'--min-quality' if named else 'the default floor'})"


def _tables(results: dict, q: Quality) -> list[tuple[str, list[str], list[list[str]]]]:
    length = ranked_length(results)
    out = []
    if length is not None:
        note = q.note(length)
        title = f"sequence length {length}, fastest first" + (f" ({note})" if note else "")
        out.append(
            (title, [*SHORT, *quality_header(length, q, short=True)], rows_at(results["measurements"], length, q))
        )
    rec = results.get("recommendation") or {}
    if rec.get("per_length"):
        out.append((floor_title(rec), *per_length_table(rec)))
    return out


def print_tables(results: dict) -> None:
    """The ranked table and the per-length recommendation on stdout (with rich when installed,
    else plain text, saying so on stderr)."""
    tables = _tables(results, Quality.of(results.get("model_quality")))
    if not results["measurements"]:
        print("nothing was measured")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(RICH_MISSING, file=sys.stderr)
        for title, header, rows in tables:
            print(title)
            print(plain_table(header, rows))
        return
    console = Console()
    console.width = max(console.width, 140)
    for title, header, rows in tables:
        table = Table(title=title)
        for i, c in enumerate(header):
            table.add_column(c, justify="left" if i < 2 or c in ("note", "recommended") else "right", no_wrap=True)
        for r in rows:
            table.add_row(*r)
        console.print(table)


def _headline(rec: dict) -> str:
    return ("Recommended: " if rec["found"] else "No recommendation: ") + rec["message"]


def _break_even(rec: dict) -> str:
    text = rec["break_even_message"]
    return text[0].upper() + text[1:] + "."


def recommendation_lines(rec: dict) -> list[str]:
    """What the command prints last: the break-even length, the answer, then the user code that builds it."""
    out = [_break_even(rec)] if rec.get("break_even_message") else []
    out.append(_headline(rec))
    if rec.get("code"):
        out.append("  one layer of the measured encoder:")
        out += ["    " + line for line in rec["code"].splitlines()]
    if rec.get("sparsify_code"):
        out.append("  the same attention in a Hugging Face model `model` (changed in place):")
        out += ["    " + line for line in rec["sparsify_code"].splitlines()]
    return out


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _recommendation_md(rec: dict) -> list[str]:
    out = ["## Recommendation", ""]
    if rec.get("per_length"):
        out += [
            f"{floor_title(rec)}; quality: the {rec['quality_source']}.",
            "",
            markdown_table(*per_length_table(rec)),
            "",
            _break_even(rec),
            "",
        ]
    out += [_headline(rec), ""]
    for key, what in (("code", "One layer of the measured encoder"), ("sparsify_code", "A Hugging Face `model`")):
        if rec.get(key):
            out += [f"{what}:", "", "```python", rec[key], "```", ""]
    return out


def markdown_report(results: dict, plots: list[str]) -> str:
    """The whole ``report.md``."""
    w, m, s = results["workload"], results["machine"], results["settings"]
    q = Quality.of(results.get("model_quality"))
    status = "complete" if results["complete"] else "PARTIAL (interrupted)" if results["interrupted"] else "partial"
    out = [
        "# sparseformer bench",
        "",
        f"Run {results['started_utc']} ({status}, {results['elapsed_s']:.0f} s): `{' '.join(results['command'])}`",
        "",
        f"- Machine: {_kv(m)}",
        f"- Versions: {_kv(results['versions'])}",
        f"- Workload: {_kv(w)}; input: real text (CPython's help topics, bytes through a fixed random "
        "embedding plus sinusoidal positions); same random weights for every strategy",
        "- Dense baseline: PyTorch's `nn.TransformerEncoderLayer` with its attention computed by "
        "`F.scaled_dot_product_attention` (`SDPAEncoderLayer`); sparse: `sf.nn.SparseTransformerEncoderLayer` "
        "with the same weights",
        f"- Timing: {s['warmup']} warm-up call(s), then at least {s['repeats']} timed calls (more, up to "
        f"{10 * s['repeats']}, until they total {s.get('min_time_s', 0)} s); latency = median of the "
        "whole encoder's forward, ± = spread (max - min); speed-up = dense median / median",
        f"- Peak memory: {s['memory_method'] or 'not measurable on this system'}",
        "- attention ms: one attention call (one layer, random q/k/v); attn GFLOP: 4·bs²·head_dim per "
        "visited tile, all layers; density: attending pairs / all pairs; block density: visited tiles / all tiles",
        "- encoder cosine vs dense @L: mean over tokens of the cosine of the encoder outputs (random weights), "
        "at length L",
    ]
    if q.on_model:
        out.append(
            f"- {q.model} embedding cosine @{q.model_len}: measured at {q.model_len} tokens only, whatever "
            "the table's length (see *Quality on a pretrained model*)"
        )
    out += [f"- Sweep stopped: {results['stopped_because']}", ""]
    rec = results.get("recommendation")
    if rec:
        out += _recommendation_md(rec)
        if rec.get("per_length"):
            out += [f"Why {DEFAULT_MIN_QUALITY:g} by default: {FLOOR_WHY}.", ""]
    for length in sorted({x["seq_len"] for x in results["measurements"]}):
        table = markdown_table([*COLUMNS, *quality_header(length, q)], rows_at(results["measurements"], length, q))
        note = q.note(length)
        out += [f"## Sequence length {length}", ""] + ([f"({note.capitalize()}.)", ""] if note else []) + [table, ""]
    mq = results.get("model_quality")
    if mq:
        out += ["## Quality on a pretrained model", ""]
        if mq["available"]:
            out += [
                f"Model `{mq['model']}`; {mq['texts']} texts of {mq['seq_len']} tokens; mean-pooled embedding "
                "cosine against the unchanged model.",
                "",
                markdown_table(
                    ("strategy", "block", f"embedding cosine @{mq['seq_len']}"),
                    [
                        [
                            r["strategy"],
                            "-" if r["block_size"] is None else str(r["block_size"]),
                            f"{r['embedding_cosine']:.4f}",
                        ]
                        for r in mq["results"]
                    ],
                ),  # fmt: skip
                "",
            ]
        else:
            out += [f"Skipped: {mq['reason']}", ""]
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    for note in results.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"
