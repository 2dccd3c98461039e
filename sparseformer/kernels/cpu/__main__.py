"""``python -m sparseformer.kernels.cpu``: build the native kernels of the ``cpu`` backend now (in
an image, during an install) rather than at their first use, and say where they are and how they
were built. (The ONNX Runtime custom-op library, :mod:`sparseformer.export.ort_op`, still builds
on its own first use.)"""

import logging

from .build import build_directory, load_extension

logging.basicConfig(level=logging.INFO, format="%(message)s")
print(f"{build_directory()}: {load_extension().build_info()}")
