"""Time to first token of an exported decoder: the prompt read through the decode step one token
per call, or through a prefill file of C tokens per call (``to_onnx_decode_step`` /
``to_executorch_decode_step`` with ``chunk=C``), then the first greedy token; beside PyTorch's own
forward over the whole prompt (``sfh.sparsify(model)`` and stock ``sdpa``), which returns no
caches a runtime could continue from.

Builds a shape of sparseformer/bench/model_configs (random weights, batch 1, a prompt of random
tokens). Each variant runs ``--repeat`` times, interleaved, the order rotating; every variant must
produce the same first token (checked). Prints ms to the first token (median [min, max]) and the
prompt tokens read per second.

.venv/bin/python benchmarks/prefill.py [--model gemma-3-270m] [--prompt 512] [--chunks 16 64]
    [--formats onnx executorch] [--repeat 3] [--threads 2]
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
from sparseformer.export import ExecuTorchDecoder, OnnxDecoder

MIB = 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="a shape of sparseformer/bench/model_configs")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 64], help="prefill tokens per call (each >= 2)")
    ap.add_argument("--formats", nargs="+", choices=("onnx", "executorch"), default=["onnx", "executorch"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if min(args.chunks) < 2 or args.prompt < 1:
        ap.error(f"--chunks must be >= 2 and --prompt >= 1, got {args.chunks} and {args.prompt}")
    torch.set_num_threads(args.threads)
    print(machine_line())
    model = sfh.sparsify(build_model(load_spec(args.model), "sdpa")).eval()
    ids = torch.randint(
        3, model.config.get_text_config().vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(0)
    )
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"PyTorch sparseformer (forward)": _torch(model, ids, "sparseformer")}
        runs["PyTorch sdpa (forward)"] = _torch(model, ids, "sdpa")
        for fmt in args.formats:
            paths = _exports(model, Path(tmp), fmt, args.chunks, args.prompt)
            for c in [1, *args.chunks]:
                prefill = None if c == 1 else paths[c]
                if fmt == "onnx":
                    decoder = OnnxDecoder(paths[1], threads=args.threads, prefill=prefill)
                else:
                    decoder = ExecuTorchDecoder(paths[1], prefill=prefill)
                name = f"{fmt}, 1 token per call" if c == 1 else f"{fmt}, prefill {c} per call"
                runs[name] = _first_token(decoder, ids, mask)
        times = {name: [] for name in runs}
        first = {}
        names = list(runs)
        with torch.inference_mode():
            for i in tqdm(range(args.repeat), desc="rounds", file=sys.stderr):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    t0 = time.perf_counter()
                    first[name] = runs[name]()
                    times[name].append(time.perf_counter() - t0)
    if len(set(first.values())) != 1:
        raise RuntimeError(f"the variants disagree on the first token: {first}")
    print(f"\n| {args.model}, prompt {args.prompt} | ms to first token, median [min, max] | prompt tokens/s |")
    print("|---|---:|---:|")
    for name, v in times.items():
        print(f"| {name} | {1e3 * statistics.median(v):.0f} [{1e3 * min(v):.0f}, {1e3 * max(v):.0f}] | "
              f"{args.prompt / statistics.median(v):.0f} |")  # fmt: skip
    print("\ncommand: " + " ".join(["benchmarks/prefill.py", *sys.argv[1:]]))
    return 0


def _torch(model, ids: torch.Tensor, impl: str):
    """The first greedy token from one forward over the prompt with attention ``impl``."""

    def run() -> int:
        model.set_attn_implementation(impl)
        out = int(model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax())
        model.set_attn_implementation("sparseformer")
        return out

    return run


def _exports(model, folder: Path, fmt: str, chunks: list[int], prompt: int) -> dict[int, Path]:
    """``{chunk: path}`` of the step (chunk 1) and of each prefill file, in ``fmt``."""
    from sparseformer.export import to_executorch_decode_step, to_onnx_decode_step

    paths = {}
    for c in [1, *chunks]:
        t0 = time.perf_counter()
        if fmt == "onnx":
            paths[c] = to_onnx_decode_step(model, folder / f"step{c}.onnx", chunk=c)
        else:
            paths[c] = to_executorch_decode_step(model, folder / f"step{c}.pte", chunk=c, max_past=prompt + max(chunks))
        print(f"{fmt} chunk {c}: exported in {time.perf_counter() - t0:.0f} s, {paths[c].stat().st_size / MIB:.0f} MiB")
    return paths


def _first_token(decoder, ids: torch.Tensor, mask: torch.Tensor):
    """The first greedy token after ``decoder`` reads the prompt (through its prefill file, if any)."""
    return lambda: int(decoder.generate(ids, mask, 1)[0, -1])


if __name__ == "__main__":
    sys.exit(main())
