"""Issue 11: a dataset given only as a COCO json + images in a user's config runs through the whole DAG.

The synthetic demo scenes are rewritten as a plain COCO instances json with three classes of their own
(ids listed out of order), then ``snakemake all`` runs SDCoNet and one serial baseline on them with tiny
budgets (about 70 s on 2 busy CPU cores).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# demo class -> (json category id, name); airplanes are left unlabelled. Suite order is by id: boat, car, tank.
RENAME = {"storage tank": (9, "tank"), "ship": (2, "boat"), "vehicle": (5, "car")}
CLASS_NAMES = ["boat", "car", "tank"]
METHODS = ["sdconet", "yolov8n_lr"]


def write_user_coco(dest: Path, n_images: int = 4, size: int = 256, seed: int = 1) -> None:
    """``dest/instances.json`` (standard COCO, xywh boxes) + ``dest/pictures/*.png`` from the demo generator."""
    from data_prep.demo import generate_demo

    raw = generate_demo(dest.parent / "demo_raw", n_images=n_images, size=size, seed=seed)
    demo = json.loads((raw / "demo_annotations.json").read_text())
    images, annotations = [], []
    for i, rec in enumerate(demo["images"]):
        name = Path(rec["file_name"]).name
        (dest / "pictures").mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / rec["file_name"], dest / "pictures" / name)
        images.append({"id": 100 + i, "file_name": name, "width": rec["width"], "height": rec["height"]})
        for obj in rec["objects"]:
            if obj["category"] in RENAME:
                x1, y1, x2, y2 = obj["bbox"]
                annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "iscrowd": 0,
                                    "category_id": RENAME[obj["category"]][0], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1)})
    categories = [{"id": cid, "name": name, "supercategory": "object"} for cid, name in RENAME.values()]
    (dest / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}))
    shutil.rmtree(raw)


@pytest.fixture(scope="module")
def coco_run(repo_root, tmp_path_factory, run_workflow):
    work = tmp_path_factory.mktemp("coco_wf")
    write_user_coco(work / "userdata")
    cfg = yaml.safe_load((repo_root / "config" / "demo_full.yaml").read_text())  # the smoke-budget demo, with:
    cfg.update({
        "results_dir": "results",
        "datasets": {"aerial": {"source": "coco", "annotations": "userdata/instances.json",
                                "images": "userdata/pictures", "tile": {"size": 128, "gap": 0},
                                "partition": {"ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}}},
        "degradations": {"bicubic_x2": {"scale": 2}},
        "main_degradation": None,
        "methods": METHODS,
        "seeds": [0],
        "sweep": {"degradations": [], "methods": []},
    })
    cfg["sdconet"]["set"] = {"train.epochs": 1, "train.unfreeze_epoch": 0, "train.eval_every": 1}
    cfg["baselines"]["set"] = {"yolo.epochs": 1}
    cfg["efficiency"].update({"hr_size": 128, "warmup": 0, "runs": 1, "batch_size": 1})
    cfg["report"]["bootstrap"] = 0
    out = run_workflow(work, cfg, timeout=900)
    return work, out


def test_report_main_table_has_every_method(coco_run, repo_root):
    work, _ = coco_run
    table = pd.read_csv(work / "results" / "report" / "tables" / "main_aerial_bicubic_x2.csv")
    exps = pd.read_csv(repo_root / "config" / "experiments.tsv", sep="\t").set_index("id")
    assert set(table["Method"]) == {exps.loc[m, "display"] for m in METHODS}
    assert (work / "results" / "report" / "index.html").is_file()


def test_classes_come_from_the_users_json(coco_run):
    work, _ = coco_run
    data = work / "results" / "data" / "aerial"
    coco = json.loads((data / "coco.json").read_text())
    assert [(c["id"], c["name"], c["source_id"]) for c in coco["categories"]] == [(1, "boat", 2), (2, "car", 5),
                                                                                 (3, "tank", 9)]
    assert yaml.safe_load((data / "yolo_hr" / "data.yaml").read_text())["names"] in (
        CLASS_NAMES, dict(enumerate(CLASS_NAMES)))
    for m in METHODS:
        assert json.loads((work / "results" / "efficiency" / f"{m}.json").read_text())["num_classes"] == 3
        det = json.loads((work / "results" / "aerial" / "bicubic_x2" / m / "seed0" / "metrics.json").read_text())
        assert sorted(det["detection"]["per_class"]) == CLASS_NAMES
    per_class = pd.read_csv(work / "results" / "report" / "tables" / "perclass_aerial_bicubic_x2.csv")
    assert set(CLASS_NAMES) <= set(per_class.columns)


def test_small_split_warning_in_partition_log_and_console(coco_run):
    work, console = coco_run
    log = (work / "logs" / "data" / "aerial" / "partition.log").read_text()
    for text in (log, console):
        assert "dataset aerial, partition results/data/aerial/partition: split 'test' has only 1 source image(s)" \
            in text
