"""A run killed mid-way (SIGKILL) resumes from its last checkpoint to the very parameters of an
uninterrupted run; checkpoints load with safetensors only; runs never mix."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sparseformer.train import checkpoint, train
from sparseformer.train.loop import CHECKPOINT, METRICS
from sparseformer.train.metrics import read

from .conftest import TINY, TINY_ARGS, replace


def _params(run_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run_dir / CHECKPOINT)).items() if k.startswith("model.")}


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, reference_run):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sparseformer.cli", "train", "--out", str(out), *TINY_ARGS]
    killed = subprocess.run([*cmd, "--crash-after-step", "5"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint.read_state(out / CHECKPOINT)["step"] == 3  # checkpoints at 3 and 6: step 4-5 are lost
    assert [r["step"] for r in read(out / METRICS)] == [0, 2, 4]  # the killed run logged step 4

    last = train(TINY, out, resume=True, progress=False)
    assert last["step"] == TINY.steps
    ref, got = _params(reference_run), _params(out)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
    ref_curve, curve = read(reference_run / METRICS), read(out / METRICS)
    assert [r["step"] for r in curve] == [0, 2, 4, 6]  # the lost step 4 record was replaced, not duplicated
    for a, b in zip(ref_curve, curve):
        assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], abs=1e-5)
        assert a["tokens"] == b["tokens"]


def test_checkpoint_holds_model_optimizer_and_state(reference_run):
    tensors = load_file(str(reference_run / CHECKPOINT))
    assert any(k.startswith("optimizer.state.") and k.endswith(".exp_avg_sq") for k in tensors)
    state = checkpoint.read_state(reference_run / CHECKPOINT)
    assert state["step"] == TINY.steps and state["config"] == TINY.to_json()
    assert json.loads((reference_run / "config.json").read_text()) == TINY.to_json()
    rec = read(reference_run / METRICS)[-1]
    assert set(rec) == {"step", "seconds", "tokens", "train_loss", "train_eval_loss", "heldout_loss", "heldout_bpb",
                        "lr", "tokens_per_s"}  # fmt: skip
    assert rec["tokens"] == TINY.steps * TINY.batch_size * TINY.context
    assert rec["heldout_bpb"] == pytest.approx(rec["heldout_loss"] / torch.log(torch.tensor(2.0)).item())
    assert rec["heldout_loss"] < read(reference_run / METRICS)[0]["heldout_loss"]  # it learned something


def test_runs_never_mix(reference_run, tmp_path):
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(TINY, reference_run, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        train(replace(lr=1e-3), reference_run, resume=True, progress=False)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = replace(steps=10, warmup=2, lr=1.0, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s) for s in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert cfg.lr_at(10) == pytest.approx(0.1)


def test_bad_config_names_the_argument():
    with pytest.raises(ValueError, match="context must be an int >= 1, got 0"):
        replace(context=0)
    with pytest.raises(TypeError, match="pattern must be a sparseformer Pattern or None"):
        replace(pattern="sliding")
