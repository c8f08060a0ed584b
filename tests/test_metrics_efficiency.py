"""Efficiency metrics: reference parameter/MAC counts of ResNet-50 and Swin-T, latency fields."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchcore.metrics.efficiency import count_flops, count_parameters, measure_latency, parameter_breakdown


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
    assert r["peak_mem_mb"] > 10 and r["peak_mem_kind"] == "cpu_process_peak_rss" and r["peak_mem_delta_mb"] >= 0


def test_latency_of_a_plain_function() -> None:
    calls = []
    r = measure_latency(lambda x: calls.append(x.shape), (torch.zeros(3),), warmup=1, runs=4)
    assert len(calls) == 5 and r["runs"] == 4
    with pytest.raises(ValueError, match="runs"):
        measure_latency(lambda x: x, (torch.zeros(1),), runs=0)
