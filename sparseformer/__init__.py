"""sparseformer: sparse attention that makes Transformers cheap enough for edge devices.

``sf.hf`` (Hugging Face integration) is imported on first use; it needs ``sparseformer[hf]`` only
when a model is touched, so ``import sparseformer`` stays light.
"""

from . import cache, export, nn, patterns
from .attention import pattern_attention, sparse_attention
from .layout import BlockLayout, compile_layout

__version__ = "0.1.0"

__all__ = [
    "BlockLayout",
    "cache",
    "compile_layout",
    "export",
    "hf",
    "nn",
    "pattern_attention",
    "patterns",
    "sparse_attention",
    "__version__",
]


def __getattr__(name: str):
    if name == "hf":  # lazy: `sf.hf.sparsify(...)` without `import sparseformer.hf`
        import importlib

        return importlib.import_module(".hf", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
