"""Speed of the serial baselines' two stages: SR inference ms/tile and detector images/s.

* SR: EDSR-baseline, RRDBNet (23 blocks) and SwinIR classical at their paper presets, one LR tile of
  ``--lr-size`` px (default 256) -> x``--scale`` (512), batch 1, fp32.
* Detectors: YOLOv8n / YOLOv8s (ultralytics DetectionModel from yaml, Conv+BN fused, + NMS at the mAP settings)
  and Faster R-CNN R50-FPN (torchvision, eval, min = max size = tile) on ``--det-size`` px tiles (default 512),
  at batch 1 and ``--batch``; images/s = batch / median time. Pre-processing (file decoding, letterbox) excluded.

Weights are random (the timings do not depend on them). Runs on the CPU, and on CUDA when available
(``--devices`` to choose). Prints a Markdown table; ``--json`` also writes the rows.

    .venv/bin/python benchmarks/bench_baselines.py [--runs 3 --warmup 1] [--lr-size 256 --det-size 512] \
        [--sr edsr rrdb swinir] [--detectors yolov8n yolov8s frcnn] [--devices cpu cuda] [--flops] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchcore.metrics.efficiency import count_parameters, measure_latency  # noqa: E402


def default_devices() -> list[str]:
    """``cpu`` plus ``cuda`` when a GPU is visible."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def bench_sr(name: str, lr_size: int, scale: int, preset: str, device: str, warmup: int, runs: int,
             flops: bool) -> dict[str, Any]:
    """One SR network on one LR tile (batch 1)."""
    from baselines.sr_models import build_sr_model  # noqa: PLC0415

    model = build_sr_model(name, scale, preset).eval()
    x = torch.rand(1, 3, lr_size, lr_size)
    row: dict[str, Any] = {"component": name, "stage": "SR", "input": f"{lr_size}->{lr_size * scale}",
                           "device": device, "batch": 1, "params_m": count_parameters(model) / 1e6}
    if flops:
        from compare.efficiency_runner import count_gmac  # noqa: PLC0415

        row["gmac"] = count_gmac(model, (x,))["gmac"]
    lat = measure_latency(model, x, device, warmup, runs)
    row.update(median_ms=lat["median_ms"], p90_ms=lat["p90_ms"], ms_per_image=lat["median_ms"],
               images_per_s=lat["throughput_per_s"], device_name=lat["device"])
    return row


def bench_detector(name: str, size: int, batch: int, num_classes: int, preset: str, device: str, warmup: int,
                   runs: int, flops: bool) -> list[dict[str, Any]]:
    """One detector at batch 1 and ``batch`` (images/s)."""
    from compare.efficiency_runner import build_detector, count_gmac  # noqa: PLC0415

    fwd, flop_mod, n_params, _ = build_detector(name, num_classes, size, preset)
    gmac = count_gmac(flop_mod, (torch.rand(1, 3, size, size),))["gmac"] if flops else None
    rows = []
    for b in sorted({1, batch}):
        lat = measure_latency(fwd, torch.rand(b, 3, size, size), device, warmup, runs, batch_size=b)
        rows.append({"component": name, "stage": "detector", "input": str(size), "device": device, "batch": b,
                     "params_m": n_params / 1e6, "gmac": gmac, "median_ms": lat["median_ms"], "p90_ms": lat["p90_ms"],
                     "ms_per_image": lat["median_ms"] / b, "images_per_s": lat["throughput_per_s"],
                     "device_name": lat["device"]})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table."""
    head = ["component", "stage", "input px", "device", "batch", "params (M)", "GMAC/img", "median ms/call",
            "p90 ms", "ms/image", "images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        gmac = f"{r['gmac']:.2f}" if r.get("gmac") is not None else "-"
        lines.append(f"| {r['component']} | {r['stage']} | {r['input']} | {r['device']} | {r['batch']} | "
                     f"{r['params_m']:.2f} | {gmac} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{r['ms_per_image']:.1f} | {r['images_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr-size", type=int, default=256, help="LR tile side for SR (default 256 -> 512 at x2)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--det-size", type=int, default=512, help="detector input side (default 512)")
    p.add_argument("--batch", type=int, default=4, help="detector batch for images/s (default 4)")
    p.add_argument("--num-classes", type=int, default=10, help="detector classes (NWPU VHR-10: 10)")
    p.add_argument("--sr", nargs="*", default=["edsr", "rrdb", "swinir"], choices=["edsr", "rrdb", "swinir"])
    p.add_argument("--detectors", nargs="*", default=["yolov8n", "yolov8s", "frcnn"],
                   choices=["yolov8n", "yolov8s", "frcnn"])
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--flops", action="store_true", help="also count GMAC (fvcore, batch 1; adds tracing time)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.devices or default_devices()
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipping {dev}: CUDA not available", file=sys.stderr)
            continue
        for name in a.sr:
            rows.append(bench_sr(name, a.lr_size, a.scale, a.preset, dev, a.warmup, a.runs, a.flops))
            print(f"  {name} on {dev}: {rows[-1]['median_ms']:.1f} ms/tile", file=sys.stderr)
            gc.collect()
        for name in a.detectors:
            rows += bench_detector(name, a.det_size, a.batch, a.num_classes, a.preset, dev, a.warmup, a.runs, a.flops)
            print(f"  {name} on {dev}: {rows[-1]['images_per_s']:.2f} images/s", file=sys.stderr)
            gc.collect()
    devs = sorted({r["device_name"] for r in rows})
    print(f"Serial baselines, preset {a.preset}, fp32, random weights; runs={a.runs} warmup={a.warmup}; "
          f"torch {torch.__version__}; {'; '.join(devs)}; total {time.time() - t0:.0f} s\n")
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
