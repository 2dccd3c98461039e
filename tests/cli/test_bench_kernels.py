"""``sparseformer bench kernels`` runs end to end on tiny sizes and prints every table."""

from __future__ import annotations

from sparseformer.cli import main


def test_bench_kernels_tiny(capsys):
    argv = ["bench", "kernels", "--lengths", "100", "--methods", "sdpa,gather,cpu", "--block-size", "16",
            "--heads", "2", "--head-dim", "8", "--repeats", "1", "--decode-lengths", "300", "--decode-repeats", "1",
            "--window", "64", "--long", "200"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("sliding ±1 block", "BigBird, 2 random blocks per head", "decay, eps 1e-3"):
        assert f"| {name} | 100 | gather |" in out
    assert "| dense | 100 | sdpa |" in out
    assert "| 300 | cpu |" in out and "| 300 | gather |" in out
    assert "Long: L=200" in out
