"""``sparseformer export``: one file per length, named after the model, length and precision."""

import argparse

import pytest

from sparseformer.cli.edge import add_parser_export
from sparseformer.export import OnnxRunner
from sparseformer.export.decode import OnnxDecoder

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
    assert "--dynamic is for --format onnx, or executorch with --custom-op (the portable" in capsys.readouterr().err


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
    dynamic = ["--custom-op", "--dynamic", "--max-length", "200", "--lengths", "40"]
    args = ap.parse_args(["export", *dynamic, "--out", str(tmp_path), *small])
    assert args.func(args) == 0
    assert uses_custom_op(tmp_path / "encoder_dynamic.onnx")
    assert OnnxRunner(tmp_path / "encoder_dynamic.onnx").seq_range == (16, 200)
    pytest.importorskip("executorch")
    from sparseformer.export import ExecuTorchRunner

    args = ap.parse_args(["export", *dynamic, "--format", "executorch", "--int8", "--out", str(tmp_path), *small])
    assert args.func(args) == 0
    runner = ExecuTorchRunner(tmp_path / "encoder_dynamic_int8.pte")
    assert runner.kernel_library is not None and runner.seq_range == (16, 200)
    assert f"kernel library (load it before the program's method, e.g. ctypes.CDLL): {runner.kernel_library}" in (
        capsys.readouterr().out
    )


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


def test_export_transformers_model_dirs(tmp_path, capsys):
    """``--model DIR`` (sparsified with --pattern, its own attention, or --stock) and
    ``--distilled DIR``: one file per length whose outputs are the PyTorch model's; with
    ``--dynamic``, one file for every length; with ``--decode-step``, a decoder's ONNX step whose greedy
    tokens are ``generate()``'s (the ExecuTorch step's options: the next test; its export: tests/export)."""
    pytest.importorskip("transformers")
    import torch

    import sparseformer.hf as sfh
    from sparseformer import patterns as P
    from tests.hf import tiny

    bert, gemma = tmp_path / "bert", tmp_path / "gemma"
    tiny.bert(max_positions=64).save_pretrained(bert)
    tiny.native("gemma3").save_pretrained(gemma)
    student = tiny.bert(max_positions=64)
    sfh.sparsify(student, P.SlidingWindow(1, unit="block") | P.Global(tokens=1), block_size=16)
    student.save_pretrained(tmp_path / "student")  # what `sparseformer distill` leaves: config.sparseformer set
    ap = argparse.ArgumentParser()
    add_parser_export(ap.add_subparsers())
    ids = torch.randint(3, 100, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    cases = [
        (["--model", str(bert), "--pattern", "sliding-cls", "--block-size", "16"], "bert_L40.onnx", student),
        (["--model", str(bert), "--stock"], "bert_stock_L40.onnx", tiny.bert(max_positions=64)),
        (["--model", str(gemma)], "gemma_L40.onnx", sfh.sparsify(tiny.native("gemma3"))),
        (["--distilled", str(tmp_path / "student")], "student_L40.onnx", student),
    ]
    for argv, name, model in cases:
        args = ap.parse_args(["export", "--lengths", "40", "--batch", "2", "--out", str(tmp_path), *argv])
        assert args.func(args) == 0
        assert name in capsys.readouterr().out
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        want = out.logits if "logits" in out else out.last_hidden_state
        got = OnnxRunner(tmp_path / name)(ids, mask)
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
    argv = [
        "export",
        "--lengths",
        "40",
        "--batch",
        "2",
        "--out",
        str(tmp_path),
        "--distilled",
        str(tmp_path / "student"),
    ]
    args = ap.parse_args([*argv, "--dynamic", "--max-length", "80"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "student_dynamic.onnx" in printed and "L in [2, 80]" in printed
    sfh.extend_positions(student, 80)  # past its 64 learned positions: --max-length extends them
    for length in (5, 23, 80):  # one file, every length up to --max-length, padded rows included
        ids = torch.randint(3, 100, (2, length))
        mask = torch.ones_like(ids)
        mask[1, length // 2 :] = 0
        with torch.no_grad():
            want = student(input_ids=ids, attention_mask=mask).last_hidden_state
        got = OnnxRunner(tmp_path / "student_dynamic.onnx")(ids, mask)
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
    argv = ["export", "--out", str(tmp_path), "--model", str(gemma), "--decode-step", "--batch", "2"]
    args = ap.parse_args([*argv, "--prefill", "3"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "gemma_decode_step.onnx" in printed and "gemma_prefill3.onnx" in printed
    with torch.no_grad():
        want = tiny.native("gemma3").generate(ids[:, :5], max_new_tokens=12, do_sample=False, pad_token_id=0)
    for prefill in (None, tmp_path / "gemma_prefill3.onnx"):
        decoder = OnnxDecoder(tmp_path / "gemma_decode_step.onnx", prefill=prefill)
        assert torch.equal(decoder.generate(ids[:, :5], torch.ones_like(ids[:, :5]), 12), want)
    args = ap.parse_args([*argv, "--prefill", "1"])
    assert args.func(args) == 2
    assert "--prefill takes --decode-step and a chunk C >= 2, got 1" in capsys.readouterr().err
    for argv, message in (
        (["--model", str(tmp_path)], "a transformers model directory"),
        (["--pattern", "sliding-cls"], "are for a transformers --model DIR"),
        (["--distilled", str(tmp_path / "student"), "--stock"], "carries its model and pattern"),
    ):
        args = ap.parse_args(["export", "--lengths", "40", "--batch", "2", "--out", str(tmp_path), *argv])
        with pytest.raises(ValueError, match=message):
            args.func(args)


def test_decode_step_int8_and_prefill_reach_the_executorch_export(tmp_path, capsys, monkeypatch):
    """``--decode-step --format executorch --int8 --prefill C``: the step and the prefill file, both
    int8, each named for what it is (the export itself is tested in tests/export)."""
    pytest.importorskip("transformers")
    from sparseformer.export import decode
    from tests.hf import tiny

    tiny.native("gemma3").save_pretrained(tmp_path / "gemma")
    calls = []

    def export(model, path, **kwargs):
        calls.append((path.name, kwargs))
        path.write_bytes(b"pte")
        return path

    monkeypatch.setattr(decode, "to_executorch_decode_step", export)
    ap = argparse.ArgumentParser()
    add_parser_export(ap.add_subparsers())
    argv = ["export", "--out", str(tmp_path), "--model", str(tmp_path / "gemma"), "--decode-step"]
    args = ap.parse_args([*argv, "--format", "executorch", "--int8", "--prefill", "5", "--max-length", "40"])
    assert args.func(args) == 0
    common = {"batch": 1, "max_past": 40, "int8": True}
    assert calls == [
        ("gemma_decode_step_int8.pte", {**common, "chunk": 1}),
        ("gemma_prefill5_int8.pte", {**common, "chunk": 5}),
    ]
    printed = capsys.readouterr().out
    assert "1 token per call" in printed and "5 tokens per call" in printed
    for option in ("--custom-op", "--dynamic"):  # refused with the reason
        assert args.func(ap.parse_args([*argv, option])) == 2
        assert "a step file serves every past length already" in capsys.readouterr().err
