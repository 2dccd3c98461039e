"""``sparseformer bench``: measure every strategy on this device and recommend one.

``add_parser(subparsers)`` registers the subcommand; ``run(args)`` runs it and returns the exit
status (0, or 130 after Ctrl-C with the partial results written).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import textwrap
import time

import torch

from ..attention import BACKENDS
from ..bench.measure import memory_method
from ..bench.model_quality import model_quality
from ..bench.quality import Quality
from ..bench.recommend import DEFAULT_MIN_QUALITY, FLOOR_WHY, Constraints, recommend
from ..bench.report import markdown_report, print_tables, ranked_length, recommendation_lines
from ..bench.schema import SCHEMA_VERSION, validate
from ..bench.strategies import BY_NAME, NATIVE, native_strategy, user_code
from ..bench.sweep import SweepPlan, run_sweep
from ..bench.workload import DTYPES, Workload
from ..files import write_text

# Defaults: (full run, --quick). The full run is MiniLM's shape and fits in about 3 minutes on 2 cores.
DEFAULTS = {
    "layers": (6, 2),
    "heads": (12, 2),
    "head_dim": (32, 16),
    "min_len": (256, 64),
    "max_len": (4096, 128),
    "block_sizes": ((32, 64), (16, 32)),
    "repeats": (3, 3),
    "min_time": (0.25, 0.0),
    "time_budget": (140.0, 20.0),
}


EPILOG = textwrap.fill(
    f"Without --budget-ms or --budget-mb, the answer is, for each measured length, the fastest "
    f"configuration (dense included) whose quality is at least --min-quality (default {DEFAULT_MIN_QUALITY:g}; sparse "
    "layouts that keep every pair at that length do not count as sparse), and the break-even length is the "
    "shortest measured length from which that choice is sparse and faster than dense at every longer measured "
    f"length. Why {DEFAULT_MIN_QUALITY:g}: {FLOOR_WHY}. The pretrained model's quality is measured at 512 tokens "
    "only; the output says so beside other lengths.",
    width=90,
)


def add_parser(subparsers) -> None:
    """Register ``bench`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "bench",
        help="measure every sparse strategy on this device and recommend one",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c = p.add_argument_group(
        "constraints (for the recommendation; without a budget, the fastest above the quality floor)"
    )
    c.add_argument("--budget-ms", type=float, help="latest acceptable encoder latency, ms")
    c.add_argument("--budget-mb", type=float, help="largest acceptable peak memory of one call, MiB")
    c.add_argument(
        "--min-quality",
        type=float,
        help="smallest acceptable quality, a cosine in [-1, 1] (see --quality; default floor "
        f"{DEFAULT_MIN_QUALITY:g}); alone it moves the floor, with a budget the best quality that meets them all wins",
    )
    c.add_argument(
        "--seq-len", type=int, help="the sequence length to recommend for (measured first; default: the longest)"
    )
    c.add_argument(
        "--quality",
        choices=("auto", "encoder", "model"),
        default="auto",
        help="what --min-quality and the default floor bound: the pretrained model's embedding cosine (model; "
        "auto when it was measured) or the encoder output cosine vs dense (encoder)",
    )
    c.add_argument("--from-results", metavar="RESULTS_JSON", help="recommend from an earlier run; measure nothing")
    w = p.add_argument_group("workload")
    w.add_argument("--quick", action="store_true", help="tiny sizes: finishes in seconds")
    w.add_argument("--device", default="cpu", help="torch device (default cpu)")
    w.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    w.add_argument("--dtype", default="float32", choices=DTYPES)
    w.add_argument("--heads", type=int, help="attention heads (default 12; --quick 2)")
    w.add_argument("--head-dim", type=int, help="dimension per head (default 32; --quick 16)")
    w.add_argument("--layers", type=int, help="encoder layers (default 6; --quick 2)")
    w.add_argument("--batch", type=int, default=1)
    w.add_argument("--backend", default="auto", help="sparse attention backend (default auto)")
    w.add_argument(
        "--model",
        help="Hugging Face model path for the pretrained-quality check (default MiniLM); a model pretrained with "
        f"local attention (Gemma 3, ModernBERT, ...) adds the strategy {NATIVE!r}: its own attention, exactly",
    )
    w.add_argument("--no-model-quality", action="store_true", help="skip the pretrained-model quality check")
    s = p.add_argument_group("sweep")
    s.add_argument("--strategies", help=f"comma-separated subset of {','.join(BY_NAME)}")
    s.add_argument("--block-sizes", help="comma-separated block sizes (default 32,64; --quick 16,32)")
    s.add_argument("--min-len", type=int, help="first sequence length (default 256; --quick 64)")
    s.add_argument("--max-len", type=int, help="longest sequence length (default 4096; --quick 128)")
    s.add_argument("--repeats", type=int, help="timed calls per measurement (default 3)")
    s.add_argument("--min-time", type=float, help="seconds of timed calls per measurement, at least (default 0.25)")
    s.add_argument("--time-budget", type=float, help="seconds for the sweep (default 140; --quick 20)")
    s.add_argument("--out", default="sparseformer-bench", help="output folder (default ./sparseformer-bench)")
    p.set_defaults(func=run)


def _pick(args: argparse.Namespace, name: str):
    value = getattr(args, name, None)
    return DEFAULTS[name][1 if args.quick else 0] if value is None else value


def _positive(name: str, value, kind=int):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise TypeError(f"{name} must be {'an int' if kind is int else 'a number'}, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _int_list(name: str, text) -> tuple[int, ...]:
    if isinstance(text, tuple):
        return text
    try:
        return tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def _native(model_path: str | None):
    """``(strategy, why not)``: the attention ``--model`` was pretrained with, as a strategy, when
    it attends locally (read from its config); else None and the reason."""
    if model_path is None:
        return None, "no --model given"
    try:
        from transformers import AutoConfig
    except ImportError as e:
        return None, f"transformers is not installed ({e}); pip install sparseformer[bench]"
    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        return None, f"could not read the config at {model_path!r}: {e}"
    native = native_strategy(config.get_text_config())
    return native, "" if native else f"{model_path!r} has no layer of local attention"


def _settings(args: argparse.Namespace) -> tuple[Workload, SweepPlan, Constraints]:
    """Check the arguments and turn them into the workload, the sweep plan and the constraints."""
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {BACKENDS}, got {args.backend!r}")
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {args.dtype!r}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device must be a torch device such as 'cpu' or 'cuda', got {args.device!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device!r} asked for CUDA, which is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {args.device!r}")
    for name in ("threads", "batch", "seq_len"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name, None))
    for name in ("budget_ms", "budget_mb"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name, None), float)
    if args.min_quality is not None and not -1 <= args.min_quality <= 1:
        raise ValueError(f"--min-quality must lie in [-1, 1] (a cosine), got {args.min_quality}")
    known = dict(BY_NAME)
    native, why_not = _native(args.model)
    if native is not None:
        known[NATIVE] = native
    names = list(known) if not args.strategies else [x.strip() for x in args.strategies.split(",") if x.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        why = f" ({NATIVE!r} needs a --model pretrained with local attention: {why_not})" if NATIVE in unknown else ""
        raise ValueError(f"--strategies must name some of {list(known)}{why}, got {args.strategies!r}")
    block_sizes = _int_list("--block-sizes", _pick(args, "block_sizes"))
    for bs in block_sizes:
        if bs < 16 or bs > 512 or bs & (bs - 1):
            raise ValueError(f"--block-sizes must be powers of two from 16 to 512, got {bs}")
    if not block_sizes:
        raise ValueError("--block-sizes must list at least one block size, got none")
    work = Workload(
        layers=_positive("--layers", _pick(args, "layers")),
        heads=_positive("--heads", _pick(args, "heads")),
        head_dim=_positive("--head-dim", _pick(args, "head_dim")),
        batch=args.batch,
        dtype=args.dtype,
        device=str(device),
        backend=args.backend,
    )
    min_len, max_len = _positive("--min-len", _pick(args, "min_len")), _positive("--max-len", _pick(args, "max_len"))
    if max_len < min_len:
        raise ValueError(f"--max-len must be >= --min-len ({min_len}), got {max_len}")
    plan = SweepPlan(
        min_len=min_len,
        max_len=max_len,
        block_sizes=block_sizes,
        strategies=tuple(known[n] for n in names),
        repeats=_positive("--repeats", _pick(args, "repeats")),
        min_time_s=_nonnegative("--min-time", _pick(args, "min_time")),
        time_budget_s=_positive("--time-budget", _pick(args, "time_budget"), float),
        budget_ms=args.budget_ms,
        budget_mb=args.budget_mb,
        seq_len=args.seq_len,
    )
    return work, plan, Constraints(args.budget_ms, args.budget_mb, args.min_quality)


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print("progress bar skipped: tqdm is not installed; pip install sparseformer[progress]", file=sys.stderr)
        return None
    return tqdm(total=total, desc="bench", unit="run", file=sys.stderr)


def _write_outputs(results: dict, out_dir: str, plan: SweepPlan, q: Quality) -> list[str]:
    """The plots, results.json (validated first) and report.md; returns the paths written."""
    from ..bench.plots import write_plots

    plots: list[str] = []
    if results["measurements"]:
        layouts = {(s.name, bs): s.build(bs) for s in plan.strategies for bs in plan.block_sizes}
        floor = results["recommendation"].get("floor")
        try:
            plots = write_plots(results, out_dir, ranked_length(results), layouts, q, floor)
        except ImportError as e:
            results["notes"].append(f"plots skipped: {e}")
            print(f"plots skipped: {e}", file=sys.stderr)
    validate(results)
    write_text(os.path.join(out_dir, "results.json"), json.dumps(results, indent=1) + "\n")
    write_text(os.path.join(out_dir, "report.md"), markdown_report(results, plots))
    return [os.path.join(out_dir, f) for f in ("results.json", "report.md", *plots)]


def _recommend(results: dict, args: argparse.Namespace, seq_len: int | None, constraints: Constraints) -> Quality:
    """Set ``results["recommendation"]`` (with the user code that builds it); returns the quality it read."""
    mq = results.get("model_quality")
    if args.quality == "model" and not (mq and mq["available"]):
        results["notes"].append("--quality model: no pretrained-model quality was measured; used the encoder cosine")
    q = Quality.of(mq if args.quality in ("auto", "model") else None)
    rec = recommend(results["measurements"], seq_len, constraints, mq if q.on_model else None)
    if rec["found"]:
        recorded = next(m["code"] for m in results["measurements"] if m["strategy"] == rec["strategy"])
        rec.update(user_code(rec["strategy"], rec["block_size"], results["workload"], q.on_model, recorded))
    results["recommendation"] = rec
    return q


def _print_answer(results: dict) -> None:
    print_tables(results)
    print("\n".join(recommendation_lines(results["recommendation"])))


def _from_results(args: argparse.Namespace, constraints: Constraints) -> int:
    """Recommend from a saved results.json (validated), measuring nothing and writing nothing."""
    try:
        with open(args.from_results, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--from-results must name a readable results.json, got {args.from_results!r} ({e})") from e
    validate(results)
    _recommend(results, args, args.seq_len, constraints)
    _print_answer(results)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args`` (see :func:`add_parser`)."""
    work, plan, constraints = _settings(args)
    if args.from_results:
        return _from_results(args, constraints)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, work, plan, constraints)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, work: Workload, plan: SweepPlan, constraints: Constraints) -> int:
    from ..bench.info import machine_info, versions

    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    results: dict = {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "interrupted": False,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": 0.0,
        "command": ["sparseformer", *getattr(args, "argv", ["bench"])],
        "machine": machine_info(work.device),
        "versions": versions(work.backend, work.device, work.torch_dtype),
        "workload": work.to_dict(),
        "settings": {
            "quick": bool(args.quick),
            "block_sizes": list(plan.block_sizes),
            "strategies": [s.name for s in plan.strategies],
            "min_len": plan.min_len,
            "max_len": plan.max_len,
            "repeats": plan.repeats,
            "min_time_s": plan.min_time_s,
            "warmup": plan.warmup,
            "time_budget_s": plan.time_budget_s,
            "constraints": constraints.given(),
            "seq_len": plan.seq_len,
            "memory_method": memory_method(torch.device(work.device)),
        },
        "measurements": [],
        "stopped_because": "not started",
        "model_quality": None,
        "recommendation": None,
        "notes": [],
    }
    do_model = not (args.no_model_quality or (args.quick and args.model is None))
    n_model = len(plan.strategies) * len(plan.block_sizes) if do_model else 0
    bar = _progress_bar(plan.cells_per_length * len(plan.lengths()) + n_model)

    def progress(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

    try:
        run_sweep(work, plan, results, progress)
        if bar is not None:  # the sweep may stop before its longest length
            bar.total = bar.n + n_model
            bar.refresh()
        if do_model:
            results["model_quality"] = model_quality(
                plan.strategies, plan.block_sizes, model_path=args.model, backend=work.backend, progress=progress
            )
            if not results["model_quality"]["available"]:
                reason = results["model_quality"]["reason"]
                print(f"pretrained-model quality skipped: {reason}", file=sys.stderr)
                if args.model:
                    results["notes"].append(f"--model {args.model} was not used: {reason}")
        results["complete"] = True
    except KeyboardInterrupt:
        results["interrupted"] = True
        results["stopped_because"] = "interrupted (Ctrl-C)"
    finally:
        if bar is not None:
            bar.close()
    results["elapsed_s"] = time.perf_counter() - started
    q = _recommend(results, args, plan.seq_len, constraints)
    files = _write_outputs(results, args.out, plan, q)
    print("wrote " + ", ".join(files))
    if results["interrupted"]:
        print(f"interrupted: kept the {len(results['measurements'])} measurements made so far", file=sys.stderr)
    _print_answer(results)  # last: the answer
    return 130 if results["interrupted"] else 0
