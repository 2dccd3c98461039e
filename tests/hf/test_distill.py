"""Distillation on a tiny model: it trains, checkpoints atomically, resumes exactly, loads back."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from sparseformer.hf import load_distilled  # noqa: E402
from sparseformer.hf.distill import DistillConfig, distill, lr_at  # noqa: E402


def _cfg(base, steps):
    return DistillConfig(
        base=base, pattern="sliding-global", block_size=16, length=64, steps=steps, batch_size=2, lr=1e-3,
        warmup=1, hidden_weight=0.5, max_minutes=5, sources=("pydoc",),
    )  # fmt: skip


def test_distill_resume_and_load(tiny_dir, tmp_path):
    straight = distill(_cfg(tiny_dir, 3), tmp_path / "a", eval_passages=4)
    assert straight["step"] == 3 and set(straight["heldout"]) == {"passages", "mean_cos", "p5_cos", "nn_agree"}
    distill(_cfg(tiny_dir, 2), tmp_path / "b", eval_passages=0)
    resumed = distill(_cfg(tiny_dir, 3), tmp_path / "b", resume=True, eval_passages=4)
    assert resumed["step"] == 3
    a, b = load_distilled(tmp_path / "a"), load_distilled(tmp_path / "b")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert a.config.sparseformer["block_size"] == 16 and a.config._attn_implementation == "sparseformer"
    assert not list(tmp_path.glob("*/.*tmp"))  # no temporary files left
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["config"]["pattern"] == "sliding-global"


def test_distilled_model_differs_from_base_and_extends(tiny_dir, tmp_path):
    from transformers import AutoModel

    distill(_cfg(tiny_dir, 2), tmp_path / "c", eval_passages=0)
    model = load_distilled(tmp_path / "c", max_positions=128)
    base = AutoModel.from_pretrained(tiny_dir)
    w = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(model.state_dict()[w], base.state_dict()[w])
    with torch.no_grad():
        assert model(input_ids=torch.randint(1000, 2000, (1, 128))).last_hidden_state.shape == (1, 128, 32)


def test_sparse_layers_are_kept_and_checked(tiny_dir, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(_cfg(tiny_dir, 1), sparse_layers=[1])
    state = distill(cfg, tmp_path / "d", eval_passages=0)
    assert state["config"]["sparse_layers"] == (1,)
    model = load_distilled(tmp_path / "d")
    assert model.config.sparseformer["layers"] == [1]
    with pytest.raises(ValueError, match="settings differ"):
        distill(_cfg(tiny_dir, 2), tmp_path / "d", resume=True)
    assert distill(dataclasses.replace(cfg, steps=2), tmp_path / "d", resume=True, eval_passages=0)["step"] == 2
    with pytest.raises(ValueError, match="sparse_layers"):
        DistillConfig(base=tiny_dir, sparse_layers=1)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        distill(dataclasses.replace(cfg, sparse_layers=[5]), tmp_path / "e", eval_passages=0)


def test_bad_arguments(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="pattern preset"):
        DistillConfig(base=tiny_dir, pattern="nope")
    with pytest.raises(ValueError, match="loss"):
        DistillConfig(base=tiny_dir, loss="l1")
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(base=tiny_dir, steps=0)
    with pytest.raises(ValueError, match="hidden_layers"):
        DistillConfig(base=tiny_dir, hidden_layers="first")
    with pytest.raises(ValueError, match="resume"):
        distill(_cfg(tiny_dir, 2), tmp_path / "none", resume=True)
    with pytest.raises(ValueError, match="config.json"):
        load_distilled(tmp_path)


def test_hidden_loss_layers():
    from sparseformer.hf.distill import hidden_loss

    t = [torch.randn(2, 5, 8) for _ in range(4)]  # embeddings + 3 layer outputs
    s = [t[0], -t[1], t[2], t[3]]  # layer 1 inverted: 1 - cos = 2 there
    assert hidden_loss(s, t, "last").item() == pytest.approx(0, abs=1e-6)
    assert hidden_loss(s, t, "all").item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="layers"):
        hidden_loss(s, t, "first")


def test_schedule():
    cfg = DistillConfig(base="x", steps=100, warmup=10, lr=1.0)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 55) == pytest.approx(0.5) and lr_at(cfg, 100) == pytest.approx(0.0)


def test_trainable_attention_leaves_the_rest_alone(tiny_dir, tmp_path):
    import dataclasses

    from transformers import AutoModel

    cfg = dataclasses.replace(_cfg(tiny_dir, 2), trainable="attention")
    distill(cfg, tmp_path / "attn", eval_passages=0)
    got, base = load_distilled(tmp_path / "attn").state_dict(), AutoModel.from_pretrained(tiny_dir).state_dict()
    changed = {name for name, w in base.items() if not torch.equal(got[name], w)}
    assert "encoder.layer.1.attention.self.query.weight" in changed
    assert "encoder.layer.0.output.LayerNorm.weight" in changed
    assert not {n for n in changed if ".attention." not in n and "LayerNorm" not in n}
    with pytest.raises(ValueError, match="trainable"):
        DistillConfig(base=tiny_dir, trainable="mlp")
