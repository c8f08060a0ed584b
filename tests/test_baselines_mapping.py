"""Detector-output mapping: LR/SR grid -> COCO detections on the HR grid, id and class mappings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from baselines.config import ConfigError, FrcnnConfig, SRTrainConfig, YoloConfig
from baselines.mapping import (TileIndex, boxes_to_coco, label_maps, map_detections_to_hr, scale_factors,
                               yolo_class_map)
from data_prep.classes import categories
from benchcore.metrics.detection import coco_evaluate


def _tile_coco() -> dict:
    """Two 512 px HR tiles with a few boxes of several sizes (small, medium, large bins)."""
    anns = [(1, 1, [10.0, 20.0, 24.0, 18.0]), (1, 2, [100.0, 100.0, 60.0, 40.0]), (1, 10, [300.0, 50.0, 150.0, 120.0]),
            (2, 1, [0.0, 0.0, 31.0, 33.0]), (2, 5, [400.0, 420.0, 112.0, 92.0])]
    return {"images": [{"id": 1, "file_name": "images/P0001__0_0.png", "width": 512, "height": 512},
                       {"id": 2, "file_name": "images/P0001__412_0.png", "width": 512, "height": 512}],
            "categories": categories("nwpu"),
            "annotations": [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for i, (im, c, b) in enumerate(anns)]}


def test_perfect_prediction_from_an_x2_lr_grid_scores_ap_1(tmp_path: Path) -> None:
    gt = _tile_coco()
    path = tmp_path / "test.json"
    path.write_text(json.dumps(gt))
    index = TileIndex(path)
    lr_file = {im["id"]: f"/somewhere/lr/{Path(im['file_name']).name}" for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:  # what a perfect detector returns on the 256 px LR tile (xyxy, LR pixels)
        x, y, w, h = a["bbox"]
        rec = index.lookup(lr_file[a["image_id"]])  # image id from the LR file name
        dets.append({"image_id": rec["id"], "category_id": a["category_id"], "score": 0.9,
                     "xyxy": [x / 2, y / 2, (x + w) / 2, (y + h) / 2]})
    hr = map_detections_to_hr(dets, 2.0, width=512, height=512)
    assert hr[0]["bbox"] == pytest.approx([10.0, 20.0, 24.0, 18.0])
    res = coco_evaluate(path, hr)
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0) and res["AR100"] == pytest.approx(1.0)
    # Forgetting the mapping (boxes left on the LR grid) must be visible in the score.
    lr_only = map_detections_to_hr(dets, 1.0)
    assert coco_evaluate(path, lr_only)["AP"] < 0.2


def test_boxes_are_clipped_to_the_hr_tile_and_empty_ones_dropped() -> None:
    out = boxes_to_coco([[-4, 10, 20, 30], [250, 250, 300, 300], [260, 0, 270, 10]], [0.5, 0.4, 0.3], [1, 2, 3],
                        image_id=7, scale_x=2.0, scale_y=2.0, width=512, height=512)
    assert [d["bbox"] for d in out] == [[0.0, 20.0, 40.0, 40.0], [500.0, 500.0, 12.0, 12.0]]
    assert [d["category_id"] for d in out] == [1, 2] and out[0]["image_id"] == 7


def test_scale_factors_check_the_json_size() -> None:
    rec = {"file_name": "images/a.png", "width": 800, "height": 600}
    assert scale_factors(rec, (400, 300)) == (2.0, 2.0)
    assert scale_factors(rec, (200, 150), 4) == (4.0, 4.0)
    assert scale_factors({"file_name": "x", "width": 801, "height": 603}, (200, 150), 4) == (4.0, 4.0)  # HR // 4
    with pytest.raises(ValueError, match="images/a.png.*wrong scale_to_hr"):
        scale_factors(rec, (400, 300), 4)


def test_tile_index_lookup_and_file_resolution(tmp_path: Path) -> None:
    index = TileIndex(_tile_coco())
    assert index.lookup("labels/test/P0001__412_0.txt")["id"] == 2
    with pytest.raises(KeyError, match="P9999"):
        index.lookup("P9999__0_0.png")
    (tmp_path / "P0001__0_0.png").write_bytes(b"")  # an LR/SR folder keeps base names only
    assert index.find_file(tmp_path, index.by_stem["P0001__0_0"]) == tmp_path / "P0001__0_0.png"
    with pytest.raises(FileNotFoundError, match="P0001__412_0"):
        index.find_file(tmp_path, index.by_stem["P0001__412_0"])
    dup = _tile_coco()
    dup["images"][1]["file_name"] = "other/P0001__0_0.png"
    with pytest.raises(ValueError, match="share the stem"):
        TileIndex(dup)


def test_yolo_class_map_is_cls_plus_one_and_checks_names() -> None:
    cats = categories("nwpu")
    names = {i: c["name"] for i, c in enumerate(cats)}
    assert yolo_class_map(names, cats) == {i: i + 1 for i in range(10)}
    assert yolo_class_map([c["name"].replace(" ", "_") for c in cats], cats)[9] == 10
    swapped = {**names, 0: names[1], 1: names[0]}
    with pytest.raises(ValueError, match="YOLO class 0 is 'ship' but category_id 1 is 'airplane'"):
        yolo_class_map(swapped, cats)
    with pytest.raises(ValueError, match="9 classes"):
        yolo_class_map({i: names[i] for i in range(9)}, cats)
    c2l, l2c = label_maps([{"id": 3, "name": "a"}, {"id": 7, "name": "b"}])
    assert c2l == {3: 1, 7: 2} and l2c == {1: 3, 2: 7}


def test_configs_reject_unknown_keys() -> None:
    cfg = SRTrainConfig.from_dict({"model_name": "swinir", "scale": 4, "lr_patch_size": 48}, source="cfg.yaml")
    assert cfg.to_kwargs()["model_name"] == "swinir" and cfg.to_kwargs()["patch_size"] == 192
    with pytest.raises(ConfigError, match=r"cfg.yaml: unknown key 'iter' for SRTrainConfig"):
        SRTrainConfig.from_dict({"iter": 5}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="scale is not set"):
        SRTrainConfig.from_dict({"lr_patch_size": 48}).to_kwargs()
    with pytest.raises(ConfigError, match="unknown key 'lr0'"):
        YoloConfig.from_dict({"lr0": 0.01})
    assert YoloConfig.from_dict({"overrides": {"lr0": 0.02}}).to_kwargs()["lr0"] == 0.02
    with pytest.raises(ConfigError, match="model yaml"):
        YoloConfig.from_dict({"model": "yolov8n.pt"})
    with pytest.raises(ConfigError, match="optimizer"):
        FrcnnConfig.from_dict({"optimizer": "rmsprop"})


def test_config_kwargs_bind_to_the_library_functions() -> None:
    import inspect

    from baselines.config import SRInferConfig
    from baselines.frcnn import train_frcnn
    from baselines.interp import upscale_folder
    from baselines.sr_infer import infer_sr
    from baselines.sr_train import train_sr
    from baselines.yolo import train_yolo

    inspect.signature(train_sr).bind(pairs_dir="p", out_dir="o", **SRTrainConfig(scale=2).to_kwargs())
    inspect.signature(train_frcnn).bind(coco_json="c", image_dir="i", out_dir="o", **FrcnnConfig().to_kwargs())
    inspect.signature(train_yolo).bind(data_yaml="d", out_dir="o", **YoloConfig().to_kwargs())
    inspect.signature(infer_sr).bind(model="m", lr_dir="l", out_dir="o", **SRInferConfig(scale=2).to_kwargs())
    bicubic = SRInferConfig.from_dict({"method": "bicubic", "scale": 4}).to_kwargs()
    inspect.signature(upscale_folder).bind(lr_dir="l", out_dir="o", **bicubic)
