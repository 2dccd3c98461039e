"""``sparse_attention``: the public entry point. Checks arguments, then dispatches to a backend."""

from __future__ import annotations

import logging
import math

import torch

from .band import band_of
from .layout import BlockLayout, _check_block_size, untraced
from .patterns.base import Pattern

log = logging.getLogger("sparseformer")

BACKENDS = ("auto", "reference", "gather", "cpu", "flex")
_warned: set[str] = set()


def _log_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.info(msg)


def _check_inputs(q, k, v, key_padding_mask, dropout_p, scale) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have 4 dims [B, H, L, D], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    b, h, _, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"batch sizes differ: q {b}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must agree in heads and length, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if k.shape[3] != d:
        raise ValueError(f"k's head dim must equal q's ({d}), got {k.shape[3]}")
    if k.shape[1] < 1 or h % k.shape[1]:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({k.shape[1]})")
    if min(q.shape) < 1 or min(k.shape) < 1 or v.shape[3] < 1:
        raise ValueError(f"every size must be >= 1, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask must be a bool tensor (True = keep), got {getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}"
            )
        if tuple(key_padding_mask.shape) != (b, k.shape[2]):
            raise ValueError(
                f"key_padding_mask must have shape [B, Lk] = {(b, k.shape[2])}, got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask must be on {q.device}, got {key_padding_mask.device}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0 or math.isinf(scale)
    ):
        raise ValueError(f"scale must be a positive finite float or None, got {scale!r}")


def _check_softcap_sinks(softcap, sinks, q: torch.Tensor) -> None:
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
            raise TypeError(f"softcap must be a positive finite float or None, got {type(softcap).__name__}")
        if not (math.isfinite(softcap) and softcap > 0):
            raise ValueError(f"softcap must be a positive finite float or None, got {softcap!r}")
    if sinks is not None:
        if not isinstance(sinks, torch.Tensor) or not sinks.is_floating_point():
            got = f"dtype {sinks.dtype}" if isinstance(sinks, torch.Tensor) else type(sinks).__name__
            raise TypeError(f"sinks must be a floating-point tensor [H] (one logit per query head) or None, got {got}")
        if tuple(sinks.shape) != (q.shape[1],):
            raise ValueError(
                f"sinks must have shape [H] = ({q.shape[1]},) (one logit per query head), got {tuple(sinks.shape)}"
            )
        if sinks.device != q.device:
            raise ValueError(f"sinks must be on {q.device} like q, got {sinks.device}")


def _check(q, k, v, layout, key_padding_mask, dropout_p, scale, softcap, sinks) -> None:
    _check_inputs(q, k, v, key_padding_mask, dropout_p, scale)
    _check_softcap_sinks(softcap, sinks, q)
    if not isinstance(layout, BlockLayout):
        hint = " (call pattern.compile(q_len=..., num_heads=...) first)" if hasattr(layout, "compile") else ""
        raise TypeError(f"layout must be a BlockLayout, got {type(layout).__name__}{hint}")
    want = (layout.num_heads, layout.q_len, layout.kv_len)
    got = (q.shape[1], q.shape[2], k.shape[2])
    if want != got:
        raise ValueError(
            f"layout was compiled for (num_heads, q_len, kv_len) = {want} but the inputs have {got}; "
            "compile the pattern for these sizes"
        )


def _cpu_kernel():
    """The native CPU kernel module, or None (with the reason logged once)."""
    try:
        from .kernels import cpu
    except ImportError as e:  # the package was installed without it
        _log_once(f"sparseformer: native cpu kernel unavailable ({e}); using 'gather'")
        return None
    return cpu if cpu.is_available() else None


