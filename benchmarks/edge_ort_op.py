"""The native kernel inside ONNX Runtime: MiniLM-shaped encoder (edge_encoder.py's models: 6 layers,
hidden 384, 12 heads, SlidingWindow(1, unit="block") | Global(blocks=1), block 64) exported three
ways, timed with ONNX Runtime: the custom-op file (to_onnx(..., custom_op=True)), the portable file
(the default) and the dense model exported the same way. Prints the markdown tables of docs/edge.md.

    .venv/bin/python benchmarks/edge_ort_op.py [--lengths 4096 8192] [--threads 2] [--repeat 3] [--rounds 1]
        [--profile]   # also ONNX Runtime's profile of the custom-op and free-attention files: ms per op type
        [--spinning]  # also every file with ONNX Runtime's intra-op spinning on and off, in this process

Linear-layer bound: the time of the same model with free attention (the sparse model exported with
its attention replaced by "return v": every other node identical), the best a free attention could
give; the dense model's attention costs dense ms - bound ms. "of bound" = bound ms / model ms
(100% = attention free). FLOP ceiling: the "of bound" the custom-op model would reach if its
attention ran at the linear layers' FLOP rate, linear FLOPs / (linear + sparse attention FLOPs).
The attention alone: the custom op (one node,
sparseformer.export.ort_op.onnx_op.attention_model) against the native kernel in PyTorch
(sparseformer.kernels.cpu.attention) on the same layout and inputs. Models are timed in fresh child
processes as in edge_encoder.py (best of --repeat runs after a warm-up, --rounds interleaved
rounds; OnnxRunner's defaults: ONNX Runtime's intra-op spinning off for the custom-op file, on for
the others); the attention alone in this process, interleaved, best of.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from edge_encoder import BS, FFN, HEADS, LAYERS, PATTERN, D, measure, models
from torch import nn

from sparseformer.bench.info import machine_line
from sparseformer.export import to_onnx

HEAD_DIM = D // HEADS


def export_free_attention(model: nn.Module, x: tuple, path: Path) -> Path:
    """``model`` exported with every sparse attention replaced by ``out = v`` (free attention)."""
    with mock.patch("sparseformer.nn.multihead_attention.pattern_attention", lambda q, k, v, *a, **kw: v):
        return to_onnx(model, x, path)


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def attention_alone(length: int, repeat: int, rounds: int, threads: int) -> dict:
    """Seconds of one layer's attention: the custom op in ORT and the native kernel in PyTorch;
    best of, interleaved."""
    import onnxruntime as ort

    from sparseformer.export.ort_op import library_path
    from sparseformer.export.ort_op.onnx_op import attention_model
    from sparseformer.kernels import cpu

    torch.set_num_threads(threads)
    layout = PATTERN.compile(q_len=length, num_heads=HEADS, block_size=BS)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, HEADS, length, HEAD_DIM, generator=g) for _ in range(3))
    scale = 1 / math.sqrt(HEAD_DIM)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(library_path()))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OnnxRunner for custom-op files
    model = attention_model(layout, batch=1, kv_heads=HEADS, head_dim=HEAD_DIM, scale=scale)
    custom = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}
    out = torch.from_numpy(custom.run(None, feed)[0])
    err = (out - cpu.attention(q, k, v, layout, scale=scale)).abs().max().item()
    runs = {
        "custom": lambda: custom.run(None, feed),
        "torch": lambda: cpu.attention(q, k, v, layout, scale=scale),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, fn in runs.items():
            best[name] = min(best[name], best_of(fn, repeat))
    return {**best, "err": err}


def flop_ceiling(length: int) -> float:
    """linear FLOPs / (linear + sparse attention FLOPs over the visited tiles), per layer."""
    from sparseformer.layout import flops

    linear = 2.0 * length * (4 * D * D + 2 * D * FFN)
    return linear / (linear + flops(PATTERN.compile(q_len=length, num_heads=HEADS, block_size=BS), HEAD_DIM))


def profile(path: Path, length: int, runs: int, threads: int) -> dict[str, float]:
    """ONNX Runtime's own profile of ``path``: milliseconds per run spent in each op type (node
    events only, summed over the graph), over ``runs`` runs after a warm-up; "(run)" is the
    whole run's time. Spinning as ``OnnxRunner``'s default."""
    import json

    import onnxruntime as ort

    from sparseformer.export.onnx import uses_custom_op
    from sparseformer.export.ort_op import library_path

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(library_path()))
    # as OnnxRunner's default: no spinning for a custom-op file
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if uses_custom_op(path) else "1")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: torch.randn(1, length, D).numpy()}
    session.run(None, feed)  # warm-up, in the profile: dropped below
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first = run_starts[1]  # the second run: the first is the warm-up
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            op = e["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / runs
        elif e.get("name") == "model_run" and e["ts"] >= first:
            per_op["(run)"] = per_op.get("(run)", 0.0) + e["dur"] / 1e3 / runs
    return per_op


def spinning_ab(files: dict[str, Path], length: int, repeat: int, rounds: int, threads: int) -> dict:
    """Seconds per run of each file with ONNX Runtime's intra-op spinning on and off
    (``OnnxRunner(spinning=...)``), sessions in this process, interleaved, best of."""
    from sparseformer.export import OnnxRunner

    x = torch.randn(1, length, D)
    runners = {
        (name, on): OnnxRunner(path, threads=threads, spinning=on)
        for name, path in files.items()
        for on in (True, False)
    }
    runs = {key: functools.partial(runner, x) for key, runner in runners.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for key, fn in runs.items():
            best[key] = min(best[key], best_of(fn, repeat))
    return best


def main() -> int:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per child process (and per attention round)")
    ap.add_argument("--rounds", type=int, default=1, help="child processes per file, interleaved")
    ap.add_argument("--profile", action="store_true", help="also profile the custom-op and free-attention files")
    ap.add_argument("--spinning", action="store_true", help="also time every file with intra-op spinning on and off")
    args = ap.parse_args()
    sparse, dense = models()
    tmp = Path(tempfile.mkdtemp(prefix="edge_ort_op_"))
    rows = []
    for L in args.lengths:
        x = (torch.randn(1, L, D),)
        files = {
            "custom": to_onnx(sparse, x, tmp / f"custom_L{L}.onnx", custom_op=True),
            "portable": to_onnx(sparse, x, tmp / f"portable_L{L}.onnx"),
            "dense": to_onnx(dense, x, tmp / f"dense_L{L}.onnx"),
            "free": export_free_attention(sparse, x, tmp / f"free_L{L}.onnx"),
        }
        best = dict.fromkeys(files, float("inf"))
        for _ in range(args.rounds):  # interleaved, so load from other processes hits all alike
            for name, f in files.items():
                r = measure("onnx", f, L, args.repeat, args.threads, tmp / f"y_{name}.npy")
                best[name] = min(best[name], r["min_s"])
        attn = attention_alone(L, args.repeat, max(args.rounds, 2), args.threads)
        prof = None
        if args.profile:
            prof = {name: profile(files[name], L, args.repeat, args.threads) for name in ("custom", "free")}
        spin = spinning_ab(files, L, args.repeat, max(args.rounds, 2), args.threads) if args.spinning else None
        rows.append({"L": L, **{k: 1e3 * v for k, v in best.items()}, "attn": attn, "profile": prof, "spin": spin})
        for f in files.values():
            f.unlink()
    report(rows, args)
    return 0


def report(rows: list[dict], args) -> None:
    print(
        f"\nEncoder {LAYERS}x(384, 12 heads, FFN 1536), batch 1, {args.threads} threads, ONNX Runtime CPU, best of "
        f"{args.repeat} runs x {args.rounds} round(s); sparse = SlidingWindow(1, unit='block') | Global(blocks=1), "
        "block 64. Bound = the same model with free attention (out = v).\n"
    )
    print(
        "| L | dense ms | linear-layer bound ms | dense attention ms | custom-op ms | portable ms | "
        "bound speed-up | custom-op speed-up | portable speed-up | custom-op of bound | portable of bound | "
        "FLOP ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bound = r["free"]
        print(
            f"| {r['L']} | {r['dense']:.1f} | {bound:.1f} | {r['dense'] - bound:.1f} | {r['custom']:.1f} | "
            f"{r['portable']:.1f} | {r['dense'] / bound:.2f}x | {r['dense'] / r['custom']:.2f}x | "
            f"{r['dense'] / r['portable']:.2f}x | {bound / r['custom']:.0%} | {bound / r['portable']:.0%} | "
            f"{flop_ceiling(r['L']):.0%} |"
        )
    print("\nOne layer's attention alone, [1, 12, L, 32], same layout and inputs:\n")
    print("| L | custom op in ORT ms | native kernel in PyTorch ms | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        a = r["attn"]
        print(
            f"| {r['L']} | {1e3 * a['custom']:.1f} | {1e3 * a['torch']:.1f} | {a['custom'] / a['torch']:.2f}x | "
            f"{a['err']:.1e} |"
        )
    for r in rows:
        if r["spin"] is None:
            continue
        spin = {key: 1e3 * v for key, v in r["spin"].items()}
        print(f"\nONNX Runtime's intra-op spinning on and off at L = {r['L']} (one process, interleaved):\n")
        print("| file | spinning on ms | spinning off ms | off / on | of bound, on | of bound, off |")
        print("|---|---|---|---|---|---|")
        for name in ("custom", "portable", "dense", "free"):
            on, off = spin[name, True], spin[name, False]
            print(
                f"| {name} | {on:.1f} | {off:.1f} | {off / on:.2f} | {spin['free', True] / on:.0%} | "
                f"{spin['free', False] / off:.0%} |"
            )
    for r in rows:
        if r["profile"] is None:
            continue
        custom, free = r["profile"]["custom"], r["profile"]["free"]
        print(
            f"\nONNX Runtime's profile at L = {r['L']}, ms per run by op type (node kernel times, {args.repeat} runs):\n"
        )
        print("| op type | custom-op file ms | free-attention file ms | difference ms |")
        print("|---|---|---|---|")
        for op in sorted(set(custom) | set(free), key=lambda o: -max(custom.get(o, 0.0), free.get(o, 0.0))):
            c, f = custom.get(op, 0.0), free.get(op, 0.0)
            print(f"| {op} | {c:.1f} | {f:.1f} | {c - f:+.1f} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
