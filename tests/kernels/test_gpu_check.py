"""``benchmarks/gpu_check.py`` runs: its smoke run on the CPU (``--device cpu``, tiny sizes) goes
through the correctness check, every method and the table, so the one run a lent GPU gets does
not fail on the script itself. The CUDA-only parts (gradients, sinks, CUDA events) stay unrun."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparseformer.kernels import flex

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"
METHODS = ("sdpa flash (dense)", "FlexAttention, own mask", "sparseformer flex", "sparseformer gather")


@pytest.mark.skipif(flex.unavailable_reason(torch.device("cpu")) is not None, reason="no CPU FlexAttention")
def test_smoke_run_on_the_cpu():
    argv = ["--device", "cpu", "--lengths", "256", "--windows", "64", "--head-dims", "32", "--heads", "2"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--repeats", "1"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "CPU (smoke run)" in out and "correctness PASS" in out
    rows = [line for line in out.splitlines() if line.startswith("| 256 |")]
    assert [row.split(" | ")[3] for row in rows] == list(METHODS)
    assert all(row.split(" | ")[4] == "fwd" for row in rows)
