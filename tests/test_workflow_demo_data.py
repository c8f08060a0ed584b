"""Runs the data rules of the real Snakefile on the embedded demo (no network, ~30 s on 2 cores)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def demo_data(repo_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_wf")
    res = work / "results"
    cfg = work / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": str(res),
        "datasets": {"demo": {"source": "demo", "demo": {"n_images": 6, "size": 256, "seed": 3},
                              "tile": {"size": 128, "gap": 32},
                              "partition": {"ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}}},
        "degradations": {"bicubic_x2": {"scale": 2}, "matlab_x4": {"scale": 4, "kernel": "matlab-bicubic"}},
    }))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "--cores", "2",
                        "data", "--configfile", str(cfg), "--directory", str(work)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, res / "data" / "demo"


def test_every_data_product_exists(demo_data):
    work, root = demo_data
    for p in ["coco.json", "tiles/annotations.json", "tiles/summary.json", "partition/train.json",
              "yolo_hr/data.yaml", "bicubic_x2/lr/manifest.json", "bicubic_x2/yolo_lr/data.yaml",
              "matlab_x4/basicsr/train/LR", "matlab_x4/basicsr/train/HR"]:
        assert (root / p).exists(), p
    assert (work / "logs" / "data" / "demo" / "split_tiles.log").is_file()


def test_tiles_partition_and_lr_sizes(demo_data):
    _, root = demo_data
    tiles = json.loads((root / "tiles" / "annotations.json").read_text())
    assert tiles["images"] and all(im["width"] == im["height"] == 128 for im in tiles["images"])
    parts = {p: json.loads((root / "partition" / f"{p}.json").read_text()) for p in ("train", "val", "test")}
    ids = [{im["source_image_id"] for im in parts[p]["images"]} for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(v["images"]) for v in parts.values()) == len(tiles["images"])
    from PIL import Image

    lr = sorted((root / "matlab_x4" / "lr").glob("*.png"))
    assert len(lr) == len(tiles["images"])
    assert Image.open(lr[0]).size == (32, 32)
    man = json.loads((root / "matlab_x4" / "lr" / "manifest.json").read_text())
    assert man["scale"] == 4 and man["kernel"] == "matlab-bicubic"


def test_yolo_labels_identical_for_hr_and_lr(demo_data):
    _, root = demo_data
    hr = sorted((root / "yolo_hr" / "labels" / "train").glob("*.txt"))
    assert hr
    for f in hr:
        lr = root / "bicubic_x2" / "yolo_lr" / "labels" / "train" / f.name
        assert f.read_text() == lr.read_text()
