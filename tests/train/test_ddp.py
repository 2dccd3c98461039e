"""``torchrun --nproc-per-node 2`` (gloo, CPU) with the same global batch ends at one process's
parameters."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sparseformer.train.loop import CHECKPOINT, METRICS
from sparseformer.train.metrics import read

from .conftest import TINY_ARGS


def test_two_processes_match_one(tmp_path, reference_run):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "sparseformer.cli", "train", "--out", str(out), *TINY_ARGS]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    ref, got = load_file(str(reference_run / CHECKPOINT)), load_file(str(out / CHECKPOINT))
    names = [k for k in ref if k.startswith("model.")]
    assert names and names == [k for k in got if k.startswith("model.")]
    for k in names:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-5, msg=k)
    for a, b in zip(read(reference_run / METRICS), read(out / METRICS), strict=True):
        assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
        assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], abs=1e-4)
        if a["train_loss"] is not None:
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
