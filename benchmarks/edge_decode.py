"""The decode step in ONNX Runtime (``to_onnx_decode_step``) against stock PyTorch, at real shapes.

Builds a model shape of sparseformer/bench/model_configs (random weights), exports
``sfh.sparsify(model)``'s decode step once, then per context ``P``: times steps of the ONNX file
(the caches going out of one step into the next, as a device would run it) and steps of the stock
``sdpa`` model with transformers' ``DynamicCache`` (the same weights), interleaved, the order alternating from pair to pair.
Caches hold random keys and values of the context's length (a step's cost does not depend on
their values). Prints ms per step, median [min, max], and the bytes of each cache.

.venv/bin/python benchmarks/edge_decode.py [--model gemma-3-270m] [--contexts 1024 8192 32768] [--steps 20]
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
from sparseformer.export import OnnxRunner, to_onnx_decode_step
from sparseformer.export.decode import DecodeStep

MIB = 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="a shape of sparseformer/bench/model_configs")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--steps", type=int, default=20, help="measured steps per context and implementation")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    stock = build_model(load_spec(args.model), "sdpa")
    ours = build_model(load_spec(args.model), "sdpa")
    ours.load_state_dict(stock.state_dict())
    sfh.sparsify(ours)
    step = DecodeStep(ours)
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = to_onnx_decode_step(ours, Path(tmp) / "step.onnx")
        print(f"exported in {time.perf_counter() - t0:.0f} s: {path.stat().st_size / MIB:.0f} MiB")
        runner = OnnxRunner(path, threads=args.threads)
        print(f"\n| {args.model} context | ONNX Runtime step ms | stock PyTorch sdpa step ms | ratio | "
              "ONNX caches MiB (sliding + full) | DynamicCache MiB |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|")
        for context in args.contexts:
            print(measure(context, runner, step, stock, args.steps, g), flush=True)
    print("\ncommand: " + " ".join(["benchmarks/edge_decode.py", *sys.argv[1:]]))
    return 0


def measure(context: int, runner, step: DecodeStep, stock, steps: int, g: torch.Generator) -> str:
    """One table row: ``steps`` ONNX steps and stock steps after ``context`` tokens, interleaved."""
    from transformers import DynamicCache

    config = stock.config.get_text_config()
    shape = (1, step.kv_heads, 0, step.head_dim)
    past = [torch.randn(shape[:2] + (context if c is None else c,) + shape[3:], generator=g)
            for c in step.capacities for _ in "kv"]  # fmt: skip
    mask = torch.ones(1, context + 1, dtype=torch.long)
    cache = DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        full = torch.randn(shape[:2] + (context,) + shape[3:], generator=g)
        cache.update(full, torch.randn(full.shape, generator=g), layer)
    token = torch.tensor([[7]])

    def onnx_step():
        nonlocal past, mask
        _, *past = runner(token, mask, *past)
        mask = torch.ones(1, mask.shape[1] + 1, dtype=torch.long)

    def stock_step():
        position = cache.get_seq_length()
        stock(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1, position_ids=torch.tensor([[position]]))

    times = {"onnx": [], "stock": []}
    with torch.inference_mode():
        for i in tqdm(range(2 + steps), desc=f"context {context}", file=sys.stderr):
            for name, run in (("onnx", onnx_step), ("stock", stock_step))[:: 1 if i % 2 else -1]:
                t0 = time.perf_counter()
                run()
                if i >= 2:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    sliding = sum(t.nbytes for c, t in zip((c for c in step.capacities for _ in "kv"), past) if c is not None)
    full = sum(t.nbytes for t in past) - sliding
    dynamic = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    med = {k: statistics.median(v) for k, v in times.items()}
    cells = [f"{med[k]:.1f} [{min(v):.1f}, {max(v):.1f}]" for k, v in times.items()]
    return (
        f"| {context} | {cells[0]} | {cells[1]} | {med['stock'] / med['onnx']:.2f}x | "
        f"{sliding / MIB:.1f} + {full / MIB:.1f} | {dynamic / MIB:.1f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
