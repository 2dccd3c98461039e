"""The ``sparseformer`` command: patterns and demo."""

from __future__ import annotations

import subprocess
import sys

from sparseformer.cli import main


def test_patterns_prints_density_and_picture(capsys, tmp_path):
    png = tmp_path / "bigbird.png"
    assert main(["patterns", "sliding-global", "--seq-len", "512", "--block-size", "64", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "density 0.5312" in out  # 22 band tiles + 6 in global row 0 + 6 in global column 0, of 64
    assert "████" in out and "·" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_patterns_bad_block_size_is_a_clear_error(capsys):
    assert main(["patterns", "sliding", "--block-size", "48"]) == 2
    assert "block_size must be a power of two from 16 to 512, got 48" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparseformer.cli",
            "patterns",
            "decay",
            "--seq-len",
            "256",
            "--block-size",
            "16",
            "--causal",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "density" in out and "causal=True" in out
