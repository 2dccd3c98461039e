"""Checks shared by the ``test_native_*`` files: a tiny model of one family run by
``sfh.sparsify(model)`` (its own attention, no pattern) against the stock model, fp32, 1e-5."""

from __future__ import annotations

import torch

import sparseformer.hf as sfh

from .tiny import VOCAB, WINDOW, native

TOL = 1e-5
# below, equal to, one past, and well above (odd, several windows) the window
LENGTHS = (WINDOW - 3, WINDOW, WINDOW + 1, 5 * WINDOW + 3)


def pair(family: str, reference: str = "sdpa"):
    """(stock model with ``attn_implementation=reference``, the same weights under ``sfh.sparsify``)."""
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU (tests/conftest.py restores it)
    return native(family, reference), sfh.sparsify(native(family, reference), block_size=16)


def batch(length: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of ``length`` ids; the second and third padded on ``side`` ("left"/"right")."""
    torch.manual_seed(length)
    ids = torch.randint(3, VOCAB, (3, length))
    mask = torch.ones_like(ids)
    for row, pad in ((1, min(3, length - 1)), (2, length // 2)):
        if side == "left":
            mask[row, :pad] = 0
        else:
            mask[row, length - pad :] = 0
    return ids, mask


def _outputs(model, ids, mask) -> list[torch.Tensor]:
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return [out.hidden_states[-1]] + ([out.logits] if hasattr(out, "logits") else [])


def assert_forward_matches(family: str, length: int, side: str, reference: str = "sdpa") -> None:
    """Last hidden states (and logits) of the real tokens equal the stock model's."""
    stock, ours = pair(family, reference)
    ids, mask = batch(length, side)
    with torch.no_grad():
        want, got = _outputs(stock, ids, mask), _outputs(ours, ids, mask)
    keep = mask.bool()
    for w, g in zip(want, got):
        assert torch.isfinite(g[keep]).all()
        assert (g[keep] - w[keep]).abs().max() <= TOL


def assert_generate_matches(family: str, reference: str = "sdpa", **kwargs) -> None:
    """Greedy ``generate()`` with the model's own cache, left padding, 4 windows of new tokens."""
    stock, ours = pair(family, reference)
    ids, mask = batch(WINDOW + 3, "left")
    kw = dict(attention_mask=mask, max_new_tokens=4 * WINDOW, do_sample=False, pad_token_id=0, **kwargs)
    with torch.no_grad():
        assert torch.equal(ours.generate(ids, **kw), stock.generate(ids, **kw))


def assert_gradients_match(family: str) -> None:
    """One fine-tuning step: every parameter's gradient equals the stock eager model's."""
    grads = []
    ids, mask = batch(3 * WINDOW + 1, "right")
    for model in pair(family, "eager"):
        model.train()
        out = _outputs(model, ids, mask)[-1]
        torch.manual_seed(1)
        readout = torch.randn(out.shape[-1])  # a random direction: normalised states have gradients too
        ((out @ readout) * mask).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=TOL * float(g.abs().max()), msg=name)
