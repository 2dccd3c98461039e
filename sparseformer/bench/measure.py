"""Measurements of one configuration: latency, peak memory, output cosine.

* Latency: ``warmup`` untimed calls, then at least ``repeats`` timed calls, more for fast calls
  (see :func:`time_calls`); ``time.perf_counter``, with ``torch.cuda.synchronize`` on CUDA. Every time is kept; reports give the median and the
  spread ``max - min``, in milliseconds.
* Peak memory of one call (the first warm-up call, after the layout is compiled). On CPU: the
  rise of the process's resident set, ``VmHWM - VmRSS`` in MiB, read after returning the free
  heap to the system (glibc's ``malloc_trim(0)``, so memory freed by earlier calls is not
  silently reused) and writing ``5`` to ``/proc/self/clear_refs`` (which resets ``VmHWM`` to the
  current ``VmRSS``). Where that file is missing (not Linux, or no permission) memory is
  ``None``. On CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the
  call. Either way: what the call needs at its peak beyond what the process already holds
  (weights, inputs).
* Quality: the mean over tokens of the cosine similarity of two outputs ``[B, L, E]``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


@dataclass(frozen=True)
class Timing:
    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def spread_ms(self) -> float:
        return max(self.times_ms) - min(self.times_ms)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from {_STATUS}")


def _malloc_trim() -> bool:
    """Return free heap memory to the system (glibc only); whether it could."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def memory_method(device: torch.device) -> str | None:
    """How peak memory is measured on ``device`` here, or None when it cannot be."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated minus allocated before the call"
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        _status_kib("VmHWM")
    except OSError:
        return None
    trim = "malloc_trim(0), then " if _malloc_trim() else ""
    return f"VmHWM - VmRSS after {trim}writing 5 to /proc/self/clear_refs"


def _mem_start(device: torch.device) -> int | None:
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    _malloc_trim()
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _mem_stop(device: torch.device, before: int | None) -> float | None:
    if before is None:
        return None
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024
    return max(peak - before, 0) / 2**20


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[object, float | None]:
    """``(fn(), MiB the call needed at its peak beyond what the process held)``; None if unmeasurable."""
    before = _mem_start(device)
    out = fn()
    _sync(device)
    return out, _mem_stop(device, before)


def time_calls(
    fn: Callable[[], object], repeats: int, warmup: int, device: torch.device, min_time_s: float = 0.0
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then timed: ``repeats`` times, and more (up to
    ``10 * repeats``) while the timed calls total less than ``min_time_s``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_time_s * 1e3 and len(times) < 10 * repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing(tuple(times))


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over tokens of ``cos(a[b, l], b[b, l])`` for outputs ``[B, L, E]``, in float64."""
    if a.shape != b.shape:
        raise ValueError(f"outputs must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean())
