"""``padding_from_mask``: transformers masks read as key padding (+ causal), anything else refused."""

from __future__ import annotations

import pytest
import torch

from sparseformer.hf import padding_from_mask


def _pad(b=3, lk=20):
    pad = torch.rand(b, lk) > 0.3
    pad[:, -1] = True
    return pad


def test_none_means_no_padding_and_the_hint():
    assert padding_from_mask(None, 2, 5, 9, True) == (None, True, 9)


@pytest.mark.parametrize("additive", [False, True])
def test_pure_padding_mask(additive):
    pad = _pad()
    keep = pad[:, None, None, :].expand(3, 1, 20, 20)
    mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min) if additive else keep
    kpm, causal, kv = padding_from_mask(mask, 3, 20, 20, False)
    assert torch.equal(kpm, pad) and causal is False and kv == 20


def test_padding_and_causal_bottom_right():
    pad = _pad(2, 30)
    lq = 7  # a prefill after 23 cached tokens
    i = torch.arange(lq)[:, None] + 23
    keep = pad[:, None, :] & (torch.arange(30)[None, :] <= i)  # [B, Lq, Lk]
    kpm, causal, kv = padding_from_mask(keep[:, None], 2, lq, 30, True)
    assert torch.equal(kpm, pad) and causal is True and kv == 30


def test_static_cache_tail_is_cut():
    """A static cache holds 40 slots of which 25 are filled: the causal reading keeps 25 keys."""
    i = torch.arange(5)[:, None] + 20
    keep = (torch.arange(40)[None, :] <= i)[None, None].expand(2, 1, 5, 40)
    kpm, causal, kv = padding_from_mask(keep, 2, 5, 40, True)
    assert kpm is None and causal is True and kv == 25


def test_single_query_follows_the_hint():
    keep = torch.ones(1, 1, 1, 10, dtype=torch.bool)
    assert padding_from_mask(keep, 1, 1, 10, True)[1] is True
    assert padding_from_mask(keep, 1, 1, 10, False)[1] is False


def test_other_masks_are_refused():
    band = (torch.arange(20)[:, None] - torch.arange(20)[None, :]).abs() <= 3  # sliding window
    with pytest.raises(ValueError, match="neither a padding mask"):
        padding_from_mask(band[None, None], 1, 20, 20, False)
    with pytest.raises(ValueError, match="neither a padding mask"):
        padding_from_mask((band & torch.ones(20, 20).tril().bool())[None, None], 1, 20, 20, True)
    bias = torch.randn(1, 1, 20, 20)
    with pytest.raises(ValueError, match="bias"):
        padding_from_mask(bias, 1, 20, 20, False)
    heads = torch.ones(1, 2, 20, 20, dtype=torch.bool)
    heads[0, 1, :, 3] = False
    with pytest.raises(ValueError, match="heads"):
        padding_from_mask(heads, 1, 20, 20, False)
    with pytest.raises(ValueError, match="shape"):
        padding_from_mask(torch.ones(1, 20, dtype=torch.bool), 1, 20, 20, False)
    with pytest.raises(TypeError, match="bool or floating"):
        padding_from_mask(torch.ones(1, 1, 20, 20, dtype=torch.long), 1, 20, 20, False)
