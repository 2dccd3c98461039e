"""``sparseformer bench models``: models pretrained with local attention, stock vs sparseformer.

Each model is built from its real configuration, ``model_configs/<name>.json`` beside this file
(the published ``config.json`` values under ``"config"``, where they come from under ``"_source"``,
what was reduced and why under ``"_reduced"``), with random float32 weights drawn from ``"seed"``,
and run three ways (``IMPLS``):

* ``sdpa``: transformers' stock ``attn_implementation="sdpa"``; its sliding layers run dense SDPA
  over an L×L mask;
* ``eager``: transformers' stock ``"eager"``, which materialises ``[1, H, L, L]`` scores; not run
  (with the reason) where its estimate (:func:`eager_bytes`) exceeds 80% of the available memory;
* ``sparseformer``: the same weights after ``sfh.sparsify(model)`` with no pattern, which runs the
  model's own attention exactly, its sliding layers on the native kernel.

**Prefill** (one sequence, batch 1, token ids drawn uniformly from the vocabulary with seed 0; a
causal model is called as ``generate`` prefills, ``use_cache=True, logits_to_keep=1``; an encoder
returns its last hidden states). Every (model, impl, length) runs in a fresh child process
(forked from a server process that has only imported the libraries, or spawned; see
:func:`in_child`), so one run's memory never hides another's:

* latency: the first call is untimed, unless it took ``LONG_CALL_S`` or more, in which case it is
  the first timed sample (warm-up is negligible against it); then timed calls until ``repeats``
  samples or until the next one would pass ``budget_s`` seconds of timed calls. Median and
  spread (max - min) of the samples, and their number;
* memory: the child's peak resident set (``ru_maxrss``: imports, weights, inputs and the prefill)
  and the prefill's own peak beyond what the child held before it (:func:`.measure.peak_memory`);
* the bound: wall time inside the attention function of the sliding layers (the calls with a
  ``sliding_window``) over the whole prefill, median over the samples. If sparse attention made
  those calls free, the whole prefill could be at most ``1 / (1 - share)`` times faster.

**Decode** (causal models; every impl asked for but ``eager``): the context is filled by chunked prefill (``DECODE_CHUNK`` tokens a
call, the model's own cache, the impl under test), then ``DECODE_WARMUP`` untimed steps and
``steps`` timed greedy steps of one token. Reported: tokens/s (1 / median step), the attention
time per step of sliding and full layers, the bytes the cache holds for sliding and full layers,
and the child's resident set after decoding.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import write_atomic, write_text
from .info import machine_info
from .measure import peak_memory

CONFIG_DIR = str(Path(__file__).with_name("model_configs"))
IMPLS = ("sdpa", "eager", "sparseformer")
SPARSE = "sparseformer"
HEADS = ("causal-lm", "encoder")
LONG_CALL_S = 30.0
DECODE_CHUNK = 2048
DECODE_WARMUP = 2
_CPU = torch.device("cpu")


# --- model specifications ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One ``model_configs/<name>.json``: ``config`` holds transformers config keyword arguments;
    ``head`` is ``"causal-lm"`` (``AutoModelForCausalLM``) or ``"encoder"`` (``AutoModel``)."""

    name: str
    title: str
    head: str
    seed: int
    config: dict = field(repr=False)
    source: tuple[str, ...] = field(repr=False)
    reduced: str = field(repr=False)

    @property
    def causal(self) -> bool:
        return self.head == "causal-lm"

    @property
    def layer_types(self) -> list[str]:
        """``"sliding_attention"`` or ``"full_attention"`` per layer, as transformers reads the config."""
        cfg = _hf_config(self)
        n = cfg.num_hidden_layers
        types = getattr(cfg, "layer_types", None)
        if types is None:  # Mistral: every layer has the one sliding_window (or none)
            types = ["sliding_attention" if getattr(cfg, "sliding_window", None) else "full_attention"] * n
        return list(types)


def model_names(configs: str = CONFIG_DIR) -> list[str]:
    """The model names (file stems) in ``configs``, sorted."""
    if not os.path.isdir(configs):
        raise ValueError(f"configs must be a folder of model JSON files, got {configs!r} (not a folder)")
    return sorted(p.stem for p in Path(configs).glob("*.json"))


