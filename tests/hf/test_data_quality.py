"""Offline corpora and the quality measures."""

from __future__ import annotations

import pytest
import torch

from sparseformer.hf import data
from sparseformer.hf.quality import agreement, pool, truncate


def test_split_is_by_topic_and_stable():
    topics = list(data.texts(("pydoc",)))
    splits = {t: data.split_of(t) for t in topics}
    assert set(splits.values()) == {"train", "heldout"}
    assert splits == {t: data.split_of(t) for t in topics}
    assert 0.1 < sum(v == "heldout" for v in splits.values()) / len(topics) < 0.3


def test_passages(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    train = data.passages(tok, 64, "train", sources=("pydoc",))
    held = data.passages(tok, 64, "heldout", limit=10, seed=1, sources=("pydoc",))
    assert len(held) == 10 and {t for t, _ in held}.isdisjoint({t for t, _ in train})
    for _, ids in held:
        assert ids.shape == (64,) and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert [t for t, _ in held] == [
        t for t, _ in data.passages(tok, 64, "heldout", limit=10, seed=1, sources=("pydoc",))
    ]
    with pytest.raises(ValueError, match="split"):
        data.passages(tok, 64, "test")
    with pytest.raises(ValueError, match="limit"):
        data.passages(tok, 64, "heldout", limit=10**6, sources=("pydoc",))
    with pytest.raises(ValueError, match="sources"):
        data.texts(("web",))


def test_agreement():
    ref = torch.randn(30, 8)
    a = agreement(ref, ref * 2)
    assert a["mean_cos"] == pytest.approx(1) and a["p5_cos"] == pytest.approx(1) and a["nn_agree"] == 1
    b = agreement(ref, torch.randn(30, 8))
    assert b["mean_cos"] < 0.6 and b["nn_agree"] < 0.5
    with pytest.raises(ValueError, match="ref and emb"):
        agreement(ref, ref[:5])


def test_pool_and_truncate():
    h = torch.randn(2, 5, 3)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(pool(h, m)[0], h[0, :3].mean(0))
    torch.testing.assert_close(pool(h), h.mean(1))
    ids = torch.arange(20).view(2, 10)
    assert truncate(ids, 4, 99).tolist() == [[0, 1, 2, 99], [10, 11, 12, 99]]


def test_presets_at_512_tokens_stay_under_30_percent():
    from sparseformer.hf.quality import preset

    def density(name, bs):
        return preset(name).compile(q_len=512, num_heads=12, block_size=bs).density

    assert 0.25 < density("sliding-cls-random", 16) <= 0.30
    assert 0.25 < density("sliding2-cls", 32) <= 0.30
    assert 0.25 < density("sliding-cls-strided", 16) <= 0.30
    assert density("sliding-cls-random", 16) > density("sliding-cls", 16)


def test_parse_preset():
    from sparseformer.hf.quality import parse_preset

    assert parse_preset("sliding-cls-random@16", 32) == ("sliding-cls-random", 16)
    assert parse_preset("sliding", 32) == ("sliding", 32)
    for bad in ("sliding@0", "sliding@x", "sliding@", "nope@16"):
        with pytest.raises(ValueError, match="pattern"):
            parse_preset(bad, 32)
