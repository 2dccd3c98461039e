"""Where an ExecuTorch decode step spends its time: ExecuTorch's own per-operator profile (ETDump)
of the ``.pte`` that ``to_executorch_decode_step`` writes for a model shape, at each context.

Builds a shape of sparseformer/bench/model_configs (random weights, ``sfh.sparsify(model)``),
exports its decode step once for past lengths up to the longest context, loads it with ETDump
enabled, and runs --steps steps at each context (random caches of the context's length; a step's
cost does not depend on their values) after one warm-up step. Prints, per context, the ms per step
of each profiled event, largest first: XNNPACK's own operators inside the delegate (e.g.
``Batch Matrix Multiply (NC, F32) GEMM #1``), the kernels that run outside it (``native_call_<op>``:
ExecuTorch's portable or optimized kernels), and the totals (``Method::execute``, ``DELEGATE_CALL``,
``OPERATOR_CALL``). Profiled times include the profiler's own cost.

.venv/bin/python benchmarks/pte_profile.py [--model gemma-3-270m] [--contexts 1024 32768] [--steps 5] [--top 15]
"""

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import torch

import sparseformer.hf as sfh
from sparseformer.bench.info import machine_line
from sparseformer.bench.models import build_model, load_spec

MIB = 2**20


def profile(path: Path, context: int, steps: int, g: torch.Generator) -> dict[str, float]:
    """ms per step of each ETDump event of ``steps`` decode steps at past length ``context``."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    from sparseformer.export import ExecuTorchDecoder

    decoder = ExecuTorchDecoder(path)  # reads the layers' capacities and the cache shape
    past = []
    for c in decoder.capacities:
        shape = (decoder.batch, decoder.kv_heads, context if c is None else c, decoder.head_dim)
        past += [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    inputs = [torch.ones(decoder.batch, 1, dtype=torch.long), torch.ones(decoder.batch, context + 1, dtype=torch.long)]
    inputs += past
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    module.forward(inputs)  # warm-up (in the dump too: dropped below)
    for _ in range(steps):
        module.forward(inputs)
    dump = path.with_suffix(f".{context}.etdump")
    module.write_etdump_result_to_file(str(dump))
    totals: collections.Counter = collections.Counter()
    for block in Inspector(etdump_path=str(dump)).event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is not None:
                raw = list(event.perf_data.raw)
                per_run = len(raw) // (steps + 1) or 1  # an event may occur several times per step
                totals[event.name] += sum(raw[per_run:]) / steps
    dump.unlink()
    return dict(totals)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="a shape of sparseformer/bench/model_configs")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    ap.add_argument("--steps", type=int, default=5, help="profiled steps per context, after one warm-up step")
    ap.add_argument("--top", type=int, default=15, help="events shown per context")
    args = ap.parse_args()
    print(machine_line())
    from sparseformer.export import to_executorch_decode_step

    model = sfh.sparsify(build_model(load_spec(args.model), "sdpa"))
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        max_past = max(args.contexts) + 1
        path = to_executorch_decode_step(model, Path(tmp) / "step.pte", max_past=max_past)
        print(f"decode step .pte (max_past {max_past}) in {time.perf_counter() - t0:.0f} s: "
              f"{path.stat().st_size / MIB:.0f} MiB")  # fmt: skip
        results = {context: profile(path, context, args.steps, g) for context in args.contexts}
    names = sorted(
        {n for r in results.values() for n in r}, key=lambda n: -max(r.get(n, 0.0) for r in results.values())
    )
    print(f"\nETDump of the {args.model} decode step, ms per step (mean of {args.steps} steps):\n")
    print("| event | " + " | ".join(f"context {c}" for c in args.contexts) + " |")
    print("|---|" + "---:|" * len(args.contexts))
    for name in names[: args.top]:
        print(f"| {name} | " + " | ".join(f"{results[c].get(name, 0.0):.2f}" for c in args.contexts) + " |")
    print("\ncommand: " + " ".join(["benchmarks/pte_profile.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
