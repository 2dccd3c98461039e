"""The strategies the benchmark compares: a name, the pattern for a block size, and the lines of
user code that build it (what the recommendation prints).

:data:`STRATEGIES` is the one place a strategy is added. A model pretrained with local attention
(``--model``) adds one more, :func:`native_strategy`: its own attention, per layer, which
``sfh.sparsify(model)`` runs exactly (its pretrained-model quality is 1.0 by construction, and
measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .. import patterns as P
from ..patterns.base import Pattern

DENSE = "dense"  # the baseline: nn.TransformerEncoderLayer with F.scaled_dot_product_attention


def _layer_args(workload: dict) -> str:
    """The encoder layer's arguments as measured (``workload``: a results' ``"workload"``): MiniLM's
    shape by default, dropout 0 and GELU as the benchmark ran them; dtype, device and backend only
    when they are not the defaults."""
    out = (
        f"d_model={workload['hidden']}, nhead={workload['heads']}, dim_feedforward={workload['ffn']}, "
        'dropout=0.0, activation="gelu", batch_first=True'
    )
    if workload.get("dtype", "float32") != "float32":
        out += f", dtype=torch.{workload['dtype']}"
    if workload.get("device", "cpu") != "cpu":
        out += f", device={workload['device']!r}"
    return out


@dataclass(frozen=True)
class Strategy:
    """``code(block_size)`` is a Python expression (with ``from sparseformer import patterns as P``)
    whose value equals ``build(block_size)``.

    ``native`` (a model's own attention, :func:`native_strategy`): one pattern expression per layer
    of the model, None for a layer of full attention; the measured encoder's layer ``i`` takes
    ``native[i % len(native)]`` (full layers stay dense SDPA) and ``code`` is its first windowed
    layer's pattern."""

    name: str
    code: Callable[[int], str]
    native: tuple[str | None, ...] | None = None

    def build(self, block_size: int) -> Pattern:
        return eval(self.code(block_size), {"P": P})  # our own fixed expressions, so the printed line is what ran

    def layer_patterns(self, block_size: int, layers: int) -> list[Pattern | None]:
        """The pattern of each of the measured encoder's ``layers`` layers (None: dense)."""
        if self.native is None:
            return [self.build(block_size)] * layers
        exprs = [self.native[i % len(self.native)] for i in range(layers)]
        return [None if e is None else eval(e, {"P": P}) for e in exprs]

    def layer_code(self, block_size: int, workload: dict) -> str:
        """One ``sf.nn.SparseTransformerEncoderLayer`` of the measured encoder (an expression in
        ``torch``, ``sf`` and ``P``)."""
        backend = workload.get("backend", "auto")
        extra = "" if backend == "auto" else f", backend={backend!r}"
        return (
            f"sf.nn.SparseTransformerEncoderLayer({_layer_args(workload)}, "
            f"pattern={self.code(block_size)}, block_size={block_size}{extra})"
        )

    def sparsify_code(self, block_size: int) -> str:
        """The same attention in a Hugging Face model ``model`` (an expression in ``sfh`` and ``P``);
        a native strategy: the model's own attention, exactly."""
        if self.native is not None:
            return f"sfh.sparsify(model, block_size={block_size})"
        return f"sfh.sparsify(model, {self.code(block_size)}, block_size={block_size})"


def decay_rate(block_size: int, eps: float = 0.01) -> float:
    """The decay rate whose truncation width ``ln(1/eps) / rate`` is two blocks (4 significant digits)."""
    return float(f"{math.log(1 / eps) / (2 * block_size):.4g}")


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("block-local", lambda bs: "P.BlockLocal()"),
    Strategy("sliding", lambda bs: 'P.SlidingWindow(1, unit="block")'),
    Strategy("sliding+global", lambda bs: 'P.SlidingWindow(1, unit="block") | P.Global(blocks=1)'),
    Strategy(
        "bigbird",
        lambda bs: "P.BigBird(num_random_blocks=2, num_sliding_window_blocks=3, num_global_blocks=1, seed=0)",
    ),
    Strategy("distance-decay", lambda bs: f"P.DistanceDecay(rate={decay_rate(bs)}, eps=0.01)"),
    Strategy("strided", lambda bs: f"P.Strided(stride={4 * bs})"),
)

BY_NAME = {s.name: s for s in STRATEGIES}
NATIVE = "native"


def native_strategy(config) -> Strategy | None:
    """The attention a Hugging Face ``config``'s model was pretrained with, as a strategy, when at
    least one of its layers attends to a window (:func:`sparseformer.hf.native_spans`); else None.

    A window layer of span ``lo <= p - j <= hi`` becomes ``P.SlidingWindow(hi, -lo)`` (a causal
    window, ``lo = 0``, keeps only keys before the query, so it needs no causal flag in the
    measured bidirectional encoder); a full layer stays dense (bidirectional SDPA: for a causal
    model's full layers that is the cost of twice the pairs, a pessimistic timing)."""
    from ..hf.native import native_spans

    try:
        spans = native_spans(config)
    except ValueError:  # a family sparseformer does not run natively
        return None
    exprs = tuple(None if s is None or not s.is_window else f"P.SlidingWindow({s.hi}, {-s.lo})" for s in spans)
    first = next((e for e in exprs if e is not None), None)
    if first is None:
        return None
    return Strategy(NATIVE, lambda bs: first, native=exprs)


def dense_code(workload: dict) -> str:
    """One layer of the dense baseline as user code (an expression in ``torch``): PyTorch's own
    encoder layer, whose attention the benchmark computes with ``F.scaled_dot_product_attention``
    (see :mod:`.workload`)."""
    return f"torch.nn.TransformerEncoderLayer({_layer_args(workload)})"


def user_code(name: str, block_size: int | None, workload: dict, on_model: bool, pattern: str = "") -> dict:
    """The statements a user runs to get configuration (``name``, ``block_size``) of the measured
    encoder: ``{"code": ...}`` builds one layer as ``layer``; with ``on_model`` (its quality was
    measured on a pretrained model) also ``"sparsify_code"``, which makes a Hugging Face ``model``
    use the same attention. ``pattern``: the pattern expression recorded for a strategy this
    version does not know (an older results file)."""
    if name == DENSE:
        return {"code": f"import torch\nlayer = {dense_code(workload)}"}
    s = BY_NAME.get(name) or Strategy(name, lambda bs: pattern, native=(pattern,) if name == NATIVE else None)
    torch_import = "import torch\n" if workload.get("dtype", "float32") != "float32" else ""
    out = {
        "code": f"{torch_import}import sparseformer as sf\nfrom sparseformer import patterns as P\n"
        f"layer = {s.layer_code(block_size, workload)}"
    }
    if on_model:
        out["sparsify_code"] = (
            f"import sparseformer.hf as sfh\nfrom sparseformer import patterns as P\nmodel = {s.sparsify_code(block_size)}"
        )
    return out
