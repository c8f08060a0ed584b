"""Efficiency metrics: reference parameter/MAC counts of ResNet-50 and Swin-T, latency fields, peak memory per
measurement (in this process and in fresh processes)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from benchcore.metrics.efficiency import (count_flops, count_parameters, measure_latency, parameter_breakdown,
                                          run_in_fresh_process)

MIB = 2**20
HWM_RESETTABLE = Path("/proc/self/clear_refs").exists() and os.access("/proc/self/clear_refs", os.W_OK)
needs_hwm = pytest.mark.skipif(not HWM_RESETTABLE, reason="no writable /proc/self/clear_refs (not Linux >= 4.0)")


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


@pytest.fixture(scope="module")
def image224() -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, 224, 224),)


def test_resnet50_parameters(resnet50) -> None:
    assert count_parameters(resnet50) == 25_557_032
    assert parameter_breakdown({"fc": resnet50.fc, "layer1": resnet50.layer1}) == {"fc": 2_049_000,
                                                                                   "layer1": 215_808}


def test_trainable_only() -> None:
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    m[0].requires_grad_(False)
    assert count_parameters(m) == 15 + 8
    assert count_parameters(m, trainable_only=True) == 8


def test_resnet50_flops_fvcore_and_torch(resnet50, image224) -> None:
    resnet50.train()
    fv = count_flops(resnet50, image224, counter="fvcore")
    assert resnet50.training  # mode restored
    assert fv["counter"] == "fvcore"
    assert fv["gmac"] == pytest.approx(4.11, rel=0.01)
    assert fv["gflops"] == pytest.approx(2 * fv["gmac"])
    th = count_flops(resnet50, image224, counter="torch")
    assert th["counter"] == "torch" and th["unsupported_ops"] == {}
    assert th["gflops"] == pytest.approx(2 * fv["gmac"], rel=0.01)  # torch reports true FLOPs = 2 x MACs
    assert th["gmac"] == pytest.approx(fv["gmac"], rel=0.01)


def test_swin_tiny_macs(image224) -> None:
    import timm

    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    fv = count_flops(swin, image224[0], counter="fvcore")
    assert fv["gmac"] == pytest.approx(4.51, rel=0.02)


def test_unknown_counter() -> None:
    with pytest.raises(ValueError, match="counter"):
        count_flops(nn.Linear(2, 2), (torch.zeros(1, 2),), counter="thop")


def test_latency_fields_on_a_tiny_module() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    m.train()
    r = measure_latency(m, torch.randn(2, 3, 32, 32), warmup=2, runs=7, batch_size=2)
    assert m.training
    assert r["runs"] == 7 and r["batch_size"] == 2
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["mean_ms"] > 0
    assert r["throughput_per_s"] == pytest.approx(2 * 1000 / r["median_ms"])
    assert r["device"].startswith("cpu (")
    assert r["peak_mem_kind"] == ("cpu_peak_rss" if HWM_RESETTABLE else "cpu_process_peak_rss")
    assert r["peak_mem_mb"] > 10 and 0 <= r["peak_mem_delta_mb"] < r["peak_mem_mb"]


def test_latency_of_a_plain_function() -> None:
    calls = []
    r = measure_latency(lambda x: calls.append(x.shape), (torch.zeros(3),), warmup=1, runs=4)
    assert len(calls) == 5 and r["runs"] == 4
    with pytest.raises(ValueError, match="runs"):
        measure_latency(lambda x: x, (torch.zeros(1),), runs=0)


# ------------------------------------------------------------------------------------------------ peak memory
_LEFT_BEHIND: list[torch.Tensor] = []  # what a method leaves in its process (an imported library, a cache)


class _Large(nn.Module):
    """32 MiB of weights (Linear 2048 -> 4096) and a 128 MiB activation (8 x 2048 x 2048 floats); little compute.
    Building it also leaves 64 MiB behind in the process, as a method's libraries and caches stay after it."""

    def __init__(self) -> None:
        super().__init__()
        _LEFT_BEHIND.append(torch.ones(16 * MIB))  # 16 Mi float32 = 64 MiB, resident (written)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=16, mode="nearest")
        self.fc = nn.Linear(2048, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 3, 128, 128) -> (1, 4096)
        return self.fc(self.up(self.conv(x)).mean(dim=(1, 2)))


