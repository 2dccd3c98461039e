"""Sparse vs dense encoder of all-MiniLM-L6-v2's shape (6 layers, 12 heads, hidden 384, FFN
1536, GELU, post-norm; random weights) exported to ONNX and/or ExecuTorch (--formats):
latency, file size fp32 vs int8, int8 quality, peak RSS. Prints the markdown tables of docs/edge.md.

    .venv/bin/python benchmarks/edge_encoder.py [--lengths 1024 2048 4096] [--formats onnx executorch] [--threads 2]
        [--dynamic]     # one dynamic-length file each: the sparse ONNX models, the custom-op .pte
        [--custom-op]   # also the sparse model with the native kernel as a custom op (custom_op=True)

The dense baseline is PyTorch's own nn.TransformerEncoderLayer with the same weights, exported by
the same function. Each latency is measured in a fresh child process (which also gives the peak
RSS of running that file): the best of --repeat runs after one warm-up run, over --rounds child
processes per file, run interleaved (sparse fp32, sparse int8, dense fp32, dense int8, again...),
so that load from other processes hits every variant alike. Best-of, not median, because on a
shared machine interference only ever adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import sparseformer as sf
from sparseformer import patterns as P
from sparseformer.bench.info import machine_line
from sparseformer.export import quantize, to_executorch, to_onnx

D, HEADS, FFN, LAYERS, BS = 384, 12, 1536, 6, 64
PATTERN = P.SlidingWindow(1, unit="block") | P.Global(blocks=1)
MiB = 1 << 20


def models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    sparse_layer = sf.nn.SparseTransformerEncoderLayer(
        D, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True, pattern=PATTERN, block_size=BS
    )
    sparse = nn.TransformerEncoder(sparse_layer, LAYERS, enable_nested_tensor=False).eval()
    dense_layer = nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True)
    dense = nn.TransformerEncoder(dense_layer, LAYERS, enable_nested_tensor=False).eval()
    with torch.no_grad():  # nn.TransformerEncoder deep-copies its layer: give each layer its own weights
        for w in sparse.parameters():
            if w.dim() > 1:
                nn.init.xavier_uniform_(w)
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def child(kind: str, path: str, length: int, repeat: int, threads: int, out_npy: str) -> None:
    """Run one exported file; print JSON {min_s, peak_rss}. Saves the output for quality."""
    import numpy as np

    torch.set_num_threads(threads)
    x = torch.randn(1, length, D, generator=torch.Generator().manual_seed(1))
    if kind == "onnx":
        from sparseformer.export import OnnxRunner

        run = OnnxRunner(path, threads=threads)
    else:
        from sparseformer.export import ExecuTorchRunner

        run = ExecuTorchRunner(path)
        # An honest load: the export's `import executorch.kernels.quantized` registers quantized
        # kernels in-process and would let a .pte that needs them load.
        assert "executorch.kernels.quantized" not in sys.modules, "the child must load with executorch.runtime only"
    y = run(x)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        y = run(x)
        times.append(time.perf_counter() - t0)
    np.save(out_npy, y.numpy())
    print(json.dumps({"min_s": min(times), "peak_rss": peak_rss()}))


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` of ``/proc/self/status`` (reset by
    exec; ``ru_maxrss`` is not: a child inherits its parent's peak at fork), else ``ru_maxrss``."""
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, path: Path, length: int, repeat: int, threads: int, out_npy: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(path), str(length), str(repeat), str(threads), str(out_npy)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"child failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--formats", nargs="+", choices=("onnx", "executorch"), default=["onnx"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per child process")
    ap.add_argument("--skip-int8", action="store_true", help="fp32 only")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per file, interleaved")
    ap.add_argument("--keep", help="folder to keep the exported files in (default: a temporary one)")
    ap.add_argument(
        "--dynamic",
        action="store_true",
        help="export the sparse model (onnx) and with --custom-op the custom-op model (onnx, and executorch) "
        "once, dynamic_length=True up to max(--lengths), traced at the shortest, and time that one file at every "
        "length (the dense model and the rest stay per length)",
    )
    ap.add_argument(
        "--custom-op",
        action="store_true",
        help="also export the sparse model with custom_op=True (the native kernel inside the runtime) and time it, "
        "fp32 and int8 (quantize_onnx of its file; to_executorch_int8(..., custom_op=True))",
    )
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, length, repeat, threads, out_npy = args.child
        child(kind, path, int(length), int(repeat), int(threads), out_npy)
        return 0

    import numpy as np

    from sparseformer.export.quantize import cosine

    sparse, dense = models()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edge_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    variants = [("sparse", sparse, False), ("dense", dense, False)]
    if args.custom_op:
        variants.insert(1, ("custom op", sparse, True))
    # (format, name) -> {"fp32": path[, "int8": path]}: one file for every length, for the sparse variants
    # that export so (ONNX: both; ExecuTorch: the custom op; fp32 and int8 each)
    dynamic = {}
    if args.dynamic:
        x = (torch.randn(1, min(args.lengths), D),)
        options = dict(dynamic_length=True, max_length=max(args.lengths))
        for name, model, custom_op in variants[:-1]:
            stem = name.replace(" ", "_")
            if "onnx" in args.formats:
                f32 = to_onnx(model, x, tmp / f"{stem}_dynamic.onnx", custom_op=custom_op, **options)
                dynamic["onnx", name] = {"fp32": f32}
                if not args.skip_int8:
                    dynamic["onnx", name]["int8"] = quantize.quantize_onnx(f32, tmp / f"{stem}_dynamic_int8.onnx")
            if "executorch" in args.formats and custom_op:
                f32 = to_executorch(model, x, tmp / f"{stem}_dynamic.pte", custom_op=True, **options)
                dynamic["executorch", name] = {"fp32": f32}
                if not args.skip_int8:
                    i8 = quantize.to_executorch_int8(
                        model, x, tmp / f"{stem}_dynamic_int8.pte", custom_op=True, **options
                    )
                    dynamic["executorch", name]["int8"] = i8
    jobs = [(k, L) for L in args.lengths for k in args.formats]
    for kind, L in tqdm(jobs, desc="export+run", file=sys.stderr):
        x = (torch.randn(1, L, D),)
        ext = "onnx" if kind == "onnx" else "pte"
        files = {}
        for name, model, custom_op in variants:
            stem = name.replace(" ", "_")
            f32, i8 = tmp / f"{stem}_L{L}.{ext}", tmp / f"{stem}_L{L}_int8.{ext}"
            shared = dynamic.get((kind, name), {})
            files.update({(name, q): f for q, f in shared.items()})
            if "fp32" not in shared:
                (to_onnx if kind == "onnx" else to_executorch)(model, x, f32, custom_op=custom_op)
                files[name, "fp32"] = f32
            if not args.skip_int8 and "int8" not in shared:
                if kind == "onnx":
                    quantize.quantize_onnx(f32, i8)
                else:
                    quantize.to_executorch_int8(model, x, i8, custom_op=custom_op)
                files[name, "int8"] = i8
        best = {key: float("inf") for key in files}
        peak = dict.fromkeys(files, 0)
        for _ in range(args.rounds):  # interleaved, so load from other processes hits all alike
            for key, f in files.items():
                r = measure(kind, f, L, args.repeat, args.threads, tmp / f"y_{key[0]}_{key[1]}.npy")
                best[key] = min(best[key], r["min_s"])
                peak[key] = max(peak[key], r["peak_rss"])
        for name, _, _ in variants:
            if (name, "int8") not in files:
                files[name, "int8"] = files[name, "fp32"]
                best[name, "int8"], peak[name, "int8"] = float("nan"), float("nan")
            y32 = torch.from_numpy(np.load(tmp / f"y_{name}_fp32.npy"))
            y8 = (
                y32
                if files[name, "int8"] == files[name, "fp32"]
                else torch.from_numpy(np.load(tmp / f"y_{name}_int8.npy"))
            )
            f32, i8 = files[name, "fp32"], files[name, "int8"]
            rows.append(
                {
                    "kind": kind, "L": L, "model": name,
                    "ms": 1e3 * best[name, "fp32"], "ms_int8": 1e3 * best[name, "int8"],
                    "mib": f32.stat().st_size / MiB, "mib_int8": i8.stat().st_size / MiB,
                    "rss": peak[name, "fp32"] / MiB, "rss_int8": peak[name, "int8"] / MiB, "cos": cosine(y8, y32),
                }
            )  # fmt: skip
        if not args.keep:
            for f in set(files.values()) - {f for d in dynamic.values() for f in d.values()}:
                f.unlink()
    report(rows, args)
    return 0


def flop_bound(length: int) -> float:
    """The speed-up if time were proportional to FLOPs: (linear + dense attention) over (linear +
    sparse attention on the visited tiles). The linear layers, the same in both, bound it."""
    from sparseformer.layout import flops

    linear = 2.0 * length * (4 * D * D + 2 * D * FFN)
    dense_attn = 4.0 * length * length * D
    sparse_attn = flops(PATTERN.compile(q_len=length, num_heads=HEADS, block_size=BS), D // HEADS)
    return (linear + dense_attn) / (linear + sparse_attn)


def report(rows: list[dict], args) -> None:
    by = {(r["kind"], r["L"], r["model"]): r for r in rows}
    if args.dynamic:
        print("One dynamic-length export (dynamic_length=True) timed at every length: sparse ONNX, and with "
              "--custom-op the custom-op ONNX file and .pte, fp32 and int8 each.\n")  # fmt: skip
    print(f"Encoder 6x(384, 12 heads, FFN 1536), batch 1, {args.threads} threads, best of {args.repeat} runs x "
          f"{args.rounds} interleaved rounds; "
          f"sparse = SlidingWindow(1, unit='block') | Global(blocks=1), block 64. FLOP bound: the speed-up if "
          "time followed FLOPs (linear layers + attention over the visited tiles).\n")  # fmt: skip
    names = list(dict.fromkeys(r["model"] for r in rows))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        print(f"### {kind}: latency (fp32)\n")
        if args.custom_op:
            print("| L | density | sparse ms | custom op ms | dense ms | speed-up | custom-op speed-up | FLOP bound | "
                  "sparse int8 ms | custom op int8 ms | dense int8 ms |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        else:
            print("| L | density | sparse ms | dense ms | speed-up | FLOP bound | sparse int8 ms | dense int8 ms |")
            print("|---|---|---|---|---|---|---|---|")
        for L in args.lengths:
            s, d = by[(kind, L, "sparse")], by[(kind, L, "dense")]
            dens = PATTERN.compile(q_len=L, num_heads=HEADS, block_size=BS).density
            if args.custom_op:
                c = by[(kind, L, "custom op")]
                print(f"| {L} | {dens:.3f} | {s['ms']:.1f} | {c['ms']:.1f} | {d['ms']:.1f} | {d['ms'] / s['ms']:.2f}x | "
                      f"{d['ms'] / c['ms']:.2f}x | {flop_bound(L):.2f}x | {s['ms_int8']:.1f} | {c['ms_int8']:.1f} | "
                      f"{d['ms_int8']:.1f} |")  # fmt: skip
            else:
                print(f"| {L} | {dens:.3f} | {s['ms']:.1f} | {d['ms']:.1f} | {d['ms'] / s['ms']:.2f}x | {flop_bound(L):.2f}x | "
                      f"{s['ms_int8']:.1f} | {d['ms_int8']:.1f} |")  # fmt: skip
        print(f"\n### {kind}: files, int8 quality, peak RSS\n")
        print(
            "| L | model | fp32 MiB | int8 MiB | int8/fp32 | cosine int8 vs fp32 | peak RSS fp32 MiB | peak RSS int8 MiB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for L in args.lengths:
            for name in names:
                r = by[(kind, L, name)]
                if r["ms_int8"] != r["ms_int8"]:  # nan: no int8 file
                    print(f"| {L} | {name} | {r['mib']:.1f} | - | - | - | {r['rss']:.0f} | - |")
                    continue
                print(f"| {L} | {name} | {r['mib']:.1f} | {r['mib_int8']:.1f} | {r['mib_int8'] / r['mib']:.0%} | "
                      f"{r['cos']:.5f} | {r['rss']:.0f} | {r['rss_int8']:.0f} |")  # fmt: skip
        print()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