def load_spec(name: str, configs: str = CONFIG_DIR) -> ModelSpec:
    """Read ``configs/<name>.json``; ValueError naming what is wrong or missing."""
    names = model_names(configs)
    if name not in names:
        raise ValueError(f"models: unknown model {name!r}; the models in {configs} are {names}")
    path = os.path.join(configs, f"{name}.json")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    missing = [k for k in ("title", "head", "seed", "config", "_source", "_reduced") if k not in d]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if d["head"] not in HEADS:
        raise ValueError(f"{path}: head must be one of {HEADS}, got {d['head']!r}")
    source = d["_source"]
    return ModelSpec(name, d["title"], d["head"], int(d["seed"]), d["config"], tuple(source), d["_reduced"])


def _transformers():
    from ..hf._deps import require

    return require("transformers")


def _hf_config(spec: ModelSpec):
    transformers = _transformers()
    return transformers.AutoConfig.for_model(**spec.config)


def build_model(spec: ModelSpec, impl: str):
    """The model of ``spec`` with ``attn_implementation=impl`` (``sparseformer``: built, then
    ``sfh.sparsify(model)`` with no pattern), random float32 weights from ``spec.seed``, eval mode.
    The weights do not depend on ``impl``."""
    if impl not in IMPLS:
        raise ValueError(f"impls: unknown implementation {impl!r}, expected one of {IMPLS}")
    transformers = _transformers()
    auto = transformers.AutoModelForCausalLM if spec.causal else transformers.AutoModel
    torch.manual_seed(spec.seed)
    base = "eager" if impl == SPARSE else impl  # every model supports eager; sparsify switches it
    model = auto.from_config(_hf_config(spec), attn_implementation=base, dtype=torch.float32).eval()
    if impl == SPARSE:
        from .. import hf as sfh

        sfh.sparsify(model)
    return model


def eager_bytes(spec: ModelSpec, length: int) -> int:
    """Estimated peak bytes of one stock eager attention layer at ``length`` tokens: three
    float32 ``[1, H, L, L]`` tensors (scores, softmax, GPT-OSS's scores with the sink column) and
    the float32 ``[1, 1, L, L]`` mask."""
    heads = spec.config["num_attention_heads"]
    return 4 * length * length * (3 * heads + 1)


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def model_class(spec: ModelSpec) -> type:
    """The transformers class :func:`build_model` instantiates."""
    transformers = _transformers()
    mapping = transformers.MODEL_FOR_CAUSAL_LM_MAPPING if spec.causal else transformers.MODEL_MAPPING
    return mapping[type(_hf_config(spec))]


def skip_reason(spec: ModelSpec, impl: str, length: int) -> str | None:
    """Why (model, impl, length) is not run here, or None: stock sdpa where transformers does
    not support it for the model, eager where its estimate exceeds 80% of the available memory."""
    if impl == "sdpa" and not model_class(spec)._supports_sdpa:
        return f"transformers' {model_class(spec).__name__} does not support sdpa"
    if impl != "eager":
        return None
    need, avail = eager_bytes(spec, length), _available_bytes()
    if avail is not None and need > 0.8 * avail:
        return f"eager needs ~{need / 2**30:.0f} GiB of [1, H, L, L] scores, {avail / 2**30:.0f} GiB available"
    return None


# --- what a child process measures ----------------------------------------------------------


class AttentionTimer:
    """Wraps an attention function of transformers' ``AttentionInterface``; adds the wall time of
    each call to ``seconds["sliding"]`` (the call has a ``sliding_window``) or ``seconds["full"]``."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        self.seconds = {"sliding": 0.0, "full": 0.0}

    def __call__(self, module, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.fn(module, *args, **kwargs)
        kind = "full" if kwargs.get("sliding_window") is None else "sliding"
        self.seconds[kind] += time.perf_counter() - t0
        return out


def install_timer(model, impl: str) -> AttentionTimer:
    """Route ``impl``'s attention function through an :class:`AttentionTimer` (registered
    globally in transformers: call this only in a process of its own, as the children are)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    fn = (
        sys.modules[type(model).__module__].eager_attention_forward
        if impl == "eager"
        else ALL_ATTENTION_FUNCTIONS[impl]
    )
    timer = AttentionTimer(fn)
    AttentionInterface.register(impl, timer)
    return timer


