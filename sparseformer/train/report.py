"""The study's report: ``report.md`` and three PNGs, each written atomically.

* ``loss_vs_steps.png``: held-out loss (left axis, nats/byte; right axis, bits/byte) against
  optimizer steps, equal-steps arm, one line per strategy, dense in black;
* ``loss_vs_seconds.png``: the same against training seconds, equal wall-clock arm (the
  equal-steps arm when there is none);
* ``loss_vs_density.png``: final held-out loss against the fraction of causal pairs computed,
  both arms.
"""

from __future__ import annotations

import math
import os

from ..bench.plots import pyplot, save_png
from .strategies import DENSE

PLOTS = ("loss_vs_steps.png", "loss_vs_seconds.png", "loss_vs_density.png")


def _style(plt, names: list[str], name: str) -> dict:
    if name == DENSE:
        return {"color": "black", "linewidth": 2.2, "label": "dense (SDPA)"}
    return {"color": plt.get_cmap("tab10")(names.index(name) % 10), "linewidth": 1.3, "label": name}


def _bpb_axis(ax) -> None:
    ax.secondary_yaxis("right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2))).set_ylabel(
        "held-out bits per byte"
    )


def _curves(plt, arm: dict, x: str, xlabel: str, title: str, path: str) -> None:
    names = list(arm)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in arm.items():
        ax.plot([c[x] for c in s["curve"]], [c["heldout_loss"] for c in s["curve"]], **_style(plt, names, name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out loss (nats per byte)")
    _bpb_axis(ax)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)


def _density(plt, result: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, marker, label in (("steps_arm", "o", "equal steps"), ("time_arm", "^", "equal wall-clock")):
        for name, s in result[arm].items():
            ax.scatter(
                [s["of_causal"]], [s["heldout_loss"]], marker=marker, color="black" if name == DENSE else "tab:blue"
            )
            ax.annotate(f"{name} ({label})", (s["of_causal"], s["heldout_loss"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("pairs computed / dense causal pairs")
    ax.set_ylabel("final held-out loss (nats per byte)")
    _bpb_axis(ax)
    ax.set_title("final held-out loss against attention density")
    ax.grid(True, which="both", alpha=0.3)
    save_png(fig, path)
    plt.close(fig)


def _vs_dense(value: float, arm: dict) -> str:
    return f"{100 * (value / arm[DENSE]['heldout_loss'] - 1):+.2f}%" if DENSE in arm else "n/a"


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    cfg, m, steps_arm, time_arm = result["config"], result["machine"], result["steps_arm"], result["time_arm"]
    lines = [
        "# Sparse vs dense attention, trained from scratch",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']} ({m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads per process, "
        f"{result['world_size']} process(es)), {m['platform']}.",
        "",
        f"Model: byte-level `SparseCausalLM`, d_model {cfg['d_model']}, {cfg['n_layers']} layers, {cfg['n_heads']} heads, "
        f"block size {cfg['block_size']}; context {cfg['context']} bytes, global batch {cfg['batch_size']}, "
        f"AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to {cfg['min_lr_ratio']}x), seed {cfg['seed']}. "
        f"Held-out loss on {cfg['eval_contexts']} fixed contexts of held-out files, every {cfg['eval_every']} steps.",
        "",
        f"## Equal steps ({cfg['steps']} steps each)",
        "",
        "| strategy | density | of causal | train s | tokens/s | held-out loss | bits/byte | vs dense | "
        "train loss (eval) | gap (train − held-out) | stops falling at step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in steps_arm.items():
        lines.append(
            f"| {name} | {s['density']:.3f} | {s['of_causal']:.3f} | {s['seconds']:.1f} | {_fmt(s['tokens_per_s'], '.0f')} "
            f"| {s['heldout_loss']:.4f} | {s['heldout_bpb']:.4f} | {_vs_dense(s['heldout_loss'], steps_arm)} "
            f"| {s['train_eval_loss']:.4f} | {s['gap']:+.4f} | {'still falling' if s['stop_step'] is None else s['stop_step']} |"
        )
    if time_arm:
        lines += [
            "",
            f"## Equal wall-clock (budget {result['budget_seconds']:.1f} s of training each)",
            "",
            "| strategy | steps | train s (measured) | held-out loss | bits/byte | vs dense | gap (train − held-out) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in time_arm.items():
            lines.append(
                f"| {name} | {s['steps']} | {s['seconds']:.1f} | {s['heldout_loss']:.4f} | {s['heldout_bpb']:.4f} "
                f"| {_vs_dense(s['heldout_loss'], time_arm)} | {s['gap']:+.4f} |"
            )
    if "bigbird" in steps_arm and "bigbird-noreweight" in steps_arm:
        a, b = steps_arm["bigbird"], steps_arm["bigbird-noreweight"]
        lines += [
            "",
            "## Re-weighting ablation",
            "",
            "The same random blocks (seed 0) and the same training seed, with and without the `+log(C/n)` score "
            f"correction: held-out loss {a['heldout_loss']:.4f} with, {b['heldout_loss']:.4f} without "
            f"({100 * (a['heldout_loss'] / b['heldout_loss'] - 1):+.2f}%) at {a['steps']} steps.",
        ]
    lines += ["", "## Patterns", "", "| strategy | pattern (`from sparseformer import patterns as P`) |", "|---|---|"]
    for name, s in steps_arm.items():
        cell = "dense SDPA, is_causal=True" if s["code"] is None else "`" + s["code"].replace("|", "\\|") + "`"
        lines.append(f"| {name} | {cell} |")
    lines += ["", "## Plots", ""] + [f"![{p[:-4]}]({p})" for p in PLOTS]
    lines += [
        "",
        "Definitions (sparseformer.train.study): density = pairs / L²; of causal = pairs / (L(L+1)/2); "
        "gap = train loss − held-out loss on fixed evaluation contexts; the loss *stops falling* at the first "
        "evaluation after which no later one is more than 1% lower. Seconds count training steps only.",
        "",
    ]
    return "\n".join(lines)


def write_report(result: dict, out_dir: str) -> None:
    """``report.md`` and the PNGs of a study result (see :func:`sparseformer.train.study.run`)."""
    from ..files import write_text

    plt = pyplot()
    _curves(plt, result["steps_arm"], "step", "optimizer steps", "held-out loss, equal steps",
            os.path.join(out_dir, PLOTS[0]))  # fmt: skip
    arm = result["time_arm"] or result["steps_arm"]
    _curves(plt, arm, "seconds", "training seconds", "held-out loss, equal wall-clock", os.path.join(out_dir, PLOTS[1]))
    _density(plt, result, os.path.join(out_dir, PLOTS[2]))
    write_text(os.path.join(out_dir, "report.md"), markdown(result))