def pick_backend(q: torch.Tensor, dropout_p: float) -> str:
    """What ``backend="auto"`` runs: ``cpu`` on CPU tensors without dropout when the native
    kernel is available; ``flex`` (compiled FlexAttention) on CUDA tensors without dropout in
    float32, bfloat16 or float16 when it compiles there; else ``gather``, logging once why.
    Never the O(L²) ``reference``."""
    if q.device.type == "cpu" and dropout_p == 0 and q.dtype in (torch.float32, torch.float64, torch.bfloat16):
        if _cpu_kernel() is not None:
            return "cpu"
        return "gather"
    if q.device.type == "cpu" and dropout_p > 0:
        _log_once("sparseformer: dropout_p > 0 runs on 'gather' (the native kernel has no dropout)")
    if q.device.type == "cuda":
        from .kernels import flex

        why = flex.unavailable_reason(q.device)
        if dropout_p > 0:
            why = "dropout_p > 0 (FlexAttention has no dropout)"
        elif q.dtype not in flex.DTYPES:
            why = f"{q.dtype} (FlexAttention takes float32, bfloat16 or float16)"
        if why is None:
            _log_once("sparseformer: 'auto' runs 'flex' on CUDA tensors (compiled FlexAttention over the layout)")
            return "flex"
        _log_once(f"sparseformer: 'auto' runs 'gather' on CUDA here, not 'flex': {why}")
    return "gather"


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention restricted to ``layout``, with ``scaled_dot_product_attention``'s conventions.

    Args:
        q: ``[B, H, Lq, D]``.  k: ``[B, Hk, Lk, D]``.  v: ``[B, Hk, Lk, Dv]``; ``H % Hk == 0``
            (grouped-query attention: query head ``h`` reads key/value head ``h // (H // Hk)``).
        layout: ``pattern.compile(q_len=Lq, num_heads=H, kv_len=Lk, ...)``. Lengths need not be
            multiples of the block size.
        key_padding_mask: optional ``bool [B, Lk]``, True = keep the key.
        dropout_p: dropout on the attention probabilities (apply only while training).
        scale: score scale, ``None`` = ``1/sqrt(D)``.
        softcap: ``None`` or ``c > 0``: logit soft-capping (Gemma 2). The score of a listed pair is
            ``c * tanh(scale * <q_i, k_j> / c)``, then the layout's score terms (random-block
            log-weights, decay bias) are added, then the masks apply.
        sinks: ``None`` or a float tensor ``[H]`` (one per query head, may require grad):
            attention sinks (GPT-OSS), one extra logit per head in the softmax denominator with
            no value row: ``p_ij = exp(s_ij) / (sum_k exp(s_ik) + exp(sinks[h]))`` over the
            listed keys ``k`` of row ``i``; equivalently ``out = out_without_sinks *
            sigmoid(lse_i - sinks[h])`` with ``lse_i`` the row's logsumexp. Dropout applies to
            these probabilities, as in GPT-OSS.
        backend: ``"auto"``, ``"reference"`` (dense oracle, O(L²)), ``"gather"`` (portable,
            exportable), ``"cpu"`` (native kernel), ``"flex"`` (compiled FlexAttention; no
            dropout; on the CPU inference only and without sinks). ``"auto"``: see
            :func:`pick_backend`.

    Returns ``[B, H, Lq, Dv]``. A query row with no attending key gives zeros.
    """
    _check(q, k, v, layout, key_padding_mask, dropout_p, scale, softcap, sinks)
    _check_backend(backend)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    softcap = None if softcap is None else float(softcap)
    terms = dict(key_padding_mask=key_padding_mask, scale=scale, dropout_p=dropout_p, softcap=softcap, sinks=sinks)
    if backend == "auto":
        backend = pick_backend(q, dropout_p)
    if backend == "reference":
        from .kernels.reference import reference_attention

        return reference_attention(q, k, v, layout, **terms)
    if backend == "gather":
        from .kernels.gather import gather_attention

        return gather_attention(q, k, v, layout, **terms)
    if backend == "flex":
        from .kernels.flex import flex_sparse_attention

        return flex_sparse_attention(q, k, v, layout, **terms)
    return _native(q, k, v, layout, **terms)


def _native(q, k, v, layout, *, key_padding_mask, scale, dropout_p, softcap, sinks) -> torch.Tensor:
    """The ``cpu`` backend over a :class:`BlockLayout` or :class:`~sparseformer.layout.LayoutPrefix`."""
    cpu = _cpu_kernel()
    if cpu is None:
        raise ValueError("backend='cpu' is not available here (see the log for why); use 'gather' or 'auto'")
    if q.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got device {q.device}")
    if dropout_p > 0:
        raise ValueError("backend='cpu' has no dropout; use backend='gather' or 'auto' for dropout_p > 0")
    return cpu.attention(q, k, v, layout, key_padding_mask=key_padding_mask, scale=scale, softcap=softcap, sinks=sinks)


def _upper_bound(n: torch.SymInt) -> int | None:
    """The largest value a traced length may take (``torch.export``'s ``Dim(max=...)``), or None."""
    import sympy

    node = n.node
    upper = node.shape_env.bound_sympy(node.expr).upper
    return int(upper) if isinstance(upper, sympy.Integer) else None


def _bounded_layout(q: torch.Tensor, pattern: Pattern, block_size: int, causal: bool, resolved: str):
    """For self-attention at a symbolic length ``L`` on the ``cpu`` backend: the pattern compiled at
    ``L``'s upper bound and cut to ``L`` in the graph (:meth:`BlockLayout.prefix`), which is the
    pattern at ``L`` for band-form patterns and ``P.Dense()``; ValueError otherwise."""
    from .patterns.dense import Dense

    length = q.shape[2]
    if resolved != "cpu":
        raise ValueError(
            f"a symbolic length (a traced graph) runs on the 'gather' or 'cpu' backend, got backend={resolved!r}"
        )
    if type(pattern) is not Dense and band_of(pattern, block_size, causal, q.shape[1]) is None:
        raise ValueError(
            f"a symbolic length on the 'cpu' backend needs a band-form pattern or P.Dense() (the layout is compiled "
            f"at the length's upper bound and cut to the length in the graph), got {pattern!r}; trace at a fixed length"
        )
    upper = _upper_bound(length)
    if upper is None:
        raise ValueError(
            "a symbolic length on the 'cpu' backend needs an upper bound (torch.export Dim(max=...), to_onnx's "
            "max_length): the layout is compiled at it"
        )
    with untraced():  # a layout is data: compiled, not traced
        full = pattern.compile(q_len=upper, num_heads=q.shape[1], block_size=block_size, causal=causal)
    return full.prefix(length)


def pattern_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    *,
    block_size: int = 64,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``sparse_attention(q, k, v, pattern.compile(q_len=Lq, num_heads=H, block_size=block_size,
    kv_len=Lk, causal=causal), ...)``: what the modules call.

    One difference: self-attention (``Lq == Lk``) on the ``gather`` backend compiles no layout,
    so a traced graph (``torch.export``) keeps the length symbolic (``softcap`` and ``sinks``
    included): a band-form pattern (:func:`~sparseformer.band.band_of`: sliding windows and
    truncated decays plus global prefix tokens) runs
    :func:`~sparseformer.kernels.band.band_attention`, and ``P.Dense()`` (every pair, ``j <= i``
    when causal) runs :func:`~sparseformer.kernels.reference.masked_attention` over the
    ``[L, L]`` mask, the O(L²) a dense layer costs anyway. On the ``cpu`` backend a symbolic
    self-attention length with an upper bound (``torch.export``'s ``Dim(max=N)``) runs the
    native kernel over the layout compiled at ``N`` and cut to the length in the graph
    (:meth:`~sparseformer.layout.BlockLayout.prefix`; band-form patterns and ``P.Dense()``, else
    ValueError).
    """
    from .kernels.band import band_attention
    from .kernels.reference import masked_attention
    from .patterns.dense import Dense

    _check_inputs(q, k, v, key_padding_mask, dropout_p, scale)
    _check_softcap_sinks(softcap, sinks, q)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparseformer Pattern, got {type(pattern).__name__}")
    _check_backend(backend)
    _check_block_size(block_size)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    resolved = pick_backend(q, dropout_p) if backend == "auto" else backend
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    softcap = None if softcap is None else float(softcap)
    terms = dict(key_padding_mask=key_padding_mask, scale=scale, dropout_p=dropout_p, softcap=softcap, sinks=sinks)
    self_gather = resolved == "gather" and q.shape[2] == k.shape[2]
    if self_gather and type(pattern) is Dense:
        n = q.shape[2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device)  # [L, L]
        return masked_attention(q, k, v, mask.tril() if causal else mask, **terms)
    if not self_gather and isinstance(q.shape[2], torch.SymInt) and q.shape[2] == k.shape[2]:
        return _native(q, k, v, _bounded_layout(q, pattern, block_size, causal, resolved), **terms)
    band = band_of(pattern, block_size, causal, q.shape[1]) if self_gather else None
    if band is None:
        layout = pattern.compile(
            q_len=q.shape[2], num_heads=q.shape[1], block_size=block_size, kv_len=k.shape[2], causal=causal
        )
        return sparse_attention(q, k, v, layout, backend=backend, **terms)
    return band_attention(q, k, v, band, **terms)
