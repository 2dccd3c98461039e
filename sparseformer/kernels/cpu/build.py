"""Just-in-time build of the native CPU kernels (``attention.cpp``, the ATen front-end over ``core.h``).

The extension is compiled once with ``torch.utils.cpp_extension.load`` into a cache folder and
loaded from there afterwards (a plain shared library that registers the operators
``torch.ops.sparseformer_cpu.{forward, backward, blas_available, set_use_blas, build_info}``); the folder is named after the Python and torch versions, and torch
rebuilds it whenever the source or the flags change. The folder is

- ``$TORCH_EXTENSIONS_DIR/sparseformer_cpu_<tag>/`` when ``TORCH_EXTENSIONS_DIR`` is set,
- else ``$XDG_CACHE_HOME/sparseformer/extensions/<tag>/`` (``~/.cache/sparseformer/...``).

``SPARSEFORMER_CPU_SANITIZE=address`` builds an AddressSanitizer variant instead (adds
``-fsanitize=address -fno-omit-frame-pointer`` to the compile and link flags) into its own folder,
``<tag>`` + ``_asan``, so it never replaces the normal build. Python itself is not instrumented, so
the ASan runtime must be preloaded; see ``docs/asan.md``. Any other non-empty value is a ValueError.

Everything is reported through :mod:`logging` (logger ``sparseformer.kernels.cpu``): the build
start and duration, and, once, why the extension is unavailable when it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_extension", "extension_or_none", "unavailable_reason", "build_directory"]

log = logging.getLogger("sparseformer.kernels.cpu")

_HERE = Path(__file__).parent
_SOURCE = _HERE / "attention.cpp"
_HEADERS = (_HERE / "core.h", _HERE / "tile_ops.h")
_NAME = "sparseformer_cpu"
# -O3, OpenMP (at::parallel_for expands to `#pragma omp parallel` in the header), no -march: the
# hot float loops carry their own target_clones on x86-64 (see attention.cpp).
# -fno-trapping-math lets the compiler if-convert the selects in the exp/mask loops; it changes
# no result, only the assumption that floating-point exceptions trap.
_CFLAGS = ["-O3", "-fopenmp", "-fno-trapping-math", "-std=c++17"]
_LDFLAGS = ["-fopenmp"]
_SANITIZE_ENV = "SPARSEFORMER_CPU_SANITIZE"
_ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer"]

_lock = threading.Lock()
_module: Any = None  # torch.ops.sparseformer_cpu once loaded
_error: str | None = None
_tried = False


def _sanitize() -> bool:
    """True when ``SPARSEFORMER_CPU_SANITIZE=address`` asks for the AddressSanitizer build."""
    value = os.environ.get(_SANITIZE_ENV, "")
    if value not in ("", "address"):
        raise ValueError(f"{_SANITIZE_ENV} must be 'address' or unset, got {value!r}")
    return value == "address"


def _tag() -> str:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    tv = torch.__version__.split("+")[0].replace(".", "_")
    return f"{py}_torch{tv}" + ("_asan" if _sanitize() else "")


def build_directory() -> Path:
    """The folder the extension is built into and loaded from."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root) / f"{_NAME}_{_tag()}"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "sparseformer" / "extensions" / _tag()


def _find_tools() -> str | None:
    """Returns why the extension cannot be built, or None when the tools are there."""
    if sys.platform.startswith("win"):
        return "the native CPU kernels are built with g++/clang; Windows is not supported yet"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler found (looked for {cxx!r} on PATH; set CXX to use another)"
    if shutil.which("ninja") is None:
        # The `ninja` wheel installs its binary beside the interpreter of a virtual environment
        # that may not be on PATH; torch looks for ninja on PATH only.
        candidates = [os.path.dirname(sys.executable)]
        try:
            import ninja  # type: ignore[import-not-found]

            candidates.append(str(ninja.BIN_DIR))
        except Exception:  # pragma: no cover - ninja wheel absent
            pass
        for folder in candidates:
            if shutil.which("ninja", path=folder):
                log.debug("adding %s to PATH so that torch finds ninja", folder)
                os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
                break
        else:
            return "ninja is not installed (pip install ninja); torch needs it to build extensions"
    return None


def _source_hash() -> str:
    """Hash of the source and headers: torch rebuilds when the flags change, and only hashes the
    listed sources, so the headers' hash goes into the flags."""
    h = hashlib.sha256()
    for f in (_SOURCE, *_HEADERS):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _build() -> Any:
    from torch.utils import cpp_extension

    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)
    log.info(
        "sparseformer: loading the native CPU kernels from %s (the first use compiles them, 13 s on a 2-core Zen 3)",
        folder,
    )
    t0 = time.perf_counter()
    asan = _ASAN_FLAGS if _sanitize() else []
    cpp_extension.load(
        name=_NAME,
        sources=[str(_SOURCE)],
        extra_cflags=[*_CFLAGS, *asan, f"-DSF_SOURCE_HASH={_source_hash()}"],
        extra_ldflags=[*_LDFLAGS, *asan],
        build_directory=str(folder),
        verbose=False,
        is_python_module=False,  # loaded into torch.ops by torch.ops.load_library
    )
    module = torch.ops.sparseformer_cpu
    log.info(
        "sparseformer: native CPU kernels ready in %.1f s (%s)",
        time.perf_counter() - t0,
        module.build_info(),
    )
    return module


def load_extension() -> Any:
    """Builds (first time) and loads the extension, returning ``torch.ops.sparseformer_cpu``;
    raises RuntimeError if that is impossible."""
    global _module, _error, _tried
    if _module is not None:
        return _module
    with _lock:
        if _module is None and not _tried:
            _tried = True
            reason = _find_tools()
            if reason is None:
                try:
                    _module = _build()
                except Exception as exc:  # compiler errors, link errors, import errors
                    reason = f"building the extension failed: {exc}"
            if reason is not None:
                _error = reason
                log.warning("sparseformer: the native CPU backend is unavailable: %s", reason)
    if _module is None:
        raise RuntimeError(f"sparseformer native CPU backend unavailable: {_error}")
    return _module


def extension_or_none() -> Any:
    try:
        return load_extension()
    except RuntimeError:
        return None


def unavailable_reason() -> str | None:
    """Why the extension is unavailable (after a load attempt), else None."""
    return _error
