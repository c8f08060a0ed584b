"""GPU throughput and latency of SDCoNet vs the serial two-stage variant: fp32 vs AMP (fp16, bf16).

Training: images/s of full steps (forward, backward, clip 0.1, AdamW step) at the paper preset, with the SR
branch frozen (routing phase 1) and trained (phase 2). Inference: median / p90 ms per batch (predict path,
SR decoder skipped) at batch 1 and a larger batch, and peak allocated memory. Random weights, random boxes
(8 per image, so the denoising groups are realistic). Prints one JSON line per measurement and writes them
all with ``--json``. Runs on CPU too (``--device cpu --preset tiny``) so the script itself is testable.

    python benchmarks/gpu_checks.py --device cuda --json gpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sdconet.models.build import build_model  # noqa: E402
from sdconet.models.config import preset  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _targets(batch: int, hr: int, n: int, gen: torch.Generator, device: torch.device) -> list[dict]:
    out = []
    for _ in range(batch):
        xy = torch.rand(n, 2, generator=gen) * (hr - 48)
        wh = 8 + torch.rand(n, 2, generator=gen) * 40
        out.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                    "labels": torch.randint(0, 10, (n,), generator=gen).to(device)})
    return out


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_speed(model: torch.nn.Module, device: torch.device, batch: int, hr: int, dtype: str, sr: bool,
                steps: int, warmup: int) -> dict[str, Any]:
    model.train()
    model.set_sr_trainable(sr)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, hr, hr, generator=gen).to(device)
    tg = _targets(batch, hr, 8, gen, device)
    times, finite = [], True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            losses = model(x, tg)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        finite &= bool(torch.isfinite(loss))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"kind": "train", "batch": batch, "dtype": dtype, "sr_on": sr, "step_s": med,
            "images_per_s": batch / med, "finite": finite, "loss_sr": "loss_sr" in losses,
            "peak_mem_mb": _peak_mb(device)}


@torch.no_grad()
def infer_latency(model: torch.nn.Module, device: torch.device, batch: int, hr: int, dtype: str,
                  runs: int, warmup: int) -> dict[str, Any]:
    model.eval()
    x = torch.randn(batch, 3, hr, hr, generator=torch.Generator().manual_seed(1)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + runs):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            dets = model(x)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = statistics.median(times)
    return {"kind": "infer", "batch": batch, "dtype": dtype, "median_ms": 1e3 * med,
            "p90_ms": 1e3 * times[min(len(times) - 1, int(0.9 * len(times)))], "ms_per_image": 1e3 * med / batch,
            "images_per_s": batch / med, "detections_per_image": int(dets[0]["boxes"].shape[0]),
            "peak_mem_mb": _peak_mb(device)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--hr-size", type=int, default=512)
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--infer-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "preset": a.preset, "hr_size": a.hr_size, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    print(json.dumps(info), flush=True)
    for name, shared in (("SDCoNet", True), ("serial two-stage", False)):
        torch.manual_seed(0)
        model = build_model(preset(a.preset, scale=2, num_classes=10, shared_encoder=shared)).to(device)
        for dtype in a.dtypes:
            for sr in (False, True):
                try:
                    row = train_speed(model, device, a.train_batch, a.hr_size, dtype, sr, a.steps, a.warmup)
                except Exception as exc:  # noqa: BLE001  (report and go on: one failure must not hide the rest)
                    row = {"kind": "train", "dtype": dtype, "sr_on": sr, "error": repr(exc)[:300]}
                rows.append({"model": name, **row})
                print(json.dumps(rows[-1]), flush=True)
            for batch in (1, a.infer_batch):
                try:
                    row = infer_latency(model, device, batch, a.hr_size, dtype, a.runs, a.warmup)
                except Exception as exc:  # noqa: BLE001
                    row = {"kind": "infer", "dtype": dtype, "batch": batch, "error": repr(exc)[:300]}
                rows.append({"model": name, **row})
                print(json.dumps(rows[-1]), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if a.json:
        a.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
