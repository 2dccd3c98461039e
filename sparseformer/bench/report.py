"""Tables: the Markdown report (``report.md``) and the ranked table printed at the end.

The ranked table covers one length (the recommendation's, else the longest measured): rows
sorted by median encoder latency, with the speed-up over dense (dense median / row median)."""

from __future__ import annotations

from .strategies import DENSE

COLUMNS = (
    "strategy", "block", "latency ms", "± ms", "speed-up", "attention ms", "peak MiB",
    "attn GFLOP", "density", "block density", "cosine vs dense",
)  # fmt: skip
SHORT = ("strategy", "bs", "ms", "±", "speed-up", "attn ms", "MiB", "GFLOP", "dens", "blk dens", "cosine")


def _fmt_mem(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def rows_at(measurements: list[dict], seq_len: int) -> list[list[str]]:
    """Table rows for one length, fastest first."""
    recs = sorted((m for m in measurements if m["seq_len"] == seq_len), key=lambda m: m["latency_ms"]["median"])
    dense = next((m for m in recs if m["strategy"] == DENSE), None)
    out = []
    for m in recs:
        lat = m["latency_ms"]
        speed = f"{dense['latency_ms']['median'] / lat['median']:.2f}x" if dense else "n/a"
        out.append([
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
        ])  # fmt: skip
    return out


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


def print_ranked(results: dict) -> None:
    """The ranked table on stdout (with rich when installed, else plain text)."""
    length = ranked_length(results)
    if length is None:
        print("nothing was measured")
        return
    rows = rows_at(results["measurements"], length)
    title = f"sequence length {length}, fastest first"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(plain_table(SHORT, rows))
        return
    table = Table(title=title)
    for c in SHORT:
        table.add_column(c, justify="left" if c == "strategy" else "right")
    for r in rows:
        table.add_row(*r)
    console = Console()
    console.width = max(console.width, 110)
    console.print(table)


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def markdown_report(results: dict, plots: list[str]) -> str:
    """The whole ``report.md``."""
    w, m, s = results["workload"], results["machine"], results["settings"]
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
        "- cosine vs dense: mean over tokens of the cosine of the encoder outputs (random weights)",
        f"- Sweep stopped: {results['stopped_because']}",
        "",
    ]
    rec = results.get("recommendation")
    if rec:
        out += ["## Recommendation", "", rec["message"], ""]
        if rec.get("found") and rec["strategy"] == DENSE:
            out += ["```python", rec["code"], "```", ""]
        elif rec.get("found"):
            out += ["```python", "from sparseformer import patterns as P", f"pattern = {rec['code']}", "```", ""]
    for length in sorted({x["seq_len"] for x in results["measurements"]}):
        table = markdown_table(COLUMNS, rows_at(results["measurements"], length))
        out += [f"## Sequence length {length}", "", table, ""]
    mq = results.get("model_quality")
    if mq:
        out += ["## Quality on a pretrained model", ""]
        if mq["available"]:
            out += [
                f"Model `{mq['model']}`; {mq['texts']} texts of {mq['seq_len']} tokens; mean-pooled embedding "
                "cosine against the unchanged model.",
                "",
                markdown_table(
                    ("strategy", "block", "embedding cosine"),
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
