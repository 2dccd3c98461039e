"""The ``quality`` and ``distill`` subcommands, end to end on a tiny model."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("transformers")

from sparseformer.cli.hf import add_parser_distill, add_parser_quality  # noqa: E402


def _run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    add_parser_quality(sub)
    add_parser_distill(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_distill_then_quality(tiny_dir, tmp_path, capsys):
    common = ["--model", tiny_dir, "--block-size", "16", "--sources", "pydoc"]
    student = str(tmp_path / "student")
    assert _run(["distill", *common, "--out", student, "--length", "64", "--steps", "2", "--batch-size", "2",
                 "--eval-passages", "4"]) == 0  # fmt: skip
    assert "held-out (4 passages of 64 tokens)" in capsys.readouterr().out
    out = tmp_path / "q.md"
    argv = ["quality", *common, "--lengths", "64", "--passages", "6", "--patterns", "sliding@32", "dense",
            "--student", student, "--long", "128", "--long-passages", "3", "--out", str(out)]  # fmt: skip
    assert _run(argv) == 0
    text = out.read_text()
    assert (
        "| zero-shot sliding ±1 block, block 32 | 64 |" in text
        and "| dense, input truncated to 32 tokens | 64 |" in text
    )
    assert f"| distilled `{student}`, block 16 | 128 |" in text and "truncated to 64 tokens | 128 |" in text
    dense_row = next(
        line for line in text.splitlines() if line.startswith("| zero-shot dense (P.Dense()), block 16 | 64 |")
    )
    assert dense_row.split("|")[4].strip() == "1.0000"  # dense pattern = dense model


def test_bad_pattern_argument_names_it(capsys):
    with pytest.raises(SystemExit):
        _run(["quality", "--patterns", "sliding@0"])
    assert "NAME@BLOCK_SIZE" in capsys.readouterr().err


def test_missing_dependency_names_the_extra():
    from sparseformer.hf._deps import require

    with pytest.raises(ImportError, match=r"pip install sparseformer\[hf\]"):
        require("surely_not_installed_pkg_sf")