def _token_ids(spec: ModelSpec, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, spec.config["vocab_size"], (1, length), generator=gen)  # [1, L]


def _forward(model, spec: ModelSpec, ids: torch.Tensor, cache=None):
    if spec.causal:
        return model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return model(input_ids=ids)


def _rss_mib(field_name: str = "VmRSS") -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prefill_child(name: str, configs: str, impl: str, length: int, repeats: int, budget_s: float, threads: int) -> dict:
    """One prefill measurement (see the module docstring); runs in a child process."""
    torch.set_num_threads(threads)
    spec = load_spec(name, configs)
    model = build_model(spec, impl)
    timer = install_timer(model, impl)
    ids = _token_ids(spec, length)
    rss_before = _rss_mib()
    times, shares = [], []

    def timed(fn):
        timer.reset()
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
        return out, secs, timer.seconds["sliding"] / secs

    with torch.inference_mode():
        (_, extra_mib), first, share = timed(lambda: peak_memory(lambda: _forward(model, spec, ids), _CPU))
        first_timed = first >= LONG_CALL_S
        if first_timed:
            times.append(first)
            shares.append(share)
        while len(times) < repeats and (not times or sum(times) + statistics.median(times) <= budget_s):
            _, secs, share = timed(lambda: _forward(model, spec, ids))
            times.append(secs)
            shares.append(share)
    return {
        "times_s": times,
        "first_call_timed": first_timed,
        "sliding_attention_share": statistics.median(shares),
        "rss_before_mib": rss_before,
        "prefill_extra_mib": extra_mib,
        "peak_rss_mib": _max_rss_mib(),
    }


def _cache_mib(cache, types: list[str]) -> dict[str, float]:
    """MiB the cache's tensors hold, per layer type (``sliding`` / ``full``)."""
    out = {"sliding": 0.0, "full": 0.0}
    for layer, kind in zip(cache.layers, types):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                out["sliding" if kind == "sliding_attention" else "full"] += t.numel() * t.element_size() / 2**20
    return out


def decode_child(name: str, configs: str, impl: str, context: int, steps: int, threads: int) -> dict:
    """One decode measurement (see the module docstring); runs in a child process."""
    torch.set_num_threads(threads)
    spec = load_spec(name, configs)
    model = build_model(spec, impl)
    timer = install_timer(model, impl)
    ids = _token_ids(spec, context)
    step_s, sliding_s, full_s = [], [], []
    with torch.inference_mode():
        cache, t0 = None, time.perf_counter()
        for start in range(0, context, DECODE_CHUNK):
            out = _forward(model, spec, ids[:, start : start + DECODE_CHUNK], cache)
            cache = out.cache
        fill_s = time.perf_counter() - t0
        token = out.logits[:, -1:].argmax(-1)  # [1, 1]
        for i in range(DECODE_WARMUP + steps):
            timer.reset()
            t0 = time.perf_counter()
            out = _forward(model, spec, token, cache)
            secs = time.perf_counter() - t0
            token = out.logits[:, -1:].argmax(-1)
            if i >= DECODE_WARMUP:
                step_s.append(secs)
                sliding_s.append(timer.seconds["sliding"])
                full_s.append(timer.seconds["full"])
    return {
        "fill_s": fill_s,
        "step_s": step_s,
        "sliding_attention_s": statistics.median(sliding_s),
        "full_attention_s": statistics.median(full_s),
        "cache_mib": _cache_mib(cache, spec.layer_types),
        "rss_mib": _rss_mib(),
        "peak_rss_mib": _max_rss_mib(),
    }


def _child_main(conn, fn: Callable, args: tuple) -> None:
    try:
        out = fn(*args)
    except Exception as e:  # reported as the row's note; the run goes on
        out = {"error": f"{type(e).__name__}: {e}"}
    conn.send(out)
    conn.close()


