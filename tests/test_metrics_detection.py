"""Detection metrics: pycocotools parity, hand-checkable COCO cases, VOC AP by hand."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from benchcore.metrics.detection import (COCO_KEYS, PROTOCOLS, coco_evaluate, protocol_keys, scale_boxes_to_hr,
                                        voc_map50)


def _random_case(n_images: int = 20, n_cats: int = 4, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 512, "height": 512, "file_name": f"{i}.png"} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"class{c}"} for c in range(n_cats)]
    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(8, 150, 2)
            x, y = rng.uniform(0, 300, 2)
            c = int(rng.integers(1, n_cats + 1))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:
                dets.append({"image_id": im["id"], "category_id": c, "score": float(rng.random()),
                             "bbox": [x + rng.normal(0, 6), y + rng.normal(0, 6), w * rng.uniform(0.8, 1.2), h]})
        for _ in range(int(rng.integers(0, 3))):
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [float(v) for v in rng.uniform(0, 200, 4)], "score": float(rng.random())})
    return {"images": images, "categories": cats, "annotations": anns}, dets


def _one_image(boxes: list[list[float]], cat_names: tuple[str, ...] = ("plane",)) -> dict:
    return {"images": [{"id": 1, "width": 400, "height": 400}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(cat_names)],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for i, b in enumerate(boxes)]}


def test_matches_pycocotools_run_directly() -> None:
    gt, dets = _random_case()
    stats = _pycocotools_stats(gt, dets, [1, 10, 100])  # pycocotools' default maxDets
    ours = coco_evaluate(gt, dets)
    for key, ref in zip(COCO_KEYS, stats):
        assert ours[key] == (None if ref == -1 else pytest.approx(float(ref), abs=1e-12)), key
    assert ours["num_images"] == 20 and ours["num_detections"] == len(dets)
    assert 0.05 < ours["AP"] < 0.95  # a non-trivial case


def _crowded_case(n_images: int = 3, seed: int = 0) -> tuple[dict, list[dict]]:
    """Images with 130 objects of one class and 280 detections each (most of a 300-query detector's output): 130
    noisy hits and 150 lower-scored false positives, so a 100-detection cap drops about 30 hits per image."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 512, "height": 512} for i in range(n_images)]
    anns, dets = [], []
    for im in images:
        for j in range(130):
            x, y = 4 + 38 * (j % 13), 4 + 50 * (j // 13)
            w, h = rng.uniform(12, 34), rng.uniform(12, 44)  # small and medium boxes
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            dets.append({"image_id": im["id"], "category_id": 1, "score": float(rng.uniform(0.2, 1.0)),
                         "bbox": [x + rng.normal(0, 2), y + rng.normal(0, 2), w, h]})
        for _ in range(150):
            dets.append({"image_id": im["id"], "category_id": 1, "score": float(rng.uniform(0.0, 0.7)),
                         "bbox": [float(v) for v in rng.uniform(0, 480, 2)] + [20.0, 20.0]})
    return {"images": images, "categories": [{"id": 1, "name": "car"}], "annotations": anns}, dets


def _pycocotools_stats(gt: dict, dets: list[dict], max_dets: list[int]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dets))
        ev = COCOeval(cg, cd, "bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_mmdet_protocol_matches_pycocotools_with_mmdet_maxdets() -> None:
    """mmdetection's CocoMetric sets maxDets = proposal_nums = (100, 300, 1000) and reads summarize()'s stats."""
    gt, dets = _crowded_case()
    ref = _pycocotools_stats(gt, dets, [100, 300, 1000])
    ours = coco_evaluate(gt, dets, protocol="mmdet")
    keys = protocol_keys("mmdet")
    assert keys[6:9] == ("AR100", "AR300", "AR1000") and PROTOCOLS["mmdet"] == (100, 300, 1000)
    for key, r in zip(keys, ref):
        assert ours[key] == (None if r == -1 else pytest.approx(float(r), abs=1e-12)), key
    assert ours["protocol"] == "mmdet" and ours["max_dets"] == [100, 300, 1000]
    coco = coco_evaluate(gt, dets)  # protocol "coco": every key at 100
    assert coco["protocol"] == "coco" and coco["max_dets"] == [1, 10, 100]
    for key, r in zip(COCO_KEYS, _pycocotools_stats(gt, dets, [1, 10, 100])):
        assert coco[key] == (None if r == -1 else pytest.approx(float(r), abs=1e-12)), key
    # mAP is read at 100 detections in both; AP50, AP75 and the size bins see all 280 outputs under mmdet
    assert ours["AP"] == pytest.approx(coco["AP"], abs=1e-12)
    for key in ("AP50", "AP75", "AP_s", "AP_m"):
        assert ours[key] > coco[key] + 0.05, key
    assert ours["AR100"] == pytest.approx(coco["AR100"], abs=1e-12) and ours["AR1000"] > ours["AR100"]
    # per class: mmdetection's classwise table reads the last maxDets (1000)
    assert ours["per_class"]["car"] > coco["per_class"]["car"] + 0.05


def test_protocol_is_checked() -> None:
    gt, dets = _crowded_case(n_images=1)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'voc'"):
        coco_evaluate(gt, dets, protocol="voc")
    with pytest.raises(ValueError, match="fixed maxDets"):
        coco_evaluate(gt, dets, protocol="mmdet", max_dets=300)


def test_perfect_predictions_score_one_and_gt_is_not_mutated() -> None:
    gt, _ = _random_case(seed=1)
    for a in gt["annotations"]:
        del a["iscrowd"]  # missing iscrowd defaults to 0
    before = copy.deepcopy(gt)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]]
    r = coco_evaluate(gt, dets)
    assert [r[k] for k in ("AP", "AP50", "AP75", "AR100")] == pytest.approx([1.0] * 4, abs=1e-12)
    assert list(r["per_class"].values()) == pytest.approx([1.0] * 4, abs=1e-12)
    assert gt == before


