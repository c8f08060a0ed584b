"""Detectors on real NWPU VHR-10 crops: tiny Faster R-CNN (train, resume, predict, metrics.json) and YOLOv8n
(ultralytics trainer, offline, nothing written outside out_dir)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.frcnn import CocoTileDataset, build_frcnn, predict_frcnn, train_frcnn
from data_prep.classes import categories
from benchcore.metrics.detection import coco_evaluate
from benchcore.metrics.results import read_metrics, write_metrics

pytestmark = pytest.mark.realdata
REPO = Path(__file__).resolve().parents[1]
TILE = 128
# (image, top-left of the 128 px window): airplanes, ships + baseball diamond, vehicles; plus a negative crop.
CROPS = {"002": (20, 270), "310": (230, 380), "420": (610, 150)}


def _gt_boxes(nwpu_root: Path, name: str) -> list[tuple[list[float], int]]:
    """NWPU ground truth lines ``(x1,y1),(x2,y2),c`` (spaces allowed inside the parentheses)."""
    out = []
    for line in (nwpu_root / "ground truth" / f"{name}.txt").read_text().splitlines():
        nums = re.findall(r"\d+(?:\.\d+)?", line)
        if len(nums) == 5:
            out.append(([float(v) for v in nums[:4]], int(nums[4])))
    return out


def _build_tiles(nwpu_root: Path, root: Path) -> dict:
    """HR tiles (+ COCO json), x2 LR copies and an ultralytics export of the same crops."""
    for d in ("tiles/images", "lr/images", "yolo/images/train", "yolo/labels/train"):
        (root / d).mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": categories("nwpu")}
    sources = [("positive image set", n, xy) for n, xy in CROPS.items()] + [("negative image set", "001", (0, 0))]
    for k, (folder, name, (x0, y0)) in enumerate(sources, start=1):
        stem = f"{'neg' if folder.startswith('neg') else ''}{name}__{x0}_{y0}"
        with Image.open(nwpu_root / folder / f"{name}.jpg") as im:
            tile = im.convert("RGB").crop((x0, y0, x0 + TILE, y0 + TILE))
        tile.save(root / "tiles/images" / f"{stem}.png")
        tile.save(root / "yolo/images/train" / f"{stem}.png")
        tile.resize((TILE // 2, TILE // 2), Image.Resampling.BICUBIC).save(root / "lr/images" / f"{stem}.png")
        coco["images"].append({"id": k, "file_name": f"images/{stem}.png", "width": TILE, "height": TILE})
        lines = []
        for box, c in (_gt_boxes(nwpu_root, name) if folder.startswith("pos") else []):
            cx1, cy1 = max(box[0] - x0, 0), max(box[1] - y0, 0)
            cx2, cy2 = min(box[2] - x0, TILE), min(box[3] - y0, TILE)
            area = (box[2] - box[0]) * (box[3] - box[1])
            if cx2 - cx1 > 2 and cy2 - cy1 > 2 and (cx2 - cx1) * (cy2 - cy1) >= 0.5 * area:
                w, h = cx2 - cx1, cy2 - cy1
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k, "category_id": c,
                                            "bbox": [cx1, cy1, w, h], "area": w * h, "iscrowd": 0})
                lines.append(f"{c - 1} {(cx1 + w / 2) / TILE:.6f} {(cy1 + h / 2) / TILE:.6f} {w / TILE:.6f} {h / TILE:.6f}")
        (root / "yolo/labels/train" / f"{stem}.txt").write_text("".join(x + "\n" for x in lines))  # "" if negative
    (root / "tiles/annotations.json").write_text(json.dumps(coco))
    names = [c["name"] for c in coco["categories"]]
    (root / "yolo/data.yaml").write_text(json.dumps({"path": str(root / "yolo"), "train": "images/train",
                                                     "val": "images/train", "names": names}))
    return coco


@pytest.fixture(scope="module")
def tiles(nwpu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nwpu_tiles")
    coco = _build_tiles(nwpu_root, root)
    per_image = {im["id"]: sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]}
    assert all(per_image[i] >= 1 for i in (1, 2, 3)) and per_image[4] == 0, per_image
    assert len({a["category_id"] for a in coco["annotations"]}) >= 3
    return root


def test_dataset_scales_hr_boxes_to_lr_images_and_handles_empty(tiles: Path) -> None:
    hr = CocoTileDataset(tiles / "tiles/annotations.json", tiles / "tiles")
    lr = CocoTileDataset(tiles / "tiles/annotations.json", tiles / "lr")
    (img_h, t_h), (img_l, t_l) = hr[0], lr[0]
    assert img_h.shape == (3, TILE, TILE) and img_l.shape == (3, TILE // 2, TILE // 2)
    assert torch.allclose(t_l["boxes"] * 2, t_h["boxes"]) and len(t_h["boxes"]) >= 1
    _, t_neg = hr[3]
    assert t_neg["boxes"].shape == (0, 4) and t_neg["labels"].shape == (0,)


def test_tiny_frcnn_trains_resumes_predicts_and_writes_metrics(tiles: Path, tmp_path: Path) -> None:
    ann, kw = tiles / "tiles/annotations.json", dict(batch_size=4, lr=0.005, seed=1, preset="tiny", warmup_iters=2,
                                                       log_every=1)
    full = train_frcnn(ann, tiles / "tiles", tmp_path / "full", epochs=2, **kw)
    assert full["steps"] == 2 and full["tile_size"] == TILE
    log = [json.loads(x) for x in (tmp_path / "full/log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(np.isfinite(losses)) and {"loss_classifier", "loss_rpn_box_reg"} <= set(log[0])
    # Interrupted after epoch 1, resumed to 2 epochs: identical weights.
    train_frcnn(ann, tiles / "tiles", tmp_path / "part", epochs=1, **kw)
    res = train_frcnn(ann, tiles / "tiles", tmp_path / "part", epochs=2, resume=True, **kw)
    assert res["resumed_from_epoch"] == 1
    a = torch.load(full["weights"], weights_only=False)["model"]
    b = torch.load(res["weights"], weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    dets = predict_frcnn(full["weights"], ann, tiles / "lr", scale_to_hr=2.0)  # detector on LR, boxes on HR
    assert all(0 <= d["bbox"][0] and d["bbox"][0] + d["bbox"][2] <= TILE + 1e-6 for d in dets)
    det = coco_evaluate(ann, dets)
    cfg = {"detector": "frcnn", "preset": "tiny", "epochs": 2}
    write_metrics(tmp_path / "metrics.json", method="lr+frcnn", dataset="nwpu", degradation="bicubic_x2", seed=1,
                  detection=det, config=cfg, device="cpu")
    doc = read_metrics(tmp_path / "metrics.json")
    assert set(doc["detection"]) >= {"AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR100", "per_class"}
    assert doc["provenance"]["config"] == cfg and doc["sr"] is None


def test_frcnn_paper_preset_is_r50_fpn_pinned_to_the_tile() -> None:
    model = build_frcnn(10, 512, "paper")
    assert type(model.backbone.body.layer4[0]).__name__ == "Bottleneck"  # ResNet-50 blocks
    assert model.transform.min_size == (512,) and model.transform.max_size == 512
    assert model.roi_heads.box_predictor.cls_score.out_features == 11


YOLO_SCRIPT = textwrap.dedent("""
    import json, sys
    from baselines.yolo import predict_yolo, train_yolo
    tiles, out = sys.argv[1], sys.argv[2]
    w = train_yolo(tiles + "/yolo/data.yaml", out, model="yolov8n.yaml", epochs=1, imgsz=128, batch=4, seed=0,
                   val=False, workers=0)
    dets = predict_yolo(w, tiles + "/lr", tiles + "/tiles/annotations.json", scale_to_hr=2.0, imgsz=128)
    json.dump({"weights": str(w), "dets": dets}, open(out + "/dets.json", "w"))
