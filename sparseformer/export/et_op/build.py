"""Build of the ExecuTorch kernel library (``block_sparse_attention.cpp`` over the kernel core).

Built on first use (see :mod:`sparseformer.export._cxx`) into ``$SPARSEFORMER_ET_OP_DIR/`` when that
variable is set, else ``$XDG_CACHE_HOME/sparseformer/et_op/`` (``~/.cache/sparseformer/et_op/``),
as ``libsparseformer_et_<hash>.so``, against the headers and ``libexecutorch.so`` that the
``executorch`` wheel ships (found without importing it), with the compile definitions its CMake
package declares (``share/cmake/executorch-config.cmake``: ``C10_USING_CUSTOM_GENERATED_MACROS``,
``ET_EVENT_TRACER_ENABLED``). The library's run path points at that ``libexecutorch.so``, the one
the wheel's Python runtime loads, so the kernel registers where the runtime looks it up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .._cxx import CxxLibrary

__all__ = ["build_directory", "executorch_root", "library_path"]

_HERE = Path(__file__).parent


def executorch_root() -> Path:
    """The installed ``executorch`` package's folder; RuntimeError when it is not installed or
    ships no headers or runtime library."""
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the ExecuTorch kernel library needs the executorch package: pip install 'sparseformer[executorch]'"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for need in (root / "include" / "executorch", root / "lib" / "libexecutorch.so"):
        if not need.exists():
            raise RuntimeError(f"the ExecuTorch kernel library needs {need}, which this executorch install lacks")
    return root


def _flags() -> list[str]:
    root = executorch_root()
    c10 = root / "include" / "executorch" / "runtime" / "core" / "portable_type" / "c10"
    lib = root / "lib"
    return [
        "-DC10_USING_CUSTOM_GENERATED_MACROS",
        "-DET_EVENT_TRACER_ENABLED",
        f"-I{root / 'include'}",
        f"-I{c10}",
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",
    ]


_LIBRARY = CxxLibrary(
    "ExecuTorch kernel library",
    "libsparseformer_et",
    _HERE / "block_sparse_attention.cpp",
    (),
    env_dir="SPARSEFORMER_ET_OP_DIR",
    subdir="et_op",
    flags=_flags,
    libs=("-lexecutorch",),
)


def build_directory() -> Path:
    """The folder the library is built into."""
    return _LIBRARY.build_directory()


def library_path() -> Path:
    """The path of the built library (building it first when it is missing or out of date).

    Raises RuntimeError naming the cause when executorch or a compiler is missing or the build fails.
    """
    return _LIBRARY.path()
