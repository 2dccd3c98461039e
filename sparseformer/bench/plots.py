"""PNG plots of a results dict (matplotlib, Agg backend, imported lazily).

* ``latency.png``: median encoder latency against sequence length, log-log, one line per
  (strategy, block size), dense in black.
* ``memory.png``: peak memory against sequence length, the same lines.
* ``pareto.png``: quality (the recommendation's) against latency at one length; the Pareto
  front (no other point is both faster and better) is joined and only its points are labelled
  (placed so that labels do not overprint each other); every point is in the legend.
* ``layouts.png``: the tile states of each strategy's layout (head 0) at that length, one row
  per block size: dark = full tile, mid = partial tile, white = skipped.
"""

from __future__ import annotations

import os

from ..files import write_atomic
from ..patterns.base import Pattern
from .quality import Quality
from .strategies import DENSE

FILES = ("latency.png", "memory.png", "pareto.png", "layouts.png")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend; ImportError naming the extra."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("matplotlib is not installed; pip install sparseformer[plot]") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str) -> None:
    """Write ``fig`` to ``path`` as a PNG (temporary name, then renamed)."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _series(measurements: list[dict]) -> dict[tuple[str, int | None], list[dict]]:
    out: dict[tuple[str, int | None], list[dict]] = {}
    for m in measurements:
        out.setdefault((m["strategy"], m["block_size"]), []).append(m)
    return {k: sorted(v, key=lambda m: m["seq_len"]) for k, v in out.items()}


def _style(plt, names: list[str], key: tuple[str, int | None], block_sizes: list[int]) -> dict:
    name, bs = key
    if name == DENSE:
        return {"color": "black", "linewidth": 2.5, "marker": "s", "label": "dense (SDPA)"}
    color = plt.get_cmap("tab10")(names.index(name) % 10)
    dash = ("-", "--", ":", "-.")[block_sizes.index(bs) % 4]
    return {"color": color, "linestyle": dash, "marker": "o", "markersize": 3, "label": f"{name} bs={bs}"}


def _against_length(plt, results: dict, path: str, value, ylabel: str, title: str) -> None:
    series = _series(results["measurements"])
    names = sorted({k[0] for k in series if k[0] != DENSE})
    block_sizes = sorted({k[1] for k in series if k[1] is not None})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for key, recs in series.items():
        pts = [(m["seq_len"], value(m)) for m in recs if value(m) is not None and value(m) > 0]
        if pts:
            ax.plot(*zip(*pts), **_style(plt, names, key, block_sizes))
            drawn += 1
    if drawn:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "not measured on this system", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    save_png(fig, path)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, quality) that no other point beats on both (faster or as
    fast, and better), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# Label positions tried around a point, in points: (dx, dy, horizontal alignment, vertical alignment).
_OFFSETS = [(dx, dy, "left" if dx >= 0 else "right", "bottom" if dy >= 0 else "top")
            for dy in (4, -4, 14, -14, 24, -24) for dx in (5, -5)]  # fmt: skip


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, xy: list[tuple[float, float]], texts: list[str], fontsize: float = 6.5) -> list:
    """Annotate each point ``xy[i]`` with ``texts[i]`` at the first offset of :data:`_OFFSETS`
    whose box overlaps no label placed before, no point and nothing outside the axes (else at the
    offset that overlaps least); returns the annotations."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    r = 3.0  # half a marker, in pixels
    marks = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in ax.transData.transform(xy)]
    placed, out = [], []
    for (x, y), text in zip(xy, texts):
        best = None
        for dx, dy, ha, va in _OFFSETS:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize)
            box = t.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, ax.bbox)
            cost = outside + sum(_overlap(box, b) for b in placed + marks)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, t, box)
            else:
                t.remove()
            if cost == 0:
                break
        placed.append(best[2])
        out.append(best[1])
    return out


