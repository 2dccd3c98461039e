"""What ``sfh.sparsify(model)`` refuses (by name, ValueError), and why the exactness tests can
fail: the tiny models' outputs move with a window one token wider."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import sparseformer.hf as sfh  # noqa: E402

from .native_checks import batch, pair  # noqa: E402
from .tiny import NATIVE, WINDOW, native  # noqa: E402


def _outputs(model, ids, mask) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", NATIVE)
def test_a_wider_window_changes_the_outputs(family):
    """So the 1e-5 agreement of ``test_native_*`` pins the window's bounds exactly. (ModernBERT and
    bidirectional Gemma 3 store half windows: 2 more tokens of window is one more on each side.)"""
    torch.set_num_threads(1)
    ids, mask = batch(5 * WINDOW + 3, "right")
    wider = WINDOW + (2 if family in ("modernbert", "gemma3-bidirectional") else 1)
    with torch.no_grad():
        a = _outputs(native(family, "eager"), ids, mask)
        b = _outputs(native(family, "eager", wider), ids, mask)
    assert (a - b)[mask.bool()].abs().max() > 1e3 * 1e-5


def test_unknown_family_with_local_attention_is_refused_by_name():
    from transformers import Phi3Config, Phi3ForCausalLM

    model = Phi3ForCausalLM(
        Phi3Config(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            sliding_window=4,
            pad_token_id=0,
        )
    )
    with pytest.raises(ValueError, match="'phi3'.*sliding_window"):
        sfh.sparsify(model)


def test_gemma2_bidirectional_is_refused():
    from transformers import Gemma2Config, Gemma2Model

    cfg = Gemma2Config(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        use_bidirectional_attention=True,
    )
    with pytest.raises(ValueError, match="gemma2 with use_bidirectional_attention"):
        sfh.sparsify(Gemma2Model(cfg))


def test_config_mask_and_keyword_must_agree():
    """Gemma 3's layers keep the ``sliding_window`` they were built with; a config changed afterwards
    makes the mask (and the config) say another window: refused, not half-honoured."""
    _, ours = pair("gemma3")
    ours.config.sliding_window = WINDOW + 2
    with pytest.raises(ValueError, match=f"sliding_window={WINDOW} means"):
        ours(input_ids=torch.randint(3, 50, (1, 20)))


def test_a_4d_mask_is_refused():
    _, ours = pair("gemma3")
    with pytest.raises(ValueError, match="2-D padding mask"):
        ours(input_ids=torch.randint(3, 50, (1, 6)), attention_mask=torch.ones(1, 1, 6, 6, dtype=torch.bool))


def test_position_bias_is_refused():
    _, ours = pair("gemma3")
    layer = ours.model.layers[0].self_attn
    q = torch.randn(1, 4, 5, 8)
    with pytest.raises(ValueError, match="position_bias"):
        sfh.sparseformer_attention(layer, q, q[:, :2], q[:, :2], None, position_bias=torch.zeros(1))
