"""Build of the ONNX Runtime custom-op library (``block_sparse_attention.cpp`` over the kernel core).

Built on first use (see :mod:`sparseformer.export._cxx`) into ``$SPARSEFORMER_ORT_OP_DIR/`` when
that variable is set, else ``$XDG_CACHE_HOME/sparseformer/ort_op/`` (``~/.cache/sparseformer/ort_op/``),
as ``libsparseformer_ort_<hash>.so``. It needs no ONNX Runtime headers (``ort_api.h`` declares the C
API entries used) and no library to link against.
"""

from __future__ import annotations

from pathlib import Path

from .._cxx import CxxLibrary

__all__ = ["build_directory", "library_path"]

_HERE = Path(__file__).parent
_LIBRARY = CxxLibrary(
    "ONNX Runtime custom-op library",
    "libsparseformer_ort",
    _HERE / "block_sparse_attention.cpp",
    (_HERE / "ort_api.h",),
    env_dir="SPARSEFORMER_ORT_OP_DIR",
    subdir="ort_op",
)


def build_directory() -> Path:
    """The folder the library is built into."""
    return _LIBRARY.build_directory()


def library_path() -> Path:
    """The path of the built library (building it first when it is missing or out of date).

    Raises RuntimeError naming the cause when there is no compiler or the build fails.
    """
    return _LIBRARY.path()
