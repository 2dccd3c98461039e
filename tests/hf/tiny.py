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


# -- models pretrained with local attention (tiny random configs, window W = WINDOW) ---------------

WINDOW = 8  # sliding window of the tiny native models, in tokens
VOCAB = 100
_SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
    initializer_range=0.2,  # peaked attention, so a wrong window shows in the outputs
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=None,  # generate() runs every step
)
_SLIDING_FULL_SLIDING = ["sliding_attention", "full_attention", "sliding_attention"]


def _native_configs(window: int) -> dict:
    """family -> (model class, config) of a tiny model with sliding and full layers."""
    import transformers as t

    three = dict(_SMALL, num_hidden_layers=3, sliding_window=window)
    return {
        "gemma3": (t.Gemma3ForCausalLM, t.Gemma3TextConfig(**three, layer_types=_SLIDING_FULL_SLIDING)),
        "gemma3-bidirectional": (
            t.Gemma3TextModel,
            t.Gemma3TextConfig(**three, layer_types=_SLIDING_FULL_SLIDING, use_bidirectional_attention=True),
        ),
        "gemma2": (
            t.Gemma2ForCausalLM,
            t.Gemma2Config(**three, layer_types=_SLIDING_FULL_SLIDING, attn_logit_softcapping=2.0),
        ),
        "mistral": (t.MistralForCausalLM, t.MistralConfig(**dict(three, num_hidden_layers=2))),
        "ministral": (t.MinistralForCausalLM, t.MinistralConfig(**three, layer_types=_SLIDING_FULL_SLIDING)),
        "qwen2": (t.Qwen2ForCausalLM, t.Qwen2Config(**three, use_sliding_window=True, max_window_layers=2)),
        "qwen3": (t.Qwen3ForCausalLM, t.Qwen3Config(**three, use_sliding_window=True, max_window_layers=1)),
        "cohere2": (t.Cohere2ForCausalLM, t.Cohere2Config(**three, layer_types=_SLIDING_FULL_SLIDING)),
        "olmo3": (t.Olmo3ForCausalLM, t.Olmo3Config(**three, layer_types=_SLIDING_FULL_SLIDING)),
        "gpt_oss": (
            t.GptOssForCausalLM,
            t.GptOssConfig(
                **three,
                layer_types=_SLIDING_FULL_SLIDING,
                num_local_experts=4,
                num_experts_per_tok=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            ),
        ),
        "modernbert": (
            t.ModernBertModel,
            t.ModernBertConfig(
                **{k: v for k, v in three.items() if k not in ("num_key_value_heads", "head_dim", "sliding_window")},
                local_attention=window,  # half window window // 2 on each side
                global_attn_every_n_layers=2,  # layers 0 and 2 full, layer 1 sliding
                cls_token_id=1,
                sep_token_id=2,
            ),
        ),
    }


NATIVE = (
    "gemma3",
    "gemma3-bidirectional",
    "gemma2",
    "mistral",
    "ministral",
    "qwen2",
    "qwen3",
    "cohere2",
    "olmo3",
    "gpt_oss",
    "modernbert",
)


def native(family: str, attn: str = "sdpa", window: int = WINDOW):
    """A tiny random model of ``family`` (one of :data:`NATIVE`) with ``attn_implementation=attn``
    and sliding window ``window`` (ModernBERT: ``local_attention``)."""
    cls, cfg = _native_configs(window)[family]
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    return cls(cfg).eval()