""")


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_yolo_trains_offline_and_writes_only_under_out_dir(tiles: Path, tmp_path: Path) -> None:
    home, cwd, out = tmp_path / "home", tmp_path / "cwd", tmp_path / "out"
    home.mkdir()
    cwd.mkdir()
    before = _tree(tiles)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_", "TORCH_HOME", "MPLCONFIGDIR"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", YOLO_SCRIPT, str(tiles), str(out)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "dets.json").read_text())
    assert Path(result["weights"]).is_relative_to(out / "train" / "weights")
    assert not any(cwd.iterdir()), f"written to the cwd: {list(cwd.iterdir())}"  # no ./runs, no datasets/
    assert _tree(tiles) == before  # the export is untouched (ultralytics' labels cache went to out_dir)
    assert (out / "dataset" / "labels" / "train.cache").is_file()
    # $HOME: only the configured cache (sdconet-bench: ultralytics settings.json + fonts), plus matplotlib's own
    # font cache and (empty) config dir, which matplotlib creates on import (MPLCONFIGDIR is not set by sdconet).
    allowed = (".cache", ".cache/sdconet-bench", ".cache/matplotlib", ".config", ".config/matplotlib")
    stray = [p for p in _tree(home) if not any(p == a or p.startswith(a + "/") for a in allowed[1:]) and p not in allowed]
    assert not stray, f"written to $HOME outside the configured cache: {stray}"
    assert not any((home / ".config").rglob("*.*")) if (home / ".config").exists() else True
    assert (home / ".cache/sdconet-bench/ultralytics/Ultralytics/settings.json").is_file()
    dets = result["dets"]
    assert {d["image_id"] for d in dets} <= {1, 2, 3, 4}
    assert all(d["bbox"][0] + d["bbox"][2] <= TILE + 1e-6 and d["bbox"][1] + d["bbox"][3] <= TILE + 1e-6 for d in dets)
    res = coco_evaluate(tiles / "tiles/annotations.json", dets)
    assert 0.0 <= res["AP50"] <= 1.0 and res["num_detections"] == len(dets)


def test_frcnn_loop_reads_the_losses_only_at_log_lines(tiles: Path, tmp_path: Path) -> None:
    from tests.test_baselines_loss_reads import HostReads  # noqa: PLC0415

    ann = tiles / "tiles/annotations.json"
    with HostReads() as mode:
        res = train_frcnn(ann, tiles / "tiles", tmp_path / "run", epochs=1, batch_size=1, lr=0.005, seed=1,
                          preset="tiny", warmup_iters=2, log_every=3)
    assert res["steps"] == 4
    # One read at the step-3 log line, one for step 4 at the end of the epoch; none in the loop itself.
    assert [r for r in mode.reads if r[1] in ("frcnn.py", "_runtime.py")] == [("tolist", "_runtime.py")] * 2
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 4] and log[1]["end_of_epoch"] and np.isfinite(log[1]["loss"])
