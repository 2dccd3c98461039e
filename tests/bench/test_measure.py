"""The measuring helpers on known work: a call that holds a known amount of memory, counted calls."""

from __future__ import annotations

import pytest
import torch

from sparseformer.bench import measure


def test_peak_memory_sees_a_known_allocation():
    cpu = torch.device("cpu")
    if measure.memory_method(cpu) is None:
        pytest.skip("no /proc/self/clear_refs here")

    def hold_64_mib():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page touched
        return float(x[::1024].sum())

    value, peak = measure.peak_memory(hold_64_mib, cpu)
    assert value == 64 * 2**20 // 4 / 1024
    assert 60 <= peak <= 200  # MiB: the tensor, plus at most some allocator slack


def test_time_calls_counts_calls():
    calls = []
    t = measure.time_calls(lambda: calls.append(1), repeats=3, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 5 and len(t.times_ms) == 3
    assert t.median_ms >= 0 and t.spread_ms >= 0
    calls.clear()
    t = measure.time_calls(lambda: calls.append(1), repeats=2, warmup=0, device=torch.device("cpu"), min_time_s=60)
    assert len(t.times_ms) == 20  # capped at 10x repeats
    with pytest.raises(ValueError, match="repeats"):
        measure.time_calls(lambda: None, repeats=0, warmup=0, device=torch.device("cpu"))


def test_token_cosine_matches_a_direct_computation():
    a, b = torch.randn(2, 3, 17, 8, dtype=torch.float64)
    want = sum(float(a[i, j] @ b[i, j] / (a[i, j].norm() * b[i, j].norm())) for i in range(3) for j in range(17)) / 51
    assert measure.token_cosine(a, b) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        measure.token_cosine(a, b[:, :5])