def _measure_plain_model(size: str) -> dict:
    """Build a small or large plain torch model in the calling process and measure it (in a fresh process this
    is the efficiency runner's per-method path: run_in_fresh_process -> build -> measure_latency)."""
    torch.manual_seed(0)
    if size == "small":  # 1.8 KiB of weights, 128 KiB activation
        return measure_latency(nn.Conv2d(3, 8, 3, padding=1), torch.rand(1, 3, 64, 64), warmup=1, runs=2)
    return measure_latency(_Large(), torch.rand(1, 3, 128, 128), warmup=1, runs=2)


@needs_hwm
def test_peak_memory_covers_only_the_calls_of_one_measurement() -> None:
    """In one process: a measurement after a memory-hungry one is not charged with the earlier peak."""
    def hungry(x: torch.Tensor) -> torch.Tensor:  # 192 MiB, freed at return
        return torch.ones(48 * MIB).sum() + x  # 48 Mi float32

    # This machine kind runs DAMON (kdamond), which can page out cold file-backed pages (the process's mapped
    # libraries) during a measurement: the RSS then drops under the reset high-water mark and can hide the 192 MiB
    # (CI once measured a delta of 0). A broken reset fails every attempt; a reclaim during one does not repeat.
    big = max((measure_latency(hungry, (torch.zeros(1),), warmup=0, runs=1) for _ in range(3)),
              key=lambda r: r["peak_mem_delta_mb"])
    small = measure_latency(lambda x: x + 1, (torch.zeros(1),), warmup=0, runs=1)
    assert big["peak_mem_delta_mb"] > 180  # the 192 MiB tensor was resident during the call
    assert small["peak_mem_delta_mb"] < 5 and small["peak_mem_mb"] < big["peak_mem_mb"] - 150


@needs_hwm
def test_peak_memory_is_per_method_in_either_order(one_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small and large model, each in a fresh process, in both orders: the same figure per model whatever ran
    before it, and the large one measures larger (by its 64 MiB left behind + 32 MiB weights + 128 MiB activation,
    less slack).

    Tolerance 8 MiB: repeated fresh-process measurements of one model agree to within ~1 MiB here (RSS is counted in
    4 KiB pages; lazily loaded library pages and allocator arenas vary a little). A small model measured in the
    process that measured the large one would read >= 64 MiB more (what the large one left behind), and with the
    old process-lifetime peak (ru_maxrss) as much as the large one.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)  # the child's thread count can only come from run_in_fresh_process
    runs = {order: {size: run_in_fresh_process(_measure_plain_model, (size,)) for size in order}
            for order in (("small", "large"), ("large", "small"))}
    peak = {order: {size: r["peak_mem_mb"] for size, r in res.items()} for order, res in runs.items()}
    print(f"peak RSS during the calls (MiB): {peak}")
    a, b = peak[("small", "large")], peak[("large", "small")]
    for size in ("small", "large"):
        assert a[size] == pytest.approx(b[size], abs=8), size
    assert a["large"] - a["small"] > 200 and b["large"] - b["small"] > 200
    for res in runs.values():
        assert res["large"]["peak_mem_delta_mb"] > 120  # the activation came on top of the resident weights
        for r in res.values():
            assert r["peak_mem_kind"] == "cpu_peak_rss" and r["device"].endswith(" 1 threads)")  # pinned as here


def test_fresh_process_errors_come_back() -> None:
    with pytest.raises(ValueError, match="invalid literal") as info:
        run_in_fresh_process(int, ("not a number",), threads=1)
    assert "raised in a fresh process" in info.value.__notes__[0] and "Traceback" in info.value.__notes__[0]
    with pytest.raises(RuntimeError, match="exited with status 3 and no result"):
        run_in_fresh_process(os._exit, (3,), threads=1)
    with pytest.raises(ValueError, match="threads"):
        run_in_fresh_process(int, ("1",), threads=0)


def test_fresh_process_timeout_kills_only_the_child() -> None:
    """A call past its timeout is killed; the fork server lives on and serves the next call in a new child."""
    from benchcore.fork_server import SERVER

    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_fresh_process(time.sleep, (60,), threads=1, timeout=1)
    assert time.monotonic() - t0 < 30
    server = SERVER._proc
    pids = {run_in_fresh_process(os.getpid, threads=1) for _ in range(2)}
    assert SERVER._proc is server and server.poll() is None  # the same server, still running
    assert len(pids) == 2 and os.getpid() not in pids and server.pid not in pids  # a new child per call


def test_fresh_process_runs_in_the_callers_current_directory(tmp_path, monkeypatch) -> None:
    run_in_fresh_process(os.getpid, threads=1)  # the server is up, started in another directory
    monkeypatch.chdir(tmp_path)
    assert run_in_fresh_process(os.getcwd, threads=1) == str(tmp_path)
