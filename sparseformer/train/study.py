"""The study: dense attention and each sparse strategy trained from scratch on the same data with
the same seeds, at equal steps and at equal wall-clock, on this machine.

* *Equal steps*: every strategy trains ``base.steps`` steps (its run in ``OUT/steps/<name>``).
* *Equal wall-clock*: a budget ``T`` seconds (``budget_seconds``, default: the seconds dense took
  in the equal-steps arm). Each strategy trains ``max(1, floor(T / t))`` steps, ``t`` its measured
  seconds per step in the equal-steps arm, with its schedule stretched to those steps (run in
  ``OUT/time/<name>``; the run of the same step count in the equal-steps arm is reused). The
  seconds it really took are reported beside ``T``.
* *Density* of a strategy: attending (query, key) pairs over all ``L * L`` pairs of its layout at
  the training context (all heads); *of causal*: the same pairs over the ``L (L + 1) / 2`` causal
  pairs that dense attention computes (dense: 0.5 and 1).
* *Generalisation gap*: ``train_eval_loss - heldout_loss`` at the last evaluation, both measured
  in eval mode on fixed contexts of each split (:mod:`.data`); negative when the model does
  better on text it trained on.
* *Stops falling at*: with held-out losses ``h_0, ..., h_K`` at evaluation steps ``s_0 = 0 < s_1 <
  ... < s_K``, the first ``s_k`` (``1 <= k < K``) such that no later evaluation is more than 1%
  lower: ``min(h_{k+1}, ..., h_K) >= 0.99 * h_k``; None when there is no such ``k`` (the loss
  was still falling by more than 1% at the end).

Every figure comes from the runs' ``metrics.jsonl`` files; none is estimated.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text
from . import distributed, metrics
from .config import TrainConfig
from .loop import METRICS, train
from .strategies import DENSE, NAMES, Geometry, build, code

STOP_TOLERANCE = 0.01


@dataclass(frozen=True)
class StudyConfig:
    """``base`` gives everything but the pattern (its ``pattern`` is ignored); ``geometry`` the
    sizes of the strategies (its block size must be ``base.block_size``)."""

    base: TrainConfig
    geometry: Geometry = Geometry()
    strategies: tuple[str, ...] = NAMES
    equal_time: bool = True
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        names = tuple(self.strategies)
        bad = [n for n in names if n not in NAMES]
        if bad or not names or len(set(names)) != len(names):
            raise ValueError(f"strategies must be distinct names of {list(NAMES)}, got {list(names)}")
        object.__setattr__(self, "strategies", names)
        if self.geometry.block_size != self.base.block_size:
            raise ValueError(
                f"geometry.block_size ({self.geometry.block_size}) must equal base.block_size ({self.base.block_size})"
            )
        if self.equal_time and self.budget_seconds is None and DENSE not in names:
            raise ValueError("the equal wall-clock arm needs budget_seconds, or 'dense' among the strategies")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ValueError(f"budget_seconds must be > 0, got {self.budget_seconds!r}")


def stop_step(records: list[dict]) -> int | None:
    """Where the held-out loss stops falling (module doc) in a run's metrics records."""
    h = [r["heldout_loss"] for r in records]
    for k in range(1, len(h) - 1):
        if min(h[k + 1 :]) >= (1 - STOP_TOLERANCE) * h[k]:
            return records[k]["step"]
    return None


def density(cfg: TrainConfig) -> tuple[float, float]:
    """``(pairs / L**2, pairs / (L (L + 1) / 2))`` of ``cfg``'s attention at its context."""
    n = cfg.context
    causal = n * (n + 1) / 2
    if cfg.pattern is None:
        return causal / n**2, 1.0
    lay = cfg.pattern.compile(q_len=n, num_heads=cfg.n_heads, block_size=cfg.block_size, causal=True)
    return lay.density, lay.pair_count / (cfg.n_heads * causal)


def summary(name: str, geometry: Geometry, cfg: TrainConfig, records: list[dict]) -> dict:
    """What the report shows of one run."""
    last = records[-1]
    dens, of_causal = density(cfg)
    return {
        "strategy": name,
        "code": code(name, geometry),
        "density": dens,
        "of_causal": of_causal,
        "steps": last["step"],
        "seconds": last["seconds"],
        "tokens_per_s": last["tokens"] / last["seconds"] if last["seconds"] else None,
        "heldout_loss": last["heldout_loss"],
        "heldout_bpb": last["heldout_bpb"],
        "train_eval_loss": last["train_eval_loss"],
        "gap": last["train_eval_loss"] - last["heldout_loss"],
        "stop_step": stop_step(records),
        "curve": [{k: r[k] for k in ("step", "seconds", "heldout_loss", "heldout_bpb")} for r in records],
    }


def run(study: StudyConfig, out: str, *, command: str, progress: bool = True, device: str = "auto") -> Path:
    """Train every run of ``study`` into ``out`` (finished runs there are reused, interrupted ones
    resumed) on ``device`` (as :func:`distributed.init`), then write ``report.md``, ``study.json``
    and the plots; returns the report's path."""
    from ..bench.info import machine_info
    from .report import write_report

    out = Path(out)
    world = distributed.init(device)
    g, base = study.geometry, study.base
    cfgs = {n: dataclasses.replace(base, pattern=build(n, g)) for n in study.strategies}

    def fit(arm: str, name: str, cfg: TrainConfig) -> dict:
        if world.is_main:
            print(f"[{arm}] {name}: {cfg.steps} steps", flush=True)
        train(cfg, out / arm / name, resume=True, progress=progress, device=device)
        return summary(name, g, cfg, metrics.read(out / arm / name / METRICS)) if world.is_main else {}

    steps_arm = {n: fit("steps", n, cfg) for n, cfg in cfgs.items()}
    time_arm, budget = {}, study.budget_seconds
    if study.equal_time:
        if budget is None:
            budget = distributed.from_main(steps_arm[DENSE].get("seconds", 0.0), world)
        for n, cfg in cfgs.items():
            per_step = distributed.from_main(steps_arm[n].get("seconds", 0.0) / base.steps, world)
            if not per_step > 0:
                raise ValueError(f"run {n!r} in {str(out)!r} recorded no training time: delete it to measure it again")
            steps = max(1, math.floor(budget / per_step))
            time_arm[n] = steps_arm[n] if steps == base.steps else fit("time", n, dataclasses.replace(cfg, steps=steps))
    path = out / "report.md"
    if world.is_main:
        result = {
            "command": command,
            "machine": machine_info(str(world.device)),
            "world_size": world.world_size,
            "config": base.to_json() | {"pattern": None},
            "geometry": dataclasses.asdict(g),
            "budget_seconds": budget,
            "steps_arm": steps_arm,
            "time_arm": time_arm,
        }
        write_text(str(out / "study.json"), json.dumps(result, indent=2) + "\n")
        write_report(result, str(out))
    distributed.barrier(world)
    return path
