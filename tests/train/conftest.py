"""A tiny training configuration: every test run takes seconds on two shared cores."""

from __future__ import annotations

import dataclasses

import pytest

from sparseformer.train import Geometry, TrainConfig
from sparseformer.train.strategies import build

TINY_GEOMETRY = Geometry(block_size=16, window_blocks=1, random_blocks=2, stride=4)
# context 128 = 8 blocks of 16: the window leaves blocks for the random and strided parts
TINY = TrainConfig(
    pattern=build("bigbird", TINY_GEOMETRY),
    context=128,
    d_model=32,
    n_layers=1,
    n_heads=2,
    block_size=16,
    batch_size=4,
    steps=6,
    lr=3e-3,
    warmup=2,
    eval_every=2,
    eval_contexts=4,
    checkpoint_every=3,
)
# the same run on the command line (`python -m sparseformer.cli train ...`)
TINY_ARGS = [
    "--pattern", "bigbird", "--block-size", "16", "--window-blocks", "1", "--random-blocks", "2", "--stride", "4",
    "--context", "128", "--d-model", "32", "--layers", "1", "--heads", "2", "--batch-size", "4", "--steps", "6",
    "--lr", "3e-3", "--warmup", "2", "--eval-every", "2", "--eval-contexts", "4", "--checkpoint-every", "3",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """The uninterrupted one-process run of ``TINY`` (its directory)."""
    from sparseformer.train import train

    out = tmp_path_factory.mktemp("reference_run")
    train(TINY, out, progress=False)
    return out


def replace(**changes) -> TrainConfig:
    return dataclasses.replace(TINY, **changes)
