"""``sparseformer study`` end to end on a tiny configuration: every run trains, the report and
its PNGs are written, and the re-weighting ablation's two arms differ only in the re-weighting."""

from __future__ import annotations

import argparse
import json

import pytest

from sparseformer.cli.train import add_parser_study, add_parser_train
from sparseformer.train.study import stop_step


def _run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    add_parser_train(sub)
    add_parser_study(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    argv = [
        "study",
        "--out",
        str(out),
        "--strategies",
        "dense,bigbird,bigbird-noreweight",
        "--block-size",
        "16",
        "--window-blocks",
        "1",
        "--random-blocks",
        "2",
        "--context",
        "128",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--batch-size",
        "2",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--eval-every",
        "2",
        "--eval-contexts",
        "2",
        "--no-progress",
        "--budget-seconds",
        "1e-6",
    ]  # fmt: skip  (a budget below one step: every equal-time run takes 1 step)
    assert _run(argv) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    result = json.loads((out / "study.json").read_text())
    assert list(result["steps_arm"]) == ["dense", "bigbird", "bigbird-noreweight"]
    assert [s["steps"] for s in result["time_arm"].values()] == [1, 1, 1]
    for p in ("loss_vs_steps.png", "loss_vs_seconds.png", "loss_vs_density.png"):
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "## Equal steps (4 steps each)" in text and "## Equal wall-clock" in text
    assert "## Re-weighting ablation" in text
    for arm in ("steps_arm", "time_arm"):
        for s in result[arm].values():
            assert s["curve"][-1]["step"] == s["steps"]
            assert s["curve"][-1]["heldout_loss"] == s["heldout_loss"]
    assert result["steps_arm"]["dense"]["of_causal"] == 1.0
    assert 0 < result["steps_arm"]["bigbird"]["of_causal"] < 1

    # the ablation: same seeds and blocks, only the re-weighting differs, and it changes the result
    with_rw = json.loads((out / "steps" / "bigbird" / "config.json").read_text())
    without = json.loads((out / "steps" / "bigbird-noreweight" / "config.json").read_text())
    rb = [p for p in with_rw["pattern"]["parts"] if p["type"] == "RandomBlocks"]
    assert rb and rb[0]["reweight"] is True
    assert without == {**with_rw, "pattern": {**with_rw["pattern"], "parts": [
        {**p, "reweight": False} if p["type"] == "RandomBlocks" else p for p in with_rw["pattern"]["parts"]]}}  # fmt: skip
    a, b = result["steps_arm"]["bigbird"], result["steps_arm"]["bigbird-noreweight"]
    assert a["curve"][0]["heldout_loss"] != b["curve"][0]["heldout_loss"]  # the same weights, other scores

    # a finished study is reused, not retrained
    before = (out / "steps" / "dense" / "metrics.jsonl").read_text()
    assert _run(argv) == 0
    assert (out / "steps" / "dense" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([5.0, 4.0, 3.0, 2.0], None),  # still falling by more than 1%
        ([5.0, 4.0, 3.0, 2.99, 3.1], 4),  # after step 4 nothing is 1% lower (2.99 >= 0.99 * 3.0)
        ([5.0, 3.0, 3.5, 2.0, 2.0], 6),  # a rise then a fall: the later fall counts
        ([5.0, 3.0, 3.0, 3.0], 2),
    ],
)
def test_stop_step_definition(losses, expected):
    records = [{"step": 2 * i, "heldout_loss": h} for i, h in enumerate(losses)]
    assert stop_step(records) == expected


def test_bad_strategy_names_itself():
    with pytest.raises(ValueError, match=r"strategies must be distinct names of .*got \['dense', 'nope'\]"):
        _run(["study", "--out", "x", "--strategies", "dense,nope"])
