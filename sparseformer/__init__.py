"""sparseformer: sparse attention that makes Transformers cheap enough for edge devices."""

from . import cache, export, nn, patterns
from .attention import pattern_attention, sparse_attention
from .layout import BlockLayout, compile_layout

__version__ = "0.1.0"

__all__ = [
    "BlockLayout",
    "cache",
    "compile_layout",
    "export",
    "nn",
    "pattern_attention",
    "patterns",
    "sparse_attention",
    "__version__",
]
