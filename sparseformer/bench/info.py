"""What the results record about the machine and the software."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_info(device: str) -> dict:
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "usable_cpus": usable or 0,
        "torch_threads": torch.get_num_threads(),
        "memory_total_mib": _memory_total_mib(),
        "device": str(dev),
        "device_name": name,
    }


def machine_line() -> str:
    """One line naming the machine a benchmark ran on, read from the run itself: CPU model, CPUs
    (usable by this process), torch threads, 1-minute load average (other work distorts timings)."""
    info = machine_info("cpu")
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"machine: {info['cpu']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
        f"torch {torch.__version__} with {info['torch_threads']} threads{load}"
    )


def versions(backend: str, device: str, dtype: torch.dtype) -> dict:
    from .. import __version__
    from ..attention import pick_backend

    out = {"python": platform.python_version(), "torch": torch.__version__, "sparseformer": __version__}
    for pkg in ("numpy", "transformers", "matplotlib", "tqdm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    probe = torch.zeros(1, 1, 1, 1, device=device, dtype=dtype)
    out["attention_backend"] = pick_backend(probe, 0.0) if backend == "auto" else backend
    return out