def _pareto(plt, results: dict, length: int | None, path: str, q: Quality, floor: float | None) -> None:
    recs = [m for m in results["measurements"] if m["seq_len"] == length and q.value(m) is not None]
    names = sorted({m["strategy"] for m in recs if m["strategy"] != DENSE})
    block_sizes = sorted({m["block_size"] for m in recs if m["block_size"] is not None})
    fig, ax = plt.subplots(figsize=(8, 4.8))
    points = [(m["latency_ms"]["median"], q.value(m)) for m in recs]
    for m, (x, y) in zip(recs, points):
        if m["strategy"] == DENSE:
            ax.scatter([x], [y], color="black", marker="*", s=70, label="dense (SDPA)", zorder=3)
        else:
            color = plt.get_cmap("tab10")(names.index(m["strategy"]) % 10)
            marker = "os^D"[block_sizes.index(m["block_size"]) % 4]
            ax.scatter([x], [y], color=color, marker=marker, s=22, label=f"{m['strategy']} bs={m['block_size']}")
    front = pareto_front(points)
    if front:
        ax.plot(*zip(*(points[i] for i in front)), color="tab:red", linewidth=1.0, zorder=1, label="Pareto front")
    if floor is not None:
        ax.axhline(floor, color="gray", linestyle="--", linewidth=0.8, label=f"default quality floor {floor:g}")
    ax.set_xscale("log")
    ax.set_xlabel("median encoder latency (ms)")
    note = q.note(length) if length is not None else ""
    ax.set_ylabel(q.source().replace(" (", "\n("), fontsize=7)
    ax.set_title(f"quality vs cost at length {length}" + (f" ({note})" if note else ""), fontsize=9)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="every point", title_fontsize=6)
    fig.tight_layout()
    fig.canvas.draw()  # final limits and transforms, so labels can be placed in pixels
    place_labels(
        ax,
        [points[i] for i in front],
        [recs[i]["strategy"] if recs[i]["block_size"] is None else f"{recs[i]['strategy']} {recs[i]['block_size']}"
         for i in front],
    )  # fmt: skip
    save_png(fig, path)
    plt.close(fig)


def _layouts(plt, layouts: dict[tuple[str, int], Pattern], length: int | None, heads: int, path: str) -> None:
    names = list(dict.fromkeys(k[0] for k in layouts))
    sizes = sorted({k[1] for k in layouts})
    nr, nc = max(len(sizes), 1), max(len(names), 1)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc, 2.3 * nr), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for (name, bs), pattern in layouts.items():
        ax = axes[sizes.index(bs)][names.index(name)]
        lay = pattern.compile(length, heads, bs)
        ax.imshow(lay.to_block_states()[0].numpy(), cmap="Greys", vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(f"{name}\nbs={bs}, density {lay.density:.2f}", fontsize=7)
    fig.suptitle(f"tile states at length {length} (head 0): dark full, grey partial, white skipped", fontsize=8)
    save_png(fig, path)
    plt.close(fig)


def write_plots(
    results: dict,
    out_dir: str,
    length: int | None,
    layouts: dict[tuple[str, int], Pattern],
    q: Quality | None = None,
    floor: float | None = None,
) -> list[str]:
    """Write the four PNGs into ``out_dir``; returns their file names. ``q``: the quality the
    Pareto plot shows (default: the encoder cosine); ``floor``: a quality floor to draw there."""
    plt = pyplot()
    _against_length(
        plt, results, os.path.join(out_dir, FILES[0]), lambda m: m["latency_ms"]["median"],
        "median encoder latency (ms)", "latency vs sequence length",
    )  # fmt: skip
    _against_length(
        plt, results, os.path.join(out_dir, FILES[1]), lambda m: m["peak_mib"],
        "peak memory of one call (MiB)", "memory vs sequence length",
    )  # fmt: skip
    _pareto(plt, results, length, os.path.join(out_dir, FILES[2]), q or Quality(), floor)
    _layouts(plt, layouts, length, results["workload"]["heads"], os.path.join(out_dir, FILES[3]))
    return list(FILES)
