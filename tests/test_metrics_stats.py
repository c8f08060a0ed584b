"""Significance statistics (seed summaries, image bootstrap) and the metrics.json writer/reader."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from benchcore.metrics.detection import coco_evaluate, load_gt
from benchcore.metrics.results import MetricsValidationError, read_metrics, write_metrics
from benchcore.metrics.stats import _resample, bootstrap_ci, seed_summary


def _random_case(n_images: int, seed: int, n_cats: int = 4) -> tuple[dict, list[dict]]:
    """Noisy copies of random GT boxes (80 % found) plus a few false positives per image."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i} for i in range(n_images)]
    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(0, 6))):
            x, y, w, h = (*rng.uniform(0, 300, 2), *rng.uniform(8, 150, 2))
            c = int(rng.integers(1, n_cats + 1))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h]})
            if rng.random() < 0.8:
                dets.append({"image_id": im["id"], "category_id": c, "score": float(rng.random()),
                             "bbox": [x + rng.normal(0, 6), y + rng.normal(0, 6), w, h]})
        for _ in range(int(rng.integers(0, 3))):
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [float(v) for v in rng.uniform(0, 200, 4)], "score": float(rng.random())})
    return {"images": images, "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(n_cats)],
            "annotations": anns}, dets


def test_seed_summary() -> None:
    s = seed_summary([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4 and s["values"] == [1.0, 2.0, 3.0, 4.0]
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # sample std (ddof=1)
    assert seed_summary([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1, "values": [0.7]}
    with pytest.raises(ValueError):
        seed_summary([])


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    gt, dets = _random_case(n_images=50, seed=5)
    t0 = time.perf_counter()
    a = bootstrap_ci(gt, dets, metric="AP", n_boot=50, seed=3)
    elapsed = time.perf_counter() - t0
    assert a["point"] == pytest.approx(coco_evaluate(gt, dets)["AP"])
    assert a["low"] < a["point"] < a["high"]
    assert a["n_boot"] == a["n_valid"] == 50
    assert bootstrap_ci(gt, dets, metric="AP", n_boot=50, seed=3) == a
    assert bootstrap_ci(gt, dets, metric="AP", n_boot=50, seed=4)["low"] != a["low"]
    assert elapsed < 30  # about 1 s on an idle core; generous for shared CPUs


def test_bootstrap_other_metric_and_bad_metric() -> None:
    gt, dets = _random_case(n_images=20, seed=6)
    r = bootstrap_ci(gt, dets, metric="AP50", n_boot=20)
    assert r["low"] <= coco_evaluate(gt, dets)["AP50"] == r["point"] <= r["high"]
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(gt, dets, metric="mAP")


def test_resample_counts_duplicated_images_twice() -> None:
    gt, dets = _random_case(n_images=3, seed=7)
    data = load_gt(gt)
    by_img = {im["id"]: i for i, im in enumerate(data["images"])}
    anns = [[a for a in data["annotations"] if by_img[a["image_id"]] == i] for i in range(3)]
    dts = [[d for d in dets if by_img[d["image_id"]] == i] for i in range(3)]
    boot, boot_dets = _resample(data, anns, dts, np.array([1, 1, 2]))
    assert [im["id"] for im in boot["images"]] == [1, 2, 3]
    assert len(boot["annotations"]) == 2 * len(anns[1]) + len(anns[2])
    assert len({a["id"] for a in boot["annotations"]}) == len(boot["annotations"])
    assert len(boot_dets) == 2 * len(dts[1]) + len(dts[2])
    assert data == load_gt(gt)  # inputs untouched


def _detection() -> dict:
    return {"AP": 0.41, "AP50": 0.7, "AP75": 0.42, "AP_s": None, "AP_m": 0.3, "AP_l": 0.5, "AR100": 0.55,
            "AR1": 0.2, "per_class": {"plane": 0.6, "ship": None}}


def test_write_read_round_trip(tmp_path) -> None:
    path = tmp_path / "results" / "nwpu" / "bicubic_x4" / "sdconet" / "seed0" / "metrics.json"
    doc = write_metrics(path, method="sdconet", dataset="nwpu", degradation="bicubic_x4", seed=np.int64(0),
                        detection=_detection(), sr={"psnr": 28.1, "ssim": 0.81},
                        efficiency={"params": 123, "gmac": 4.1, "counter": "fvcore"}, config={"lr": 0.01})
    back = read_metrics(path)
    assert back == json.loads(json.dumps(doc))
    assert back["seed"] == 0 and back["detection"]["AP_s"] is None and back["sr"]["ssim"] == 0.81
    prov = back["provenance"]
    assert prov["config"] == {"lr": 0.01} and len(prov["config_hash"]) == 16 and prov["device"].startswith("cpu")
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_missing_key_error_names_key_and_file(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    doc = write_metrics(path, method="m", dataset="d", degradation="g", seed=1, detection=_detection())
    assert doc["sr"] is None and doc["efficiency"] is None
    del doc["detection"]
    path.write_text(json.dumps(doc))
    with pytest.raises(MetricsValidationError, match="'detection' is a required property") as err:
        read_metrics(path)
    assert str(path) in str(err.value)
    doc["detection"] = dict(_detection(), AP=1.5)
    path.write_text(json.dumps(doc))
    with pytest.raises(MetricsValidationError, match="detection/AP"):
        read_metrics(path)


def test_write_rejects_incomplete_detection(tmp_path) -> None:
    det = _detection()
    del det["AR100"]
    path = tmp_path / "metrics.json"
    with pytest.raises(MetricsValidationError, match="AR100"):
        write_metrics(path, method="m", dataset="d", degradation="g", seed=0, detection=det)
    assert not path.exists()


def test_add_bootstrap_writes_cis_into_metrics_json(tmp_path):
    """The pipeline's per-run CI step: extra.bootstrap holds AP / AP_s intervals that contain the point."""
    import json

    from benchcore.metrics.detection import coco_evaluate
    from benchcore.metrics.results import add_bootstrap, read_metrics, write_metrics

    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in range(1, 13)]
    anns, dets = [], []
    for i in range(1, 13):
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0})
        shift = 0 if i % 3 else 8  # a third of the images get a poorly localised detection
        dets.append({"image_id": i, "category_id": 1, "bbox": [10 + shift, 10, 20, 20], "score": 0.9})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "run" / "metrics.json"
    write_metrics(path, method="m", dataset="d", degradation="x", seed=0, detection=coco_evaluate(gt, dets))
    (path.parent / "detections.json").write_text(json.dumps(dets))
    add_bootstrap(path, gt, n_boot=30, seed=0)
    doc = read_metrics(path)
    ci = doc["extra"]["bootstrap"]["AP"]
    assert ci["low"] <= doc["detection"]["AP"] <= ci["high"] and ci["low"] < ci["high"]
    assert "AP_s" in doc["extra"]["bootstrap"]


def test_bootstrap_point_follows_the_runs_protocol() -> None:
    """The interval of an mmdet-protocol run is around the mmdet number the tables show (AP50 at 1,000
    detections per image differs from the COCO protocol's at 100 when an image holds more than 100)."""
    gt, dets = _random_case(3, seed=4)
    rng = np.random.default_rng(0)
    for im in gt["images"]:  # 150 extra low-score true positives per image: the 101st.. only count at maxDets 1000
        for _ in range(150):
            x, y = rng.uniform(0, 400, 2)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im["id"], "category_id": 1,
                                      "bbox": [float(x), float(y), 10.0, 10.0]})
            dets.append({"image_id": im["id"], "category_id": 1, "score": 0.001, "bbox": [float(x), float(y), 10, 10]})
    mm = coco_evaluate(gt, dets, protocol="mmdet")["AP50"]
    co = coco_evaluate(gt, dets, protocol="coco")["AP50"]
    assert mm > co + 0.05
    assert bootstrap_ci(gt, dets, metric="AP50", n_boot=5, protocol="mmdet")["point"] == pytest.approx(mm)
    assert bootstrap_ci(gt, dets, metric="AP50", n_boot=5)["point"] == pytest.approx(co)
