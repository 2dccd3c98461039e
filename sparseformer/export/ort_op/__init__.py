"""The native block-sparse attention kernel inside ONNX Runtime: a custom-op library.

``block_sparse_attention.cpp`` is an ONNX Runtime front-end over the same C++ core as the PyTorch
``cpu`` backend (``sparseformer/kernels/cpu/core.h``); no copy of the kernel. It registers the op
``sparseformer.ai::BlockSparseAttention`` (version 1; inputs, attributes and outputs are listed at
the top of the C++ file). :func:`library_path` builds the library on first use (see :mod:`.build`)
and returns its path, for ``onnxruntime.SessionOptions.register_custom_ops_library(path)``;
:class:`~sparseformer.export.OnnxRunner` does that by itself for files that use the domain.

>>> import onnxruntime as ort
>>> from sparseformer.export.ort_op import library_path
>>> opts = ort.SessionOptions()
>>> opts.register_custom_ops_library(str(library_path()))   # doctest: +SKIP
"""

from .build import build_directory, library_path

#: The ONNX domain and op name of the custom op, and the domain's version.
DOMAIN = "sparseformer.ai"
OP_NAME = "BlockSparseAttention"
OP_VERSION = 1

__all__ = ["DOMAIN", "OP_NAME", "OP_VERSION", "build_directory", "library_path"]
