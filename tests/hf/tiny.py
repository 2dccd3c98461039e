"""Tiny random transformers models built in the tests (no hub)."""

from __future__ import annotations

import torch


def bert(max_positions: int = 128, vocab: int = 200, causal: bool = False):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        is_decoder=causal,
        attn_implementation="sdpa",
    )
    return BertModel(cfg).eval()


def gpt2(max_positions: int = 128, vocab: int = 100):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=max_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(cfg).eval()


def llama(vocab: int = 100):
    """Llama-style: RoPE, grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


def copy_of(model):
    """A second model with the same class, config and weights."""
    other = type(model)(model.config.__class__.from_dict(model.config.to_dict())).eval()
    other.load_state_dict(model.state_dict())
    other.set_attn_implementation("sdpa")
    return other
