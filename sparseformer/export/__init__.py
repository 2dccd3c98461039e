"""Export sparse models for edge runtimes: ONNX Runtime and ExecuTorch, fp32 and int8.

The sparse attention is exported through the portable ``gather`` backend, or with
``custom_op=True`` as the native kernel: an ONNX Runtime custom op (``to_onnx``, :mod:`.ort_op`) or
an ExecuTorch kernel (``to_executorch`` / ``to_executorch_int8``, :mod:`.et_op`). Each export is
valid for the sequence length it was traced with (the block layout is a constant of the graph),
or for a range of lengths (``dynamic_length=True``, band-form patterns); the runners refuse other
lengths with a ValueError. Transformers models are exported with the tokenizer's inputs
(:mod:`.hf`), and a decoder's decode step with its KV cache as inputs and outputs
(:mod:`.decode`). The runtimes (onnx, onnxscript, onnxruntime, executorch, torchao: the ``edge``
extra) are imported only when used.
"""

from .decode import ExecuTorchDecoder, OnnxDecoder, to_executorch_decode_step, to_onnx_decode_step
from .executorch import ExecuTorchRunner, to_executorch
from .onnx import OnnxRunner, read_metadata, to_onnx
from .ort_sparse import OrtSparseAttention, ort_block_csr
from .quantize import cosine, quantize_eager, quantize_onnx, to_executorch_int8

__all__ = [
    "ExecuTorchDecoder",
    "ExecuTorchRunner",
    "OnnxDecoder",
    "OnnxRunner",
    "OrtSparseAttention",
    "cosine",
    "ort_block_csr",
    "quantize_eager",
    "quantize_onnx",
    "read_metadata",
    "to_executorch",
    "to_executorch_decode_step",
    "to_executorch_int8",
    "to_onnx",
    "to_onnx_decode_step",
]
