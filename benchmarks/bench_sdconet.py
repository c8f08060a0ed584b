"""SDCoNet vs its serial two-stage variant (``shared_encoder=False``, the "separate encoders" ablation): speed and cost.

For each model (paper preset by default, ``--hr-size`` px HR tiles with the LR made inside the model, as in spec
Appendix A):

* training images/s: forward + backward + AdamW step on a batch of ``--batch`` (2) random tiles with
  ``--boxes-per-image`` (2) random boxes each, in phase 1 (SR branch frozen, no ``loss_sr``) and phase 2 (SR on);
* inference ms/image at batch 1 (eval predict path: no SR decoder for SDCoNet; the whole SR network for serial);
* GMAC of the predict path at batch 1 (fvcore multiply-adds, fused attention counted; ``--counter torch``);
* the serial / SDCoNet ratios of all of these.

Runs on the CPU, and on CUDA when available (``--devices``); fp32, random weights. Prints a Markdown table and
writes the rows with ``--json``. A 2-core CPU run at the paper preset takes a few minutes with ``--runs 1``
(spec Appendix A measured ~3 s / ~17 s per training step for SDCoNet / serial there).

    .venv/bin/python benchmarks/bench_sdconet.py [--runs 2 --warmup 1] [--hr-size 512] [--preset paper] \
        [--devices cpu cuda] [--no-train] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from compare.calibrate import random_targets, sdconet_train_step  # noqa: E402

VARIANTS = {"SDCoNet": "sdconet", "serial two-stage": "sdconet_separate"}


def build(method: str, preset: str, num_classes: int, scale: int) -> nn.Module:
    """The model of an experiments-sheet row (HR input, LR made inside the model)."""
    from sdconet.methods import method_overrides  # noqa: PLC0415
    from sdconet.models.build import build_model, resolve_config  # noqa: PLC0415
    from sdconet.models.config import preset as model_preset  # noqa: PLC0415

    ov = method_overrides(method, enc_layers=model_preset(preset, scale=scale).enc_layers)
    ov.update({"model.num_classes": num_classes, "model.lr.scale": scale, "model.swin.pretrained": None})
    cfg, _ = resolve_config({"model": {"preset": preset}, "train": {"epochs": 1, "batch_size": 1}}, ov)
    return build_model(cfg)


def batch(n: int, size: int, boxes: int, num_classes: int, device: str, seed: int = 0
          ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Normalised-looking random images and random xyxy boxes (HR pixels, 8..size/2 px) with labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    return images.to(device), random_targets(n, size, num_classes, device, boxes, generator=g)


def _timed(fn: Callable[[], None], device: str, warmup: int, runs: int) -> list[float]:
    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


UNFUSED = False  # set by --unfused


def train_speed(model: nn.Module, images: torch.Tensor, targets: list[dict], sr_on: bool, device: str,
                warmup: int, runs: int) -> float:
    """Median seconds of one training step (forward, backward, optimizer step) in the given routing phase."""
    from sdconet.train_config import TrainConfig, build_optimizer  # noqa: PLC0415

    model.train()
    model.set_sr_trainable(sr_on)
    # The engine's optimizer (param groups, fused AdamW unless --unfused), so the figure is what training runs.
    optim = build_optimizer(model, TrainConfig(epochs=1, batch_size=images.shape[0], lr=1e-5,
                                               fused_adamw=not UNFUSED))
    return statistics.median(_timed(sdconet_train_step(model, images, targets, optim), device, warmup, runs))


def bench(label: str, method: str, a: argparse.Namespace, device: str) -> dict[str, Any]:
    """Every figure of one model on one device."""
    from compare.efficiency_runner import count_gmac  # noqa: PLC0415
    from benchcore.metrics.efficiency import measure_latency  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415
    from benchcore.provenance import device_string  # noqa: PLC0415

    torch.manual_seed(0)
    model = build(method, a.preset, a.num_classes, a.scale)
    totals = parameter_summary(model)["totals"]
    row: dict[str, Any] = {"model": label, "method": method, "device": device, "device_name": device_string(device),
                           "params_total_m": totals["total"] / 1e6, "params_inference_m": totals["inference_path"] / 1e6}
    x1 = torch.randn(1, 3, a.hr_size, a.hr_size)
    row["gmac"] = count_gmac(model, (x1,), a.counter)["gmac"] if a.flops else None
    model.to(device)
    if a.train:
        images, targets = batch(a.batch, a.hr_size, a.boxes_per_image, a.num_classes, device)
        for phase, sr_on in ((1, False), (2, True)):
            s = train_speed(model, images, targets, sr_on, device, a.warmup, a.runs)
            row[f"train_p{phase}_s_per_step"] = s
            row[f"train_p{phase}_images_per_s"] = a.batch / s
        model.zero_grad(set_to_none=True)
    lat = measure_latency(model, x1, device, a.warmup, a.runs)
    row.update(infer_ms=lat["median_ms"], infer_p90_ms=lat["p90_ms"], peak_mem_mb=lat["peak_mem_mb"],
               peak_mem_kind=lat["peak_mem_kind"])
    del model
    gc.collect()
    return row


def _fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict[str, Any]], a: argparse.Namespace) -> str:
    """Per-device rows plus the serial / SDCoNet ratio row."""
    head = ["model", "device", "params total / inference (M)", "GMAC/img", "infer ms/img (bs1)",
            f"train img/s phase 1 (bs{a.batch})", f"train img/s phase 2 (bs{a.batch})", "peak mem MB (CPU: process RSS so far)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dev in dict.fromkeys(r["device"] for r in rows):
        pair = {r["model"]: r for r in rows if r["device"] == dev}
        for r in pair.values():
            out.append(f"| {r['model']} | {dev} | {r['params_total_m']:.3f} / {r['params_inference_m']:.3f} | "
                       f"{_fmt(r['gmac'], 3)} | {r['infer_ms']:.1f} | {_fmt(r.get('train_p1_images_per_s'), 3)} | "
                       f"{_fmt(r.get('train_p2_images_per_s'), 3)} | {r['peak_mem_mb']:.0f} |")
        s, j = pair.get("serial two-stage"), pair.get("SDCoNet")
        if s and j:
            def ratio(k: str, inverse: bool = False) -> str:
                if s.get(k) is None or j.get(k) is None:
                    return "-"
                return f"{(j[k] / s[k]) if inverse else (s[k] / j[k]):.2f}x"
            out.append(f"| **serial / SDCoNet** | {dev} | {s['params_total_m'] / j['params_total_m']:.2f}x / "
                       f"{s['params_inference_m'] / j['params_inference_m']:.2f}x | {ratio('gmac')} | "
                       f"{ratio('infer_ms')} | {ratio('train_p1_images_per_s', True)} (time) | "
                       f"{ratio('train_p2_images_per_s', True)} (time) | "
                       f"{ratio('peak_mem_mb') if dev.startswith('cuda') else '- (process RSS)'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hr-size", type=int, default=512)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=2, help="training batch (default 2)")
    p.add_argument("--boxes-per-image", type=int, default=2, help="GT boxes per training image (sets DN groups)")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--runs", type=int, default=2, help="timed repetitions per measurement (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--counter", choices=["fvcore", "torch"], default="fvcore")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the GMAC count")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the training-step timings")
    p.add_argument("--unfused", action="store_true", help="torch's default AdamW loop (the official code's)")
    p.add_argument("--only", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    global UNFUSED
    UNFUSED = a.unfused
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows, t0 = [], time.time()
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipping {dev}: CUDA not available", file=sys.stderr)
            continue
        for label in a.only:
            rows.append(bench(label, VARIANTS[label], a, dev))
            print(f"  {label} on {dev}: {rows[-1]['infer_ms']:.0f} ms/img inference", file=sys.stderr)
    names = "; ".join(dict.fromkeys(r["device_name"] for r in rows))
    print(f"SDCoNet vs serial two-stage, preset {a.preset}, HR {a.hr_size} (LR {a.hr_size // a.scale} made in the model), "
          f"fp32, random weights, {a.boxes_per_image} boxes/img; runs={a.runs} warmup={a.warmup}; GMAC: {a.counter}; "
          f"{names}; total {time.time() - t0:.0f} s\n")
    print(markdown(rows, a))
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
