"""compare.efficiency_runner: one efficiency JSON per method id (tiny presets, 64 px HR tiles, 1 timed run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compare.efficiency_runner import (count_gmac, main, measure_method, measure_method_in_fresh_process,
                                      write_efficiency)
from compare.report.collect import efficiency_row

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")
SHEET = Path(__file__).resolve().parents[1] / "config" / "experiments.tsv"
HR = 64
KW = dict(num_classes=4, hr_size=HR, scale=2, preset="tiny", warmup=0, runs=1, batch_sizes=(1, 2))


def _assembly_available() -> str | None:
    """Why the SDCoNet assembly cannot be used (None when it can)."""
    try:
        from sdconet.methods import method_overrides  # noqa: F401
        from sdconet.models.build import build_model, resolve_config  # noqa: F401
        from sdconet.summary import parameter_summary  # noqa: F401
    except ImportError as exc:
        return f"SDCoNet assembly not available yet ({exc})"
    return None


needs_sdconet = pytest.mark.skipif(_assembly_available() is not None, reason=str(_assembly_available()))


def _check_latency(res: dict, batch: int = 2) -> None:
    assert res["latency"]["bs1"]["median_ms"] > 0 and res["latency"]["bs1"]["p90_ms"] > 0
    bsn = res["latency"]["bsN"]
    assert bsn["batch_size"] == batch and bsn["median_ms"] > 0 and bsn["throughput_per_s"] > 0
    assert res["peak_mem_mb"] > 0 and res["device"].startswith("cpu")
    assert res["peak_mem_mb"] == max(res["latency"][b]["peak_mem_mb"] for b in ("bs1", "bsN"))


def test_bicubic_then_frcnn_counts_interpolation_as_zero(one_thread) -> None:
    """Through the workflow's path: measured in a fresh process of its own, pinned to this process's threads."""
    res = measure_method_in_fresh_process("frcnn_bicubic", SHEET, **KW)
    assert res["peak_mem_process"] == "own" and res["device"].endswith(" 1 threads)")
    assert res["input_size"] == [HR // 2, HR // 2] and res["kind"] == "serial"
    p = res["params"]
    assert p["components"]["sr"] == 0 and p["total"] == p["inference"] == p["components"]["detector"] > 0
    assert p["training_only"] == 0
    assert res["flops"]["by_stage"]["sr_bicubic"] == 0.0 and res["flops"]["gmac"] > 0
    assert res["flops"]["counter"] == "fvcore" and res["flops"]["unsupported_ops"]  # NMS, RoIAlign, ...
    assert any("bicubic interpolation: 0 parameters" in n for n in res["notes"])
    _check_latency(res)


def test_edsr_then_yolo_sums_both_networks() -> None:
    res = measure_method("yolov8n_edsr", SHEET, **KW)
    p, f = res["params"], res["flops"]["by_stage"]
    assert p["components"]["sr"] > 0 and p["components"]["detector"] > 0
    assert p["total"] == p["inference"] == p["components"]["sr"] + p["components"]["detector"]
    assert f["sr_edsr"] > 0 and f["detector_yolov8n"] > 0
    assert res["flops"]["gmac"] == pytest.approx(f["sr_edsr"] + f["detector_yolov8n"])
    assert res["input_size"] == [HR // 2, HR // 2]
    _check_latency(res)


def test_cli_writes_a_file_the_report_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "efficiency" / "frcnn_hr.json"
    rc = main(["--method", "frcnn_hr", "--experiments", str(SHEET), "--num-classes", "4", "--hr-size", str(HR),
               "--scale", "2", "--preset", "tiny", "--warmup", "0", "--runs", "1", "--batch-sizes", "1", "2", "--out", str(out)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["gmac"] > 0
    row = efficiency_row(out, tmp_path)
    assert (row["method"], row["input_h"], row["input_w"]) == ("frcnn_hr", HR, HR)
    assert row["gmac"] > 0 and row["latency_ms"] > 0 and row["batch_size"] == 2 and row["flops_counter"] == "fvcore"
    assert row["params_total"] == row["params_inference"] and row["params_training_only"] == 0
    doc = json.loads(out.read_text())
    assert doc["peak_mem_process"] == "shared"  # main() called inside this test process, not `python -m`
    with pytest.raises(ValueError, match="file name must be the method id"):
        write_efficiency(tmp_path / "other.json", doc)
    assert main(["--method", "no_such_method", "--experiments", str(SHEET), "--num-classes", "4", "--scale", "2",
                 "--out", str(tmp_path / "no_such_method.json")]) == 2
    assert "unknown method id 'no_such_method'" in capsys.readouterr().err


def test_fused_attention_is_counted_by_both_counters() -> None:
    class Attn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(x, x, x)

    x = torch.rand(1, 2, 16, 8)  # (B, heads, tokens, dim): QK^T + AV = 2 * 16 * 16 * (8 + 8) MACs
    for counter in ("fvcore", "torch"):
        assert count_gmac(Attn(), (x,), counter)["gmac"] * 1e9 == pytest.approx(2 * 16 * 16 * 16)


@needs_sdconet
def test_sdconet_sr_branch_is_training_only_and_serial_variant_costs_more() -> None:
    joint = measure_method("sdconet", SHEET, **KW)
    p = joint["params"]
    assert p["training_only"] > 0 and p["inference"] < p["total"]
    assert p["inference"] + p["training_only"] == p["total"]
    assert p["components"]["sr_decoder"] > 0 and joint["input_size"] == [HR // 2, HR // 2]
    assert joint["flops"]["gmac"] > 0 and joint["kind"] == "sdconet"
    _check_latency(joint)
    serial = measure_method("sdconet_separate", SHEET, **KW)
    assert serial["params"]["training_only"] == serial["params"]["unused"] == 0  # the SR network runs at test time
    assert serial["params"]["total"] > p["total"] and serial["flops"]["gmac"] > 2 * joint["flops"]["gmac"]


@needs_sdconet
def test_counters_agree_on_sdconet() -> None:
    from compare.efficiency_runner import build_method

    _, mm = build_method("sdconet", SHEET, num_classes=4, hr_size=HR, scale=2, preset="tiny")
    x = torch.rand(1, 3, HR // 2, HR // 2)
    flags = [p.requires_grad for p in mm.pipeline.parameters()]
    assert any(flags)
    fv, th = count_gmac(mm.pipeline, (x,), "fvcore")["gmac"], count_gmac(mm.pipeline, (x,), "torch")["gmac"]
    assert th > 0 and abs(fv - th) / th < 0.1
    assert [p.requires_grad for p in mm.pipeline.parameters()] == flags  # restored after the torch counter
