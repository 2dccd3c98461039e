"""Sparse attention inside Hugging Face transformers models (needs ``pip install sparseformer[hf]``).

>>> import sparseformer.hf as sfh
>>> model = sfh.sparsify(AutoModelForCausalLM.from_pretrained(gemma3_path))   # its own sliding windows, exactly
>>> model = sfh.sparsify(AutoModel.from_pretrained(path), P.SlidingWindow(1, unit="block") | P.Global(tokens=1))

or, for a model not yet loaded::

    sfh.register()
    config = AutoConfig.from_pretrained(path)
    config.sparseformer = sfh.config_entry(pattern, block_size=64)   # leave out: the model's own attention
    model = AutoModel.from_pretrained(path, config=config, attn_implementation="sparseformer")

``native_spans(config)`` says which (query, key) pairs each layer of a model attends (its
:class:`Span`), per family; masks reach the attention as a compact :class:`MaskInfo`, never L x L.

``extend_positions(model, n)`` grows learned position embeddings; ``load_distilled(path)`` loads
what ``sparseformer distill`` wrote. Importing this package does not import transformers.
"""

from .attention import config_entry, register, sparseformer_attention
from .cache import streaming_cache
from .distill import load_distilled
from .masks import MaskInfo
from .model import sparsify
from .native import Span, native_spans
from .positions import extend_positions
from .spec import from_spec, to_spec

__all__ = [
    "config_entry",
    "extend_positions",
    "from_spec",
    "load_distilled",
    "MaskInfo",
    "native_spans",
    "register",
    "Span",
    "sparseformer_attention",
    "sparsify",
    "streaming_cache",
    "to_spec",
]
