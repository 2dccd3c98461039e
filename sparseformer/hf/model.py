"""``sparsify``: switch a loaded transformers model to sparseformer attention, in place."""

from __future__ import annotations

from .. import patterns as P
from .attention import NAME, config_entry, register
from .native import native_spans


def _configs(model) -> list:
    """The model's config and every distinct config of its sub-models."""
    seen: dict[int, object] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def sparsify(
    model,
    pattern: P.Pattern | None = None,
    *,
    block_size: int = 64,
    backend: str = "auto",
    layers: list[int] | None = None,
):
    """Run the attention of ``model`` (a transformers ``PreTrainedModel``) through sparseformer.

    Without ``pattern``, every layer computes the model's *own* attention exactly
    (:func:`~sparseformer.hf.native.native_spans` says which pairs attend, per family): the sliding
    layers of Gemma 2/3, EmbeddingGemma, Mistral, Ministral, Qwen2/3, Cohere2, OLMo 3, ModernBERT and
    GPT-OSS as ``P.SlidingWindow`` layouts on the native kernel (``backend="auto"``), their full
    layers dense, with what the layers pass (scaling, GQA, padding, Gemma 2's ``softcap``, GPT-OSS's
    sinks). A model with full attention only (BERT, GPT-2, Llama, ...) runs exactly dense. A family
    with local attention that sparseformer does not know raises ValueError naming it.

    With ``pattern``, every layer, or with ``layers`` only those whose ``layer_idx`` is listed
    (0-based, each ``< config.num_hidden_layers``), keeps only the pairs of its own attention that
    ``pattern`` keeps (compiled with ``causal=True`` in causal layers); ``P.Dense()`` changes nothing.

    Sets ``config.sparseformer = config_entry(pattern, block_size=..., backend=..., layers=...)`` on
    the model's configs and switches them to ``attn_implementation="sparseformer"``. Returns ``model``.
    """
    from ._deps import require

    transformers = require("transformers")
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    entry = config_entry(pattern, block_size=block_size, backend=backend, layers=layers)
    text = model.config.get_text_config()
    native_spans(text)  # an unsupported family fails here, not in the first forward
    n = getattr(text, "num_hidden_layers", None)
    if layers is not None and n is not None and max(layers) >= n:
        raise ValueError(f"layers must be indices below num_hidden_layers={n}, got {sorted(layers)}")
    register()
    for cfg in _configs(model):
        setattr(cfg, NAME, entry)
    model.set_attn_implementation(NAME)
    if model.config._attn_implementation != NAME:
        raise ValueError(f"{type(model).__name__} does not dispatch attention through transformers' AttentionInterface")
    return model
