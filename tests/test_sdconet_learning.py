"""SDCoNet learns on real NWPU VHR-10 tiles: the tiny preset (SR branch on) overfits 8 tiles on CPU.

Data: 4 NWPU images with many small objects (storage tanks 320/324.jpg, vehicles 429/434.jpg; 27-42 px median
box side) tiled at 128 px with the data stage's own functions; the first 8 tiles (by id) with >= 2 objects,
48 boxes. Training: ``sdconet.engine.train``, 60 epochs x 4 steps, batch 2, routing "none" (SR loss from epoch 0),
AdamW lr 1e-3 with the backbone at the same lr (random init: the official x0.1 and clip 0.1 are for an ImageNet
Swin) and clip 1.0, one CPU thread (about 25-70 s on a loaded 2-core machine).

Observed with exactly this recipe (seeds 0 / 1 / 2): epoch loss 30.3 -> 9.6 / 29.3 -> 10.8 / 28.8 -> 10.7 (ratio
0.32-0.37), AP50 on the training tiles 0.0 -> 0.73 / 0.75 / 0.69. Thresholds, with margin: last-epoch loss
< 0.6 x first-epoch loss, the loss falls from third to third of the run, and AP50 rises by more than 0.3.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

IMAGES = ("320.jpg", "324.jpg", "429.jpg", "434.jpg")
N_TILES, EPOCHS = 8, 60


@pytest.fixture(scope="module")
def nwpu_tiles(nwpu_root: Path, tmp_path_factory) -> tuple[dict, Path]:
    """(COCO dict of the selected 128 px tiles, their image dir)."""
    from data_prep.convert import convert_dataset
    from data_prep.split import split_dataset

    work = tmp_path_factory.mktemp("nwpu_learn")
    convert_dataset("nwpu", nwpu_root, work / "coco.json")
    coco = json.loads((work / "coco.json").read_text())
    keep = {im["id"] for im in coco["images"] if Path(im["file_name"]).name in IMAGES}
    assert len(keep) == len(IMAGES)
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    (work / "sub.json").write_text(json.dumps(coco))
    split_dataset(work / "sub.json", nwpu_root, work / "tiles", tile=128, gap=0, workers=1, progress=False)
    tiles = json.loads((work / "tiles" / "annotations.json").read_text())
    counts = Counter(a["image_id"] for a in tiles["annotations"])
    ids = set(sorted(i for i, n in counts.items() if n >= 2)[:N_TILES])
    sub = {**tiles, "images": [im for im in tiles["images"] if im["id"] in ids],
           "annotations": [a for a in tiles["annotations"] if a["image_id"] in ids]}
    assert len(sub["images"]) == N_TILES
    return sub, work / "tiles"


def test_tiny_sdconet_loss_falls_and_ap50_rises(nwpu_tiles, tmp_path: Path, one_thread) -> None:
    from sdconet.data import TileDataset
    from sdconet.engine import train
    from sdconet.evaluate import evaluate
    from sdconet.models.build import build_model
    from sdconet.models.config import preset
    from sdconet.train_config import TrainConfig

    coco, image_dir = nwpu_tiles
    torch.manual_seed(0)
    model = build_model(preset("tiny", scale=2, num_classes=10))
    train_set = TileDataset(coco, image_dir, train=True)
    eval_set = TileDataset(coco, image_dir, train=False)
    ap50_start = evaluate(model, eval_set, coco, "cpu", batch_size=4)["detection"]["AP50"]
    cfg = TrainConfig(epochs=EPOCHS, batch_size=2, lr=1e-3, backbone_lr_mult=1.0, clip_grad=1.0, milestones=(),
                      routing="none", amp=False, seed=0, workers=0, eval_every=0, device="cpu", keep_last=1,
                      progress=False)
    hist = train(model, train_set, None, cfg, tmp_path / "run")["history"]
    ap50_end = evaluate(model, eval_set, coco, "cpu", batch_size=4)["detection"]["AP50"]
    losses = [h["loss"] for h in hist]
    assert all("loss_sr" in h["losses"] and "loss_salience" in h["losses"] for h in hist)
    third = len(losses) // 3
    means = [sum(losses[i * third:(i + 1) * third]) / third for i in range(3)]
    print(f"\nloss first/last epoch {losses[0]:.3f} -> {losses[-1]:.3f}; thirds {[round(m, 3) for m in means]}; "
          f"AP50 {ap50_start:.4f} -> {ap50_end:.4f}")
    assert losses[-1] < 0.6 * losses[0]
    assert means[0] > means[1] > means[2]
    assert ap50_end > ap50_start + 0.3
