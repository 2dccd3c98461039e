"""The native block-sparse attention kernel inside ExecuTorch: a kernel library.

``block_sparse_attention.cpp`` is an ExecuTorch front-end over the same C++ core as the PyTorch
``cpu`` backend and the ONNX Runtime op (``sparseformer/kernels/cpu/core.h``); no copy of the
kernel. Loading the library registers the kernel ``sparseformer_et::block_sparse_attention.out`` (its
arguments are listed at the top of the C++ file; :mod:`.ops` defines the op in PyTorch) into the ExecuTorch runtime of the installed
``executorch`` wheel. :func:`library_path` builds it on first use (see :mod:`.build`);
:func:`load_library` builds and loads it, and :class:`~sparseformer.export.ExecuTorchRunner` calls it
for programs exported with ``to_executorch(..., custom_op=True)``. Any other process loads it
before loading such a program's method, with nothing from sparseformer:

>>> import ctypes
>>> from executorch.runtime import Runtime
>>> ctypes.CDLL("/path/to/libsparseformer_et_<hash>.so")   # doctest: +SKIP
>>> method = Runtime.get().load_program("enc_op.pte").load_method("forward")   # doctest: +SKIP

A runtime without the library refuses such a program when loading its method, with ExecuTorch's
own message naming ``sparseformer_et::block_sparse_attention.out`` as a missing operator.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from .build import build_directory, executorch_root, library_path

#: The name of the kernel the library registers.
KERNEL_NAME = "sparseformer_et::block_sparse_attention.out"

__all__ = ["KERNEL_NAME", "build_directory", "executorch_root", "library_path", "load_library"]

_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL] = {}


def load_library() -> Path:
    """Build (if needed) and load the kernel library into this process; returns its path.

    Raises RuntimeError naming the kernel and the library when it cannot be built or loaded.
    """
    try:
        path = library_path()
    except RuntimeError as e:
        raise RuntimeError(f"the ExecuTorch kernel {KERNEL_NAME} is in a library that cannot be built here: {e}") from e
    with _lock:
        if path not in _loaded:
            try:
                _loaded[path] = ctypes.CDLL(str(path))
            except OSError as e:
                raise RuntimeError(f"cannot load the ExecuTorch kernel library {path} ({KERNEL_NAME}): {e}") from e
    return path
