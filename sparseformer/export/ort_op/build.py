"""Build of the ONNX Runtime custom-op library (``block_sparse_attention.cpp`` over the kernel core).

The library is compiled with the C++ compiler (``$CXX``, default ``c++``) on first use into

- ``$SPARSEFORMER_ORT_OP_DIR/`` when that variable is set,
- else ``$XDG_CACHE_HOME/sparseformer/ort_op/`` (``~/.cache/sparseformer/ort_op/``),

as ``libsparseformer_ort_<hash>.so``, where ``<hash>`` covers the sources (this folder's C++ and the
kernel's ``core.h`` / ``tile_ops.h``), the flags and the compiler's version: a changed source builds a
new file, an unchanged one is reused. The compiler writes to a temporary name that is then renamed,
so a concurrent or interrupted build never leaves a half library under the final name. It needs no
ONNX Runtime headers (``ort_api.h`` declares the C API entries used) and no library to link against.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["build_directory", "library_path"]

log = logging.getLogger("sparseformer.export.ort_op")

_HERE = Path(__file__).parent
_KERNEL = _HERE.parent.parent / "kernels" / "cpu"
_SOURCE = _HERE / "block_sparse_attention.cpp"
_HEADERS = (_HERE / "ort_api.h", _KERNEL / "core.h", _KERNEL / "tile_ops.h")
# As the ATen build (kernels/cpu/build.py) less OpenMP's runtime: -fopenmp-simd (with SF_OPENMP_SIMD,
# which tile_ops.h reads, as -fopenmp-simd defines no macro) keeps the SIMD hints; threads are
# std::thread. Hidden visibility: the one exported symbol is RegisterCustomOps.
_FLAGS = [
    "-O3",
    "-std=c++17",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fopenmp-simd",
    "-DSF_OPENMP_SIMD",
    "-fno-trapping-math",
    "-fvisibility=hidden",
]

_lock = threading.Lock()
_built: Path | None = None


def build_directory() -> Path:
    """The folder the library is built into."""
    root = os.environ.get("SPARSEFORMER_ORT_OP_DIR")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "sparseformer" / "ort_op"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(
            f"the ONNX Runtime custom-op library needs a C++ compiler: none found (looked for {cxx!r} on PATH; "
            "set CXX to use another)"
        )
    if sys.platform.startswith("win") or sys.platform == "darwin":
        raise RuntimeError(f"the ONNX Runtime custom-op library is built for Linux only, not {sys.platform}")
    return cxx


def _digest(cxx: str) -> str:
    h = hashlib.sha256()
    for f in (_SOURCE, *_HEADERS):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(" ".join(_FLAGS).encode())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    h.update(version.encode())
    return h.hexdigest()[:16]


def library_path() -> Path:
    """The path of the built library (building it first when it is missing or out of date).

    Raises RuntimeError naming the cause when there is no compiler or the build fails.
    """
    global _built
    with _lock:
        if _built is not None and _built.is_file():
            return _built
        cxx = _compiler()
        folder = build_directory()
        target = folder / f"libsparseformer_ort_{_digest(cxx)}.so"
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{target.name}.{os.getpid()}.tmp"
            cmd = [cxx, *_FLAGS, f"-I{_KERNEL}", str(_SOURCE), "-o", str(tmp)]
            log.info("sparseformer: building the ONNX Runtime custom-op library %s", target)
            t0 = time.perf_counter()
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"building the ONNX Runtime custom-op library failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}"
                    )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            log.info("sparseformer: custom-op library ready in %.1f s", time.perf_counter() - t0)
        _built = target
        return target
