"""``torchrun --nproc-per-node 2`` (gloo, CPU) with the same global batch ends at one process's
parameters, uninterrupted or killed mid-way and resumed from its last checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sparseformer.train import checkpoint, distributed
from sparseformer.train.loop import CHECKPOINT, METRICS
from sparseformer.train.metrics import read

from .conftest import TINY_ARGS

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]


def _torchrun(out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "-m", "sparseformer.cli", "train", "--out", str(out), "--device", "cpu", *TINY_ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _same_run(ref_dir, out) -> None:
    ref, got = load_file(str(ref_dir / CHECKPOINT)), load_file(str(out / CHECKPOINT))
    names = [k for k in ref if k.startswith("model.")]
    assert names and names == [k for k in got if k.startswith("model.")]
    for k in names:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-5, msg=k)
    for a, b in zip(read(ref_dir / METRICS), read(out / METRICS), strict=True):
        assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
        assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], abs=1e-4)
        if a["train_loss"] is not None:
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)


def test_two_processes_match_one(tmp_path, reference_run):
    done = _torchrun(tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    _same_run(reference_run, tmp_path / "ddp")


def test_killed_two_process_run_resumes_to_one_process_result(tmp_path, reference_run):
    """Both ranks SIGKILLed after step 5 (checkpoints at 3 and 6): torchrun fails, the step-3
    checkpoint stands, and two processes resumed from it end where one uninterrupted process did."""
    out = tmp_path / "ddp"
    killed = _torchrun(out, "--crash-after-step", "5")
    assert killed.returncode != 0
    assert checkpoint.read_state(out / CHECKPOINT)["step"] == 3
    logged = read(out / METRICS)
    assert [r["step"] for r in logged] == [0, 2, 4]
    resumed = _torchrun(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_run(reference_run, out)
    curve = read(out / METRICS)
    assert [r["step"] for r in curve] == [0, 2, 4, 6]  # the lost step 4 record replaced, not duplicated
    assert curve[:2] == logged[:2]  # steps 0 and 2 kept as logged (their seconds too): resumed, not rerun


def test_device_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="device must be one of \\('auto', 'cpu', 'cuda'\\), got 'gpu'"):
        distributed.init("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA device"):
        distributed.init("cuda")
    assert distributed.init("auto").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.init("cpu").device == torch.device("cpu")  # the choice a machine with fewer GPUs needs
