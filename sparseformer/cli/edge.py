"""The ``sparseformer export`` and ``sparseformer generate`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MiB = 1 << 20


def _encoder(args):
    from torch import nn

    import sparseformer as sf
    from sparseformer import patterns as P

    pattern = P.SlidingWindow(args.window_blocks, unit="block") | P.Global(blocks=args.global_blocks)
    layer = sf.nn.SparseTransformerEncoderLayer(
        args.d_model, args.heads, args.ffn, dropout=0.0, activation="gelu", batch_first=True,
        pattern=pattern, block_size=args.block_size,
    )  # fmt: skip
    return nn.TransformerEncoder(layer, args.layers, enable_nested_tensor=False).eval()


def _causal_lm(args):
    import sparseformer as sf
    from sparseformer import patterns as P

    pattern = P.SlidingWindow(args.window, right=0) | P.Global(tokens=args.sinks)
    cfg = sf.nn.CausalLMConfig(
        d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, block_size=args.block_size, pattern=pattern
    )
    return sf.nn.SparseCausalLM(cfg).eval()


def _load(model, checkpoint: str | None) -> None:
    if checkpoint is None:
        return
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ImportError(f"safetensors is needed to load --checkpoint (pip install 'sparseformer[hf]'): {e}") from e
    tensors = load_file(checkpoint)
    if any(k.startswith("optimizer.") for k in tensors):  # a `sparseformer train` checkpoint: its model part
        tensors = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"--checkpoint {checkpoint!r} does not fit the model built from these options: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} (check --layers, --d-model, --heads)"
        )


def add_parser_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a sparse encoder or the causal LM to ONNX / ExecuTorch, fp32 or int8",
        description="Each file is valid for the sequence length it was exported at (the block layout is baked in), "
        "or, with --dynamic (band-form patterns; ONNX, or ExecuTorch with --custom-op), for every length up to "
        "--max-length.",
    )
    p.add_argument(
        "--model",
        default="encoder",
        help="'encoder' or 'lm' (sparseformer's own models, built from the options below), or a transformers model "
        "directory (save_pretrained): a model pretrained with local attention runs its own attention, any other "
        "runs --pattern (default: its own, dense)",
    )
    p.add_argument(
        "--distilled",
        metavar="DIR",
        help="a directory written by `sparseformer distill` (its pattern; learned positions extended to the "
        "longest --lengths, or to --max-length with --dynamic)",
    )
    p.add_argument("--pattern", help="with a transformers --model: the pattern preset to sparsify it with")
    p.add_argument("--stock", action="store_true", help="with a transformers --model: export it as it is (baseline)")
    p.add_argument("--format", choices=("onnx", "executorch"), default="onnx")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization of the linear layers")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024], help="sequence lengths (one file each)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="one file for every length up to --max-length (traced at --lengths[0]): onnx, or executorch with "
        "--custom-op (fp32 or --int8)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        help="with --dynamic: the longest length served (default: no limit); with --decode-step --format executorch: "
        "the longest past (default 4096)",
    )
    p.add_argument(
        "--custom-op",
        action="store_true",
        help="each sparse attention runs the native kernel: onnx, one custom node (ONNX Runtime loads the library "
        "printed); executorch, one kernel call (the runtime loads the kernel library printed first); float32 "
        "attention; per length, or with --dynamic up to --max-length, which it then needs",
    )
    p.add_argument(
        "--decode-step",
        action="store_true",
        help="a transformers causal --model DIR run on its own attention: the decode step (one token), its KV cache "
        "as inputs and outputs; sliding layers keep W-1 keys; onnx: any past length, executorch: up to --max-length "
        "(default 4096); --lengths not used",
    )
    p.add_argument(
        "--prefill",
        type=int,
        metavar="C",
        help="with --decode-step: also a prefill file that reads a prompt C >= 2 tokens per call into the caches "
        "(OnnxDecoder / ExecuTorchDecoder(step, prefill=file))",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--checkpoint", help="safetensors state dict to load (default: random weights)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--ffn", type=int, default=1536, help="encoder feed-forward width")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--window-blocks", type=int, default=1, help="encoder: SlidingWindow(n, unit='block')")
    p.add_argument("--global-blocks", type=int, default=1, help="encoder: Global(blocks=n)")
    p.add_argument("--window", type=int, default=256, help="lm: SlidingWindow(W, right=0)")
    p.add_argument("--sinks", type=int, default=4, help="lm: Global(tokens=S)")
    p.set_defaults(func=run_export)


def _own_inputs(args, model, length: int) -> tuple:
    import torch

    if args.model == "encoder":
        return (torch.randn(args.batch, length, args.d_model),)
    return (torch.randint(0, model.cfg.vocab_size, (args.batch, length)),)


def _transformers_model(args):
    """``(model, file name stem, inputs_of(length))`` for ``--model DIR`` / ``--distilled DIR``:
    the model sparsified as the options say; inputs ``(input_ids, attention_mask)`` of random
    tokens, no padding (the exported file reads the mask at run time)."""
    import torch

    import sparseformer.hf as sfh
    from sparseformer.hf._deps import require
    from sparseformer.hf.quality import preset

    if args.checkpoint is not None:
        raise ValueError("--checkpoint is for --model encoder / lm; a transformers model directory holds its weights")
    if args.distilled is not None:
        if args.model not in ("encoder", "lm") or args.pattern or args.stock:
            raise ValueError("--distilled DIR carries its model and pattern: give no --model DIR, --pattern or --stock")
        model = sfh.load_distilled(args.distilled)
        longest = args.max_length if args.dynamic and args.max_length else max(args.lengths)
        if longest > getattr(model.config, "max_position_embeddings", longest):
            sfh.extend_positions(model, longest)
        name = Path(args.distilled).name
    else:
        if not (Path(args.model) / "config.json").is_file():
            raise ValueError(f"--model must be 'encoder', 'lm' or a transformers model directory, got {args.model!r}")
        transformers = require("transformers")
        config = transformers.AutoConfig.from_pretrained(args.model)
        causal = any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or ())
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(args.model).eval()
        if args.stock and args.pattern:
            raise ValueError("--stock exports the model as it is: give no --pattern")
        if not args.stock:
            pattern = None if args.pattern is None else preset(args.pattern)
            sfh.sparsify(model, pattern, block_size=args.block_size)
        name = Path(args.model).resolve().name + ("_stock" if args.stock else "")
    vocab = model.config.get_text_config().vocab_size

    def inputs_of(length: int) -> tuple:
        ids = torch.randint(0, vocab, (args.batch, length))
        return ids, torch.ones_like(ids)

    return model, name, inputs_of


def run_export(args: argparse.Namespace) -> int:
    from sparseformer import export
    from sparseformer.export import quantize

    out = Path(args.out)
    if not out.is_dir():
        print(f"error: --out {str(out)!r} is not a folder", file=sys.stderr)
        return 2
    if args.dynamic and args.format != "onnx" and not args.custom_op:
        print(
            "error: --dynamic is for --format onnx, or executorch with --custom-op (the portable ExecuTorch graph "
            "specialises on the length)",
            file=sys.stderr,
        )
        return 2
    if args.prefill is not None and (not args.decode_step or args.prefill < 2):
        print(f"error: --prefill takes --decode-step and a chunk C >= 2, got {args.prefill}", file=sys.stderr)
        return 2
    if args.decode_step and (args.dynamic or args.custom_op or args.model in ("encoder", "lm")):
        print(
            "error: --decode-step takes a transformers --model DIR, without --dynamic (a step file serves every past "
            "length already) or --custom-op (a step's attention is its new tokens over the keys they attend, W - 1 + "
            "T on a sliding layer: the portable graph already computes only those)",
            file=sys.stderr,
        )
        return 2
    if args.distilled is not None or args.model not in ("encoder", "lm"):
        model, name, inputs_of = _transformers_model(args)
    else:
        if args.pattern or args.stock:
            raise ValueError(f"--pattern and --stock are for a transformers --model DIR, not --model {args.model}")
        model = _encoder(args) if args.model == "encoder" else _causal_lm(args)
        _load(model, args.checkpoint)
        name, inputs_of = args.model, lambda length: _own_inputs(args, model, length)
    if args.decode_step:
        return _export_decode_step(args, model, name, out)
    ext = "onnx" if args.format == "onnx" else "pte"
    options = {"dynamic_length": True, "max_length": args.max_length} if args.dynamic else {}
    if args.custom_op:
        options["custom_op"] = True
    for length in args.lengths[:1] if args.dynamic else args.lengths:
        inputs = inputs_of(length)
        stem = f"{name}_dynamic" if args.dynamic else f"{name}_L{length}"
        path = out / f"{stem}{'_int8' if args.int8 else ''}.{ext}"
        t0 = time.perf_counter()
        if args.format == "onnx":
            if args.int8:
                fp32 = export.to_onnx(model, inputs, out / f"{stem}.onnx", **options)
                quantize.quantize_onnx(fp32, path)
            else:
                export.to_onnx(model, inputs, path, **options)
        elif args.int8:
            quantize.to_executorch_int8(model, inputs, path, **options)
        else:
            export.to_executorch(model, inputs, path, **options)
        served = f"L={length}"
        if args.dynamic:
            if args.format == "onnx":
                lo, hi = json.loads(export.read_metadata(path)["sparseformer.seq_range"])
            else:
                lo, hi = export.ExecuTorchRunner(path).seq_range
            served = f"L in [{lo}, {hi if hi is not None else 'any'}]"
        print(f"{path}  {path.stat().st_size / MiB:.2f} MiB  {served}  {time.perf_counter() - t0:.1f} s")
    if args.custom_op and args.format == "onnx":
        from sparseformer.export.ort_op import library_path

        print(f"custom-op library (SessionOptions.register_custom_ops_library): {library_path()}")
    elif args.custom_op:
        from sparseformer.export.et_op import library_path

        print(f"kernel library (load it before the program's method, e.g. ctypes.CDLL): {library_path()}")
    return 0


def _export_decode_step(args: argparse.Namespace, model, name: str, out: Path) -> int:
    from sparseformer.export import quantize
    from sparseformer.export.decode import to_executorch_decode_step, to_onnx_decode_step

    int8 = "_int8" if args.int8 else ""
    for chunk, stem in ((1, f"{name}_decode_step"), (args.prefill, f"{name}_prefill{args.prefill}")):
        if chunk is None:
            continue
        t0 = time.perf_counter()
        if args.format == "executorch":
            max_past = args.max_length or 4096
            path = to_executorch_decode_step(
                model, out / f"{stem}{int8}.pte", batch=args.batch, chunk=chunk, max_past=max_past, int8=args.int8
            )
            served = f"past lengths 1 to {max_past}"
        else:
            path = to_onnx_decode_step(model, out / f"{stem}.onnx", batch=args.batch, chunk=chunk)
            served = "any past length"
            if args.int8:
                path = quantize.quantize_onnx(path, out / f"{stem}{int8}.onnx")
        print(
            f"{path}  {path.stat().st_size / MiB:.2f} MiB  {chunk} token{'s' if chunk > 1 else ''} per call, "
            f"batch {args.batch}, {served}  {time.perf_counter() - t0:.1f} s"
        )
    return 0


def add_parser_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="stream tokens from the small causal LM with a fixed-size sink + window KV cache",
        description="Prints tokens/s and resident memory (RSS) as it goes, on stderr.",
    )
    p.add_argument("--tokens", type=int, default=1024, help="tokens to generate")
    p.add_argument("--prompt", default="def ", help="prompt text (bytes are tokens)")
    p.add_argument("--checkpoint", help="safetensors state dict of the LM (default: random weights)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--window", type=int, default=256, help="SlidingWindow(W, right=0)")
    p.add_argument("--sinks", type=int, default=4, help="Global(tokens=S): attention sinks")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (decode ops are small: 1 is fastest)")
    p.add_argument("--report-every", type=int, default=1024)
    p.add_argument("--show-text", action="store_true", help="write the generated bytes to stdout")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from sparseformer.generate import new_cache, rss_bytes, stream

    for name in ("tokens", "report_every"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = _causal_lm(args)
    _load(model, args.checkpoint)
    prompt = torch.tensor([list(args.prompt.encode("utf-8")) or [10]])
    cache = new_cache(model)
    gen = torch.Generator().manual_seed(args.seed)
    print(
        f"cache: {cache.slots} slots x {args.layers} layers = {cache.nbytes / MiB:.2f} MiB; rss {rss_bytes() / MiB:.1f} MiB",
        file=sys.stderr,
    )
    t0 = t_last = time.perf_counter()
    n_last = 0
    for n, token in enumerate(
        stream(model, prompt, args.tokens, temperature=args.temperature, generator=gen, cache=cache), 1
    ):
        if args.show_text:
            sys.stdout.buffer.write(bytes([int(token[0])]))
            sys.stdout.flush()
        if n % args.report_every == 0 or n == args.tokens:
            now = time.perf_counter()
            print(
                f"tokens {n:>7}  tok/s {(n - n_last) / (now - t_last):8.1f}  (avg {n / (now - t0):8.1f})  "
                f"rss {rss_bytes() / MiB:8.1f} MiB",
                file=sys.stderr,
            )
            t_last, n_last = now, n
    return 0