def _context():
    """multiprocessing's ``forkserver`` (children fork from a server process that has imported
    this module, transformers' ``modeling_utils`` and :mod:`sparseformer.hf`, and done nothing
    else), or ``spawn`` where there is none."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "transformers.modeling_utils", "sparseformer.hf"])
    return ctx


def in_child(fn: Callable, *args) -> dict:
    """``fn(*args)`` in a fresh child process (see :func:`_context`); its dict, or ``{"error": ...}``."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, fn, args))
    proc.start()
    send.close()
    try:
        out = recv.recv()
    except EOFError:
        out = None
    proc.join()
    if out is None:
        killed = " (SIGKILL: out of memory?)" if proc.exitcode == -9 else ""
        return {"error": f"child process died, exit code {proc.exitcode}{killed}"}
    return out


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What one ``bench models`` run measures. ``decode_models`` must be causal models."""

    models: tuple[str, ...]
    impls: tuple[str, ...] = IMPLS
    lengths: tuple[int, ...] = (2048, 8192, 32768)
    repeats: int = 3
    budget_s: float = 120.0
    decode_models: tuple[str, ...] = ("gemma-3-270m",)
    decode_contexts: tuple[int, ...] = (1024, 8192, 32768)
    decode_steps: int = 16
    threads: int = field(default_factory=torch.get_num_threads)
    configs: str = CONFIG_DIR


def check_options(opt: Options) -> None:
    """ValueError naming the option, what it got and what was expected."""
    names = model_names(opt.configs)
    if not opt.models and not opt.decode_models:
        raise ValueError("models and decode_models are both empty: nothing to measure")
    for arg, models in (("models", opt.models), ("decode_models", opt.decode_models)):
        unknown = [m for m in models if m not in names]
        if unknown:
            raise ValueError(f"{arg}: unknown models {unknown}; the models in {opt.configs} are {names}")
    bad = [i for i in opt.impls if i not in IMPLS]
    if bad or not opt.impls:
        raise ValueError(f"impls must be a non-empty subset of {IMPLS}, got {list(opt.impls)}")
    for arg, values in (("lengths", opt.lengths), ("decode_contexts", opt.decode_contexts)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{arg} must be token counts >= 1, got {list(values)}")
    for arg, v in (("repeats", opt.repeats), ("decode_steps", opt.decode_steps), ("threads", opt.threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{arg} must be an int >= 1, got {v!r}")
    if not opt.budget_s > 0:
        raise ValueError(f"budget_s must be > 0 seconds, got {opt.budget_s!r}")
    encoders = [m for m in opt.decode_models if not load_spec(m, opt.configs).causal]
    if encoders:
        raise ValueError(f"decode_models must be causal models, got encoders {encoders}")


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _jobs(opt: Options) -> list[tuple]:
    prefill = [("prefill", m, impl, n) for m in opt.models for n in opt.lengths for impl in opt.impls]
    decode = [("decode", m, impl, n) for m in opt.decode_models for n in opt.decode_contexts for impl in opt.impls]
    return prefill + [j for j in decode if j[2] != "eager"]  # decode: stock sdpa vs sparseformer


def run(opt: Options, *, show_progress: bool = True, on_row: Callable[[dict], None] | None = None) -> dict:
    """Measure every (model, impl, length) of ``opt``; the results dict (see :func:`write_results`).
    ``on_row`` is called with each finished row (the CLI writes the results file there)."""
    check_options(opt)
    results = {
        "machine": machine_info("cpu") | {"torch_threads": opt.threads},
        "load_average_start": _load_average(),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opt).items()},
        "prefill": [],
        "decode": [],
    }
    from ..hf._deps import progress

    jobs = _jobs(opt)
    bar = progress(total=len(jobs), desc="bench models", unit="run", file=sys.stderr, disable=not show_progress)
    for kind, name, impl, n in jobs:
        bar.set_postfix_str(f"{name} {impl} {n}")
        spec = load_spec(name, opt.configs)
        row = {"model": name, "title": spec.title, "impl": impl, "tokens": n}
        reason = skip_reason(spec, impl, n)
        if reason:
            row["skipped"] = reason
        elif kind == "prefill":
            row |= in_child(prefill_child, name, opt.configs, impl, n, opt.repeats, opt.budget_s, opt.threads)
        else:
            row |= in_child(decode_child, name, opt.configs, impl, n, opt.decode_steps, opt.threads)
        results[kind].append(row)
        results["load_average_end"] = _load_average()
        if on_row is not None:
            on_row(results)
        bar.update(1)
    bar.close()
    return results


# --- reports ------------------------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def _gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.2f}"


def _not_run(row: dict) -> str | None:
    return row.get("skipped") or row.get("error")


def prefill_table(results: dict) -> str:
    """Markdown: one row per prefill measurement; ``vs sdpa`` / ``vs eager`` is that stock run's
    median over this row's; stock rows note the bound ``1 / (1 - share)`` of their sliding layers'
    attention share."""
    rows = results["prefill"]
    stock = {(r["model"], r["tokens"], r["impl"]): _median(r["times_s"]) for r in rows if "times_s" in r}
    out = [
        "| model | tokens | impl | median s | spread s | runs | vs sdpa | vs eager | peak RSS GiB "
        "| prefill extra GiB | sliding-layer attention share | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['title']} | {r['tokens']} | {r['impl']} "
        if _not_run(r):
            out.append(head + "| - " * 8 + f"| not run: {_not_run(r)} |")
            continue
        t = r["times_s"]
        med = _median(t)
        ratios = [stock.get((r["model"], r["tokens"], ref)) for ref in ("sdpa", "eager")]
        share = r["sliding_attention_share"]
        note = [f"bound 1/(1-share) = {1 / (1 - share):.2f}x" if r["impl"] != SPARSE and share < 1 else ""]
        note.append("first call timed" if r["first_call_timed"] else "")
        out.append(
            head
            + f"| {med:.3f} | {max(t) - min(t):.3f} | {len(t)} "
            + "".join("| - " if ref is None else f"| {ref / med:.2f}x " for ref in ratios)
            + f"| {_gib(r['peak_rss_mib'])} | {_gib(r['prefill_extra_mib'])} | {share:.1%} "
            f"| {'; '.join(n for n in note if n)} |"
        )
    return "\n".join(out)


def decode_table(results: dict) -> str:
    """Markdown: one row per decode measurement (medians over the timed steps)."""
    out = [
        "| model | context | impl | tokens/s | ms/token | spread ms | sliding attn ms/token | full attn ms/token "
        "| cache MiB sliding | cache MiB full | RSS GiB after | peak RSS GiB | fill s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["decode"]:
        head = f"| {r['title']} | {r['tokens']} | {r['impl']} "
        if _not_run(r):
            out.append(head + "| - " * 9 + f"| not run: {_not_run(r)} |")
            continue
        s = r["step_s"]
        med = _median(s)
        out.append(
            head + f"| {1 / med:.1f} | {med * 1e3:.1f} | {(max(s) - min(s)) * 1e3:.1f} "
            f"| {r['sliding_attention_s'] * 1e3:.2f} | {r['full_attention_s'] * 1e3:.2f} "
            f"| {r['cache_mib']['sliding']:.1f} | {r['cache_mib']['full']:.1f} | {_gib(r['rss_mib'])} "
            f"| {_gib(r['peak_rss_mib'])} | {r['fill_s']:.1f} |"
        )
    return "\n".join(out)


def load_line(results: dict) -> str:
    """The machine's memory and its load average (1, 5, 15 min) when the run started and ended."""
    m = results["machine"]
    return (
        f"{m['memory_total_mib'] / 1024:.1f} GiB memory, {results['options']['threads']} torch threads per measurement; "
        f"load average (1, 5, 15 min) at start {results['load_average_start']}, at end {results.get('load_average_end')}"
    )


def write_plot(results: dict, path: str) -> None:
    """PNG: prefill median seconds against tokens (log-log), one panel per model, one line per impl."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"plots need matplotlib ({e}); install it with: pip install sparseformer[plot]") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results["prefill"]))
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4 * max(len(models), 1), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        rows = [r for r in results["prefill"] if r["model"] == name and "times_s" in r]
        for impl, style in zip(IMPLS, ("s-", "^--", "o-")):
            pts = sorted((r["tokens"], _median(r["times_s"])) for r in rows if r["impl"] == impl)
            if pts:
                ax.plot(*zip(*pts), style, label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(load_spec(name, results["options"]["configs"]).title, fontsize=8)
        ax.set_xlabel("tokens")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("prefill median (s)")
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def write_results(results: dict, path: str) -> None:
    """``results`` as JSON, atomically: machine, load averages, options, and the ``prefill`` and
    ``decode`` rows (every sample in seconds, memory in MiB, or ``skipped`` / ``error``)."""
    write_text(path, json.dumps(results, indent=1) + "\n")
