"""PNG plots of a results dict (matplotlib, Agg backend, imported lazily).

* ``latency.png``: median encoder latency against sequence length, log-log, one line per
  (strategy, block size), dense in black.
* ``memory.png``: peak memory against sequence length, the same lines.
* ``pareto.png``: cosine vs dense against latency at one length; the Pareto front (no other
  point is both faster and better) is joined.
* ``layouts.png``: the tile states of each strategy's layout (head 0) at that length, one row
  per block size: dark = full tile, mid = partial tile, white = skipped.
"""

from __future__ import annotations

import os

from ..patterns.base import Pattern
from .files import write_atomic
from .strategies import DENSE

FILES = ("latency.png", "memory.png", "pareto.png", "layouts.png")


def _plt():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"plots need matplotlib ({e}); install it with: pip install sparseformer[plot]") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
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
    _save(fig, path)
    plt.close(fig)


def _pareto(plt, results: dict, length: int | None, path: str) -> None:
    recs = [m for m in results["measurements"] if m["seq_len"] == length]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = sorted(((m["latency_ms"]["median"], m["quality_cosine"], m) for m in recs), key=lambda t: (t[0], -t[1]))
    front, best = [], float("-inf")
    for x, y, _ in pts:
        if y > best:
            front.append((x, y))
            best = y
    for x, y, m in pts:
        label = m["strategy"] if m["block_size"] is None else f"{m['strategy']} {m['block_size']}"
        ax.scatter([x], [y], color="black" if m["strategy"] == DENSE else "tab:blue", s=18)
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if front:
        ax.plot(*zip(*front), color="tab:red", linewidth=1.2, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("median encoder latency (ms)")
    ax.set_ylabel("cosine vs dense")
    ax.set_title(f"quality vs cost at length {length}")
    ax.grid(True, alpha=0.3)
    _save(fig, path)
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
    _save(fig, path)
    plt.close(fig)


def write_plots(results: dict, out_dir: str, length: int | None, layouts: dict[tuple[str, int], Pattern]) -> list[str]:
    """Write the four PNGs into ``out_dir``; returns their file names."""
    plt = _plt()
    _against_length(
        plt, results, os.path.join(out_dir, FILES[0]), lambda m: m["latency_ms"]["median"],
        "median encoder latency (ms)", "latency vs sequence length",
    )  # fmt: skip
    _against_length(
        plt, results, os.path.join(out_dir, FILES[1]), lambda m: m["peak_mib"],
        "peak memory of one call (MiB)", "memory vs sequence length",
    )  # fmt: skip
    _pareto(plt, results, length, os.path.join(out_dir, FILES[2]))
    _layouts(plt, layouts, length, results["workload"]["heads"], os.path.join(out_dir, FILES[3]))
    return list(FILES)
