"""Whole decode steps of a model shape, stock ``sdpa`` against ``sfh.sparsify(model)``, interleaved.

One model and one ``DynamicCache`` per context; the attention implementation is switched before
every step (both are exact, so they share the cache), and the order of the two alternates from
pair to pair, so that load from other processes hits both alike. The cache is filled with random
keys and values of the context's length (a step's cost does not depend on their values), not by a
prefill. Prints, per context, the median and quartiles of each and of the paired difference.

.venv/bin/python benchmarks/decode_ab.py [--model gemma-3-270m] [--contexts 1024 8192 32768] [--steps 30]
"""

import argparse
import statistics
import sys
import time

import torch
from tqdm import tqdm

import sparseformer.hf as sfh
from sparseformer.bench.info import machine_line
from sparseformer.bench.models import build_model, load_spec

IMPLS = ("sdpa", "sparseformer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="a shape of sparseformer/bench/model_configs")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--steps", type=int, default=30, help="measured pairs per context (after 2 warm-up pairs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from transformers import DynamicCache

    torch.set_num_threads(args.threads)
    print(machine_line())
    model = sfh.sparsify(build_model(load_spec(args.model), "sdpa"))
    config = model.config.get_text_config()
    g = torch.Generator().manual_seed(0)
    print(
        f"| {args.model} context | sdpa ms/step [q1, q3] | sparseformer ms/step [q1, q3] | ratio | paired diff ms [q1, q3] |"
    )
    print("|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for context in args.contexts:
            cache = DynamicCache(config=config)
            for layer in range(config.num_hidden_layers):
                shape = (1, config.num_key_value_heads, context, config.head_dim)
                cache.update(torch.randn(shape, generator=g), torch.randn(shape, generator=g), layer)
            ms = {impl: [] for impl in IMPLS}
            for i in tqdm(range(2 + args.steps), desc=f"context {context}", file=sys.stderr):
                for impl in IMPLS if i % 2 else IMPLS[::-1]:
                    model.set_attn_implementation(impl)
                    position = cache.get_seq_length()
                    t0 = time.perf_counter()
                    model(input_ids=torch.tensor([[7]]), cache=cache, use_cache=True, logits_to_keep=1,
                          position_ids=torch.tensor([[position]]))  # fmt: skip
                    if cache.get_seq_length() != position + 1:
                        raise RuntimeError(f"the step did not use the cache ({position} -> {cache.get_seq_length()})")
                    if i >= 2:
                        ms[impl].append((time.perf_counter() - t0) * 1e3)
            med = {impl: statistics.median(v) for impl, v in ms.items()}
            q = {impl: statistics.quantiles(v, n=4) for impl, v in ms.items()}
            diff = [b - a for a, b in zip(*ms.values())]
            qd = statistics.quantiles(diff, n=4)
            print(
                f"| {context} | {med['sdpa']:.1f} [{q['sdpa'][0]:.1f}, {q['sdpa'][2]:.1f}] | "
                f"{med['sparseformer']:.1f} [{q['sparseformer'][0]:.1f}, {q['sparseformer'][2]:.1f}] | "
                f"{med['sparseformer'] / med['sdpa']:.3f} | {statistics.median(diff):+.2f} [{qd[0]:+.2f}, {qd[2]:+.2f}] |",
                flush=True,
            )
    print("\ncommand: " + " ".join(["benchmarks/decode_ab.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
