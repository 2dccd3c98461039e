"""Whole decode steps of a model shape: stock ``sdpa``, ``sfh.sparsify(model)`` in PyTorch, and (with
``--onnx``) its decode step exported by ``to_onnx_decode_step`` in ONNX Runtime, interleaved
(``--executorch``: as a ``.pte``; ``--int8``: also the int8 ``.pte``).

Builds a shape of sparseformer/bench/model_configs (random weights). PyTorch: one model and one
``DynamicCache`` per context, the attention implementation switched before every step (both are
exact, so they share the cache). ONNX Runtime and (``--executorch``) ExecuTorch: each file's own caches, going out of one step into
the next as a device would run them. Caches start with random keys and values of the context's
length (a step's cost does not depend on their values). The order of the implementations rotates
from round to round, so that load from other processes hits each alike. Prints, per context, each
one's ms per step (median [q1, q3]), the paired difference sparseformer - sdpa, and the caches'
MiB.

.venv/bin/python benchmarks/decode_steps.py [--model gemma-3-270m] [--contexts 1024 8192 32768] [--steps 30] [--onnx]
    [--executorch [--int8]]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

import sparseformer.hf as sfh
from sparseformer.bench.info import machine_line
from sparseformer.bench.models import build_model, load_spec

MIB = 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="a shape of sparseformer/bench/model_configs")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--steps", type=int, default=30, help="measured rounds per context (after 2 warm-up rounds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx", action="store_true", help="also the exported decode step in ONNX Runtime")
    ap.add_argument(
        "--executorch",
        action="store_true",
        help="also the decode step as an ExecuTorch .pte (XNNPACK), exported for the longest context + steps",
    )
    ap.add_argument("--int8", action="store_true", help="with --executorch: also the int8 .pte (int8=True)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    model = sfh.sparsify(build_model(load_spec(args.model), "sdpa"))
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        if args.onnx:
            runners["onnx"] = _export(model, Path(tmp), args.threads)
        if args.executorch:
            max_past = max(args.contexts) + args.steps + 2
            runners["executorch"] = _export_pte(model, Path(tmp), max_past, int8=False)
            if args.int8:
                runners["executorch int8"] = _export_pte(model, Path(tmp), max_past, int8=True)
        impls = ["sdpa", "sparseformer", *runners]
        print(
            f"\n| {args.model} context | "
            + " | ".join(f"{name} ms/step [q1, q3]" for name in impls)
            + " | sparseformer - sdpa ms [q1, q3] | DynamicCache MiB |"
            + (" exported caches MiB (sliding + full) |" if runners else "")
        )
        print("|---:|" + "---:|" * (len(impls) + 2 + bool(runners)))
        g = torch.Generator().manual_seed(0)
        for context in args.contexts:
            print(measure(context, model, runners, args.steps, g), flush=True)
    print("\ncommand: " + " ".join(["benchmarks/decode_steps.py", *sys.argv[1:]]))
    return 0


def _export(model, folder: Path, threads: int):
    from sparseformer.export import OnnxRunner, to_onnx_decode_step

    t0 = time.perf_counter()
    path = to_onnx_decode_step(model, folder / "step.onnx")
    print(f"decode step exported in {time.perf_counter() - t0:.0f} s: {path.stat().st_size / MIB:.0f} MiB")
    return OnnxRunner(path, threads=threads)


def _export_pte(model, folder: Path, max_past: int, int8: bool):
    from sparseformer.export import ExecuTorchDecoder, to_executorch_decode_step

    t0 = time.perf_counter()
    path = to_executorch_decode_step(model, folder / f"step{'_int8' if int8 else ''}.pte", max_past=max_past, int8=int8)
    print(
        f"decode step .pte{' int8' if int8 else ''} (max_past {max_past}) in {time.perf_counter() - t0:.0f} s: "
        f"{path.stat().st_size / MIB:.0f} MiB"
    )
    return ExecuTorchDecoder(path).step


def _random(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def measure(context: int, model, runners: dict, steps: int, g: torch.Generator) -> str:
    """One table row: ``steps`` rounds of one decode step per implementation after ``context`` tokens."""
    from transformers import DynamicCache

    from sparseformer.export.decode import DecodeStep

    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = (1, config.num_key_value_heads, context, head_dim)
    cache = DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        cache.update(_random(kv, g), _random(kv, g), layer)
    token = torch.tensor([[7]])

    def torch_step(impl: str):
        def run():
            model.set_attn_implementation(impl)
            position = cache.get_seq_length()
            model(
                input_ids=token, cache=cache, use_cache=True, logits_to_keep=1, position_ids=torch.tensor([[position]])
            )
            if cache.get_seq_length() != position + 1:
                raise RuntimeError(f"the step did not use the cache ({position} -> {cache.get_seq_length()})")

        return run

    runs = {"sdpa": torch_step("sdpa"), "sparseformer": torch_step("sparseformer")}
    capacities = [c for c in DecodeStep(model).capacities for _ in "kv"]
    states = {}
    for name, run_step in runners.items():
        state = states[name] = {
            "past": [_random(kv[:2] + (context if c is None else c,) + kv[3:], g) for c in capacities],
            "mask": torch.ones(1, context + 1, dtype=torch.long),
        }
        runs[name] = _exported_step(run_step, state, token)
    times = {name: [] for name in runs}
    names = list(runs)
    with torch.inference_mode():
        for i in tqdm(range(2 + steps), desc=f"context {context}", file=sys.stderr):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                t0 = time.perf_counter()
                runs[name]()
                if i >= 2:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    model.set_attn_implementation("sparseformer")
    cells = []
    for v in times.values():
        q = statistics.quantiles(v, n=4)
        cells.append(f"{statistics.median(v):.1f} [{q[0]:.1f}, {q[2]:.1f}]")
    diff = [b - a for a, b in zip(times["sdpa"], times["sparseformer"])]
    qd = statistics.quantiles(diff, n=4)
    cells.append(f"{statistics.median(diff):+.2f} [{qd[0]:+.2f}, {qd[2]:+.2f}]")
    cells.append(f"{sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values)) / MIB:.1f}")
    if states:  # the exported files' caches, alike
        state = next(iter(states.values()))
        sliding = sum(t.nbytes for c, t in zip(capacities, state["past"]) if c is not None)
        cells.append(f"{sliding / MIB:.1f} + {(sum(t.nbytes for t in state['past']) - sliding) / MIB:.1f}")
    return f"| {context} | " + " | ".join(cells) + " |"


def _exported_step(run_step, state: dict, token: torch.Tensor):
    """One step of an exported file: its caches go out of one call into the next."""

    def run():
        _, *state["past"] = run_step(token, state["mask"], *state["past"])
        state["mask"] = torch.ones(1, state["mask"].shape[1] + 1, dtype=torch.long)

    return run


if __name__ == "__main__":
    sys.exit(main())
