"""Drop-in PyTorch modules on sparse attention."""

from .causal_lm import CausalLMConfig, SparseCausalLM
from .encoder_layer import SparseTransformerEncoderLayer
from .multihead_attention import SparseMultiheadAttention

__all__ = ["CausalLMConfig", "SparseCausalLM", "SparseMultiheadAttention", "SparseTransformerEncoderLayer"]
