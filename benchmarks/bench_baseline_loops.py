"""Training throughput of the serial baselines' own loops (``train_sr``, ``train_frcnn``), the way the workflow
runs them, with the losses read from the device every step (``--log-every 1``, what the loops did before
``PendingLosses``: a host synchronisation per step) and once per log line (their defaults).

Synthetic data, written to a temporary folder: smooth random RGB tiles (SR pairs, bicubic LR) and COCO tiles
with random boxes. Weights start from scratch (throughput does not depend on them). images/s is measured from
the training log's ``elapsed_s`` between the first log line at or after ``--warmup`` steps and the last one, so
start-up, first-step allocation and cuDNN's first calls are left out. Prints one JSON line per run and a table.

    .venv/bin/python benchmarks/bench_baseline_loops.py --device cuda [--sr edsr --sr-iters 60 --sr-batch 16]
        [--frcnn-steps 40 --frcnn-batch 4 --tile 512] [--log-every 1 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _smooth(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random RGB tile (bicubic upsampling of 8x8 noise)."""
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)


def make_sr_pairs(root: Path, n: int, size: int, scale: int) -> Path:
    """``root/train/{HR,LR}/t<i>.png``: ``n`` HR tiles of ``size`` px and their bicubic x``scale`` copies."""
    rng = np.random.default_rng(0)
    for sub in ("HR", "LR"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hr = _smooth(rng, size)
        hr.save(root / "train" / "HR" / f"t{i}.png")
        hr.resize((size // scale, size // scale), Image.BICUBIC).save(root / "train" / "LR" / f"t{i}.png")
    return root


def make_coco_tiles(root: Path, n: int, size: int, num_classes: int, boxes: int) -> Path:
    """``root/images/*.png`` and ``root/annotations.json``: ``n`` tiles with ``boxes`` random boxes each."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {"images": [], "annotations": [],
                            "categories": [{"id": c + 1, "name": f"c{c + 1}"} for c in range(num_classes)]}
    for i in range(n):
        _smooth(rng, size).save(root / "images" / f"t{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"images/t{i}.png", "width": size, "height": size})
        for _ in range(boxes):
            w, h = rng.integers(8, size // 4, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "iscrowd": 0,
                                        "category_id": int(rng.integers(1, num_classes + 1)),
                                        "bbox": [int(x), int(y), int(w), int(h)], "area": int(w * h)})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root / "annotations.json"


def images_per_s(log: Path, step_key: str, batch: int, warmup: int) -> float:
    """Training images/s between the first log line at or after ``warmup`` steps and the last line."""
    rows = [r for r in map(json.loads, log.read_text().splitlines()) if "elapsed_s" in r]
    first = next(r for r in rows if r[step_key] >= warmup)
    last = rows[-1]
    if last[step_key] <= first[step_key]:
        raise ValueError(f"{log}: no log line after step {first[step_key]}; run more steps or log more often")
    return (last[step_key] - first[step_key]) * batch / (last["elapsed_s"] - first["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="paper", help="model preset of both baselines (tiny for a smoke test)")
    p.add_argument("--sr", nargs="*", default=["edsr"], help="SR models (edsr rrdb swinir); none to skip")
    p.add_argument("--sr-iters", type=int, default=60)
    p.add_argument("--sr-batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96, help="HR patch side")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--frcnn-steps", type=int, default=40, help="Faster R-CNN steps (one epoch); 0 to skip")
    p.add_argument("--frcnn-batch", type=int, default=4)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--log-every", type=int, nargs="+", default=[1, 10])
    p.add_argument("--warmup", type=int, default=10, help="steps left out of images/s")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    from baselines.frcnn import train_frcnn  # noqa: PLC0415
    from baselines.sr_train import train_sr  # noqa: PLC0415
    from benchcore.provenance import device_string  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if a.sr:
            pairs = make_sr_pairs(t / "pairs", 8, max(2 * a.patch, 64), a.scale)
        if a.frcnn_steps:
            ann = make_coco_tiles(t / "coco", a.frcnn_steps * a.frcnn_batch, a.tile, 10, 4)
        for every in a.log_every:
            for name in a.sr:
                out = t / f"sr_{name}_{every}"
                train_sr(name, a.scale, pairs, out, iters=a.sr_iters, batch_size=a.sr_batch, patch_size=a.patch,
                         device=a.device, preset=a.preset, log_every=every, checkpoint_every=10 ** 9)
                rows.append({"loop": f"sr {name}", "log_every": every, "batch": a.sr_batch,
                             "images_per_s": images_per_s(out / "log.jsonl", "iter", a.sr_batch, a.warmup)})
                print(json.dumps(rows[-1]), flush=True)
            if a.frcnn_steps:
                out = t / f"frcnn_{every}"
                train_frcnn(ann, t / "coco", out, epochs=1, batch_size=a.frcnn_batch, device=a.device,
                            preset=a.preset, warmup_iters=0, log_every=every)
                rows.append({"loop": "frcnn", "log_every": every, "batch": a.frcnn_batch,
                             "images_per_s": images_per_s(out / "log.jsonl", "step", a.frcnn_batch, a.warmup)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nbaseline training loops on {device_string(a.device)}, preset {a.preset}\n")
    print("| loop | batch | " + " | ".join(f"images/s, log_every {e}" for e in a.log_every) + " |")
    print("|---|---|" + "---|" * len(a.log_every))
    for loop in dict.fromkeys(r["loop"] for r in rows):
        rs = {r["log_every"]: r for r in rows if r["loop"] == loop}
        first = next(iter(rs.values()))
        print(f"| {loop} | {first['batch']} | " + " | ".join(f"{rs[e]['images_per_s']:.1f}" for e in a.log_every)
              + " |")
    if a.json:
        a.json.write_text(json.dumps({"device": device_string(a.device), "preset": a.preset, "rows": rows},
                                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
