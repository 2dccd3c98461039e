"""``sparseformer export``: one file per length, named after the model, length and precision."""

import argparse

import pytest

from sparseformer.cli.edge import add_parser_export
from sparseformer.export import OnnxRunner

pytest.importorskip("onnxruntime")


def test_export_onnx_int8(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    add_parser_export(ap.add_subparsers())
    small = ["--layers", "1", "--heads", "2", "--d-model", "32", "--ffn", "64", "--block-size", "16"]
    args = ap.parse_args(["export", "--int8", "--lengths", "40", "--out", str(tmp_path), *small])
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder_L40.onnx", "encoder_L40_int8.onnx"]
    assert OnnxRunner(tmp_path / "encoder_L40_int8.onnx").seq_len == 40
    assert "encoder_L40_int8.onnx" in capsys.readouterr().out


def test_export_onnx_dynamic(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    add_parser_export(ap.add_subparsers())
    small = ["--layers", "1", "--heads", "2", "--d-model", "32", "--ffn", "64", "--block-size", "16"]
    args = ap.parse_args(
        ["export", "--dynamic", "--max-length", "300", "--lengths", "40", "--out", str(tmp_path), *small]
    )
    assert args.func(args) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["encoder_dynamic.onnx"]
    assert OnnxRunner(tmp_path / "encoder_dynamic.onnx").seq_range == (16, 300)
    assert "L in [16, 300]" in capsys.readouterr().out
    args = ap.parse_args(["export", "--dynamic", "--format", "executorch", "--out", str(tmp_path), *small])
    assert args.func(args) == 2
    assert "--dynamic is for --format onnx" in capsys.readouterr().err


def test_export_onnx_custom_op(tmp_path, capsys):
    from sparseformer.export.onnx import uses_custom_op

    ap = argparse.ArgumentParser()
    add_parser_export(ap.add_subparsers())
    small = ["--layers", "1", "--heads", "2", "--d-model", "32", "--ffn", "64", "--block-size", "16"]
    args = ap.parse_args(["export", "--custom-op", "--lengths", "48", "--out", str(tmp_path), *small])
    assert args.func(args) == 0
    path = tmp_path / "encoder_L48.onnx"
    assert uses_custom_op(path)
    runner = OnnxRunner(path)
    assert runner.custom_ops_library is not None
    assert f"custom-op library (SessionOptions.register_custom_ops_library): {runner.custom_ops_library}" in (
        capsys.readouterr().out
    )
    args = ap.parse_args(["export", "--custom-op", "--format", "executorch", "--out", str(tmp_path), *small])
    assert args.func(args) == 2
    assert "--custom-op is for --format onnx" in capsys.readouterr().err


def test_checkpoint_of_sparseformer_train_loads_and_a_misfit_is_named(tmp_path):
    pytest.importorskip("safetensors")
    import torch

    import sparseformer as sf
    from sparseformer.cli.edge import _load
    from sparseformer.train import checkpoint

    trained = sf.nn.SparseCausalLM(d_model=32, n_layers=1, n_heads=2, block_size=16)
    opt = torch.optim.AdamW(trained.parameters())
    trained(torch.randint(0, 256, (1, 32))).sum().backward()
    opt.step()
    path = tmp_path / "checkpoint.safetensors"
    checkpoint.save(path, trained, opt, {"step": 1})
    fresh = sf.nn.SparseCausalLM(d_model=32, n_layers=1, n_heads=2, block_size=16)
    _load(fresh, str(path))
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="does not fit the model built from these options"):
        _load(sf.nn.SparseCausalLM(d_model=32, n_layers=2, n_heads=2, block_size=16), str(path))
