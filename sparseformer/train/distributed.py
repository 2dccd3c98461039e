"""One process or ``torchrun --nproc-per-node N``: the same training code runs under both.

:func:`init` reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): with ``WORLD_SIZE > 1`` it joins the process group (``nccl``
on CUDA, each rank on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU), otherwise it is one process.
The device is CUDA when available unless the caller asks for ``cpu`` (``--device cpu``: several
CPU processes on a machine with fewer GPUs than processes). Only rank 0 writes files or draws a
progress bar (:attr:`World.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


DEVICES = ("auto", "cpu", "cuda")


def init(device: str = "auto") -> World:
    """This process's place (module doc); joins the process group once. ``device``: ``auto``
    (CUDA when available, else the CPU), ``cpu`` or ``cuda`` (ValueError without a CUDA device)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World(0, 1, torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    place = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(place)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), place)


def wrap(module: nn.Module, world: World) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (gradients averaged over ranks) when distributed."""
    if not world.distributed:
        return module
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_sum(values: list[float], world: World) -> list[float]:
    """The element-wise sum of ``values`` over ranks (float64), ``values`` itself in one process."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def close(world: World) -> None:
    """Leave the process group (call once, at the end of the process's work)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def from_main(value: float, world: World) -> float:
    """Rank 0's ``value`` on every rank (what only rank 0 read from a file)."""
    (out,) = all_sum([value if world.is_main else 0.0], world)
    return out