def test_shift_between_iou_050_and_075() -> None:
    gt = _one_image([[100, 100, 100, 100]])
    # shifted by 22 px: IoU = 78*100 / (122*100) = 0.639 -> a TP at thresholds .50, .55, .60 only
    r = coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [122, 100, 100, 100], "score": 0.9}])
    assert r["AP50"] == pytest.approx(1.0)  # pycocotools' precision is tp / (tp + fp + eps)
    assert r["AP75"] == 0.0
    assert r["AP"] == pytest.approx(0.3)


def test_empty_predictions_give_zero() -> None:
    gt, _ = _random_case(seed=2)
    r = coco_evaluate(gt, [])
    assert all(r[k] == 0.0 for k in COCO_KEYS)
    assert set(r["per_class"].values()) == {0.0}
    assert r["num_detections"] == 0


def test_area_bins_use_the_area_field() -> None:
    gt = _one_image([[10, 10, 20, 20], [200, 200, 120, 120]])  # small (400 px^2) and large (14400 px^2)
    hit_large = [{"image_id": 1, "category_id": 1, "bbox": [200, 200, 120, 120], "score": 0.9}]
    r = coco_evaluate(gt, hit_large)
    assert r["AP_s"] == 0.0 and r["AP_l"] == pytest.approx(1.0) and r["AP_m"] is None and r["AR_m"] is None
    # the bins follow `area`, not the box: declare the small box's area large and the bins change
    gt["annotations"][0]["area"] = 20_000.0
    r = coco_evaluate(gt, hit_large)
    assert r["AP_s"] is None and r["AP_l"] == pytest.approx(51 / 101)  # recall 0.5: 51 of 101 COCO points


def test_per_class_names_and_class_without_gt() -> None:
    gt = _one_image([[10, 10, 50, 50]], cat_names=("plane", "ship"))
    r = coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.5}])
    assert r["per_class"] == {"plane": pytest.approx(1.0), "ship": None}


def test_unknown_ids_raise_and_name_the_id() -> None:
    gt = _one_image([[10, 10, 50, 50]])
    with pytest.raises(ValueError, match="image_id 999"):
        coco_evaluate(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="category_id 42"):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_gt_from_json_path_and_quiet(tmp_path, capsys) -> None:
    gt, dets = _random_case(seed=3)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert coco_evaluate(path, dets)["AP"] == coco_evaluate(gt, dets)["AP"]
    assert capsys.readouterr().out == ""


def test_scale_boxes_to_hr() -> None:
    dets = [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    assert scale_boxes_to_hr(dets, 4)[0]["bbox"] == [4.0, 8.0, 12.0, 16.0]
    assert dets[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]


# VOC: GT A, B; detections (by score) hit A, miss, hit B -> rec .5 .5 1, prec 1 .5 2/3.
# All-point AP = .5 * 1 + .5 * 2/3 = 5/6; 11-point = (6 * 1 + 5 * 2/3) / 11 = 28/33.
_VOC_DETS = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
             {"image_id": 1, "category_id": 1, "bbox": [300, 10, 50, 50], "score": 0.8},
             {"image_id": 1, "category_id": 1, "bbox": [102, 100, 50, 50], "score": 0.7}]


def test_voc_map50_hand_computed() -> None:
    gt = _one_image([[10, 10, 50, 50], [100, 100, 50, 50]])
    assert voc_map50(gt, _VOC_DETS)["mAP50"] == pytest.approx(5 / 6)
    assert voc_map50(gt, _VOC_DETS, use_07_metric=True)["mAP50"] == pytest.approx(28 / 33)
    assert voc_map50(gt, _VOC_DETS)["per_class"] == {"plane": pytest.approx(5 / 6)}
    assert voc_map50(gt, [])["mAP50"] == 0.0


def test_voc_difficult_is_neither_tp_nor_fp() -> None:
    gt = _one_image([[10, 10, 50, 50], [100, 100, 50, 50], [200, 200, 40, 40]])
    gt["annotations"][2]["difficult"] = 1
    on_difficult = {"image_id": 1, "category_id": 1, "bbox": [200, 200, 40, 40], "score": 0.95}
    # ignored: same AP as without the difficult box; counted as a FP or a missed GT it would be lower
    assert voc_map50(gt, [on_difficult, *_VOC_DETS])["mAP50"] == pytest.approx(5 / 6)
    del gt["annotations"][2]["difficult"]
    assert voc_map50(gt, [on_difficult, *_VOC_DETS])["mAP50"] != pytest.approx(5 / 6)
