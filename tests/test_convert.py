"""COCO conversion (docs/formats.md section 1), the demo loader and the real NWPU VHR-10 conversion."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_prep.classes import CLASSES, DEMO_CLASSES, categories
from data_prep.convert import build_coco, clip_box, convert_dataset
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import RawImage, RawObject
from data_prep.parsers.demo import load_demo, parse_demo_json

PROV = {"git_sha": "test"}


def _images() -> list[RawImage]:
    return [
        RawImage("b.png", 100, 50, [RawObject((10, 10, 20, 30), "ship", 1, "b.txt:1"),
                                    RawObject((-5, -5, 10, 5), "airplane", 0, "b.txt:2"),       # clipped
                                    RawObject((95.5, 40, 130, 60), "vehicle", 0, "b.txt:3")]),  # clipped
        RawImage("a.png", 64, 64, [RawObject((1.5, 2.25, 3.75, 9.5), "storage tank")], split="train"),
        RawImage("c.png", 30, 30, [RawObject((40, 0, 50, 10), "vehicle", 0, "c.txt:1"),          # outside
                                   RawObject((5, 5, 5, 9), "ship", 0, "c.txt:2"),                 # zero width
                                   RawObject((9, 9, 4, 12), "ship", 0, "c.txt:3")]),              # inverted
        RawImage("d.png", 10, 10, [], negative=True),
    ]


def test_build_coco_invariants() -> None:
    coco = build_coco(_images(), "demo", Path("/data/demo"), prov=PROV)
    assert list(coco) == ["info", "categories", "images", "annotations", "summary"]
    assert coco["info"] == {"dataset": "demo", "root": str(Path("/data/demo").resolve()), "provenance": PROV}
    assert coco["categories"] == categories("demo")
    assert [c["name"] for c in coco["categories"]] == list(DEMO_CLASSES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png", "c.png", "d.png"]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4]
    assert coco["images"][0] == {"id": 1, "file_name": "a.png", "width": 64, "height": 64,
                                 "negative": False, "split": "train"}
    assert coco["images"][3]["negative"] is True
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    assert [a["image_id"] for a in anns] == [1, 2, 2, 2]
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    for a in anns:
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, float) for v in a["bbox"])
        assert a["area"] == w * h and w > 0 and h > 0 and a["iscrowd"] == 0
        assert 0 <= x and 0 <= y and x + w <= sizes[a["image_id"]][0] and y + h <= sizes[a["image_id"]][1]
    assert anns[0]["bbox"] == [1.5, 2.25, 2.25, 7.25] and anns[0]["category_id"] == 3
    assert anns[1]["category_id"] == 2 and anns[1]["difficult"] == 1
    assert anns[2]["bbox"] == [0.0, 0.0, 10.0, 5.0]
    assert anns[3]["bbox"] == [95.5, 40.0, 4.5, 10.0]
    assert coco["summary"] == {"images": 4, "annotations": 4, "clipped_boxes": 2, "dropped_boxes": 3,
                               "skipped_images": []}


def test_build_coco_errors() -> None:
    with pytest.raises(UnknownClassError, match=r"x\.txt:4.*'tank'"):
        build_coco([RawImage("a.png", 9, 9, [RawObject((0, 0, 1, 1), "tank", 0, "x.txt:4")])], "demo",
                   Path("."), prov=PROV)
    with pytest.raises(DataError, match="duplicate image file name 'a.png'"):
        build_coco([RawImage("a.png", 9, 9), RawImage("a.png", 9, 9)], "demo", Path("."), prov=PROV)
    with pytest.raises(DataError, match="negative image"):
        build_coco([RawImage("a.png", 9, 9, [RawObject((0, 0, 1, 1), "ship")], negative=True)], "demo",
                   Path("."), prov=PROV)
    with pytest.raises(KeyError, match="unknown dataset"):
        build_coco([], "coco", Path("."), prov=PROV)


def test_clip_box() -> None:
    assert clip_box((-1, 2, 5, 99), 10, 20) == ((0.0, 2.0, 5.0, 20.0), True)
    assert clip_box((0, 0, 10, 20), 10, 20) == ((0.0, 0.0, 10.0, 20.0), False)


@pytest.mark.parametrize("dataset", sorted(CLASSES))
def test_categories_follow_class_lists(dataset: str) -> None:
    coco = build_coco([], dataset, Path("."), prov=PROV)
    assert [(c["id"], c["name"]) for c in coco["categories"]] == list(enumerate(CLASSES[dataset], start=1))
    assert coco["summary"]["images"] == 0 and coco["annotations"] == []


# ----------------------------------------------------------------------------------------- demo
def _demo_root(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 48)).save(root / "images" / f"demo_{i:04d}.png")
    data = {"classes": list(DEMO_CLASSES), "images": [
        {"file_name": "images/demo_0001.png", "width": 64, "height": 48, "split": "val",
         "objects": [{"bbox": [60, 40, 70, 50], "category": "ship", "angle": 0.0}]},
        {"file_name": "images/demo_0000.png", "width": 64, "height": 48, "split": None,
         "objects": [{"bbox": [1, 2, 11, 12.5], "category": "vehicle", "angle": 12.5},
                     {"bbox": [5, 5, 9, 9], "category": "airplane"}]}]}
    (root / "demo_annotations.json").write_text(json.dumps(data))
    return root


def test_demo_loader_and_convert(tmp_path: Path) -> None:
    root = _demo_root(tmp_path)
    images = load_demo(root)
    assert [im.file_name for im in images] == ["images/demo_0000.png", "images/demo_0001.png"]
    assert images[0].objects[0].bbox == (1.0, 2.0, 11.0, 12.5) and images[1].split == "val"
    out = tmp_path / "out" / "demo.json"
    summary = convert_dataset("demo", root, out)
    assert summary == {"images": 2, "annotations": 3, "clipped_boxes": 1, "dropped_boxes": 0,
                       "skipped_images": []}
    coco = json.loads(out.read_text())
    assert coco["info"]["provenance"]["config"]["dataset"] == "demo"
    assert coco["info"]["root"] == str(root.resolve())
    assert [a["category_id"] for a in coco["annotations"]] == [1, 4, 2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.json"]  # no temp files left


@pytest.mark.parametrize("mutate, exc, pattern", [
    (lambda d: d.pop("classes"), AnnotationError, r"top level: missing key 'classes'"),
    (lambda d: d.pop("images"), AnnotationError, r"top level: missing key 'images'"),
    (lambda d: d["images"][1].pop("width"), AnnotationError, r"images\[1\]: missing key 'width'"),
    (lambda d: d["images"][0].pop("objects"), AnnotationError, r"images\[0\]: missing key 'objects'"),
    (lambda d: d["images"][1]["objects"][1].pop("bbox"), AnnotationError,
     r"images\[1\]\.objects\[1\]: missing key 'bbox'"),
    (lambda d: d["images"][0]["objects"][0].update(bbox=[1, 2, 3]), AnnotationError,
     r"images\[0\]\.objects\[0\]\.bbox"),
    (lambda d: d["images"][1]["objects"][0].update(category="tank"), UnknownClassError,
     r"images\[1\]\.objects\[0\]\.category: unknown demo class 'tank'"),
    (lambda d: d["images"][0].update(height=0), AnnotationError, r"images\[0\]\.height"),
    (lambda d: d["images"][0].update(split="holdout"), AnnotationError, r"images\[0\]\.split"),
    (lambda d: d.update(classes=["vehicle", "boat"]), UnknownClassError, r"classes: \['boat'\]"),
])
def test_demo_key_errors(tmp_path: Path, mutate, exc: type, pattern: str) -> None:
    path = _demo_root(tmp_path) / "demo_annotations.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(exc, match=pattern) as info:
        load_demo(path.parent)
    assert "demo_annotations.json" in str(info.value)
    with pytest.raises(exc, match=pattern):
        parse_demo_json(data, path)


def test_demo_missing_files(tmp_path: Path) -> None:
    root = _demo_root(tmp_path)
    (root / "images" / "demo_0001.png").unlink()
    with pytest.raises(DataError, match="demo_0001.png"):
        load_demo(root)
    assert len(load_demo(root, check_images=False)) == 2
    (root / "demo_annotations.json").write_text("{not json")
    with pytest.raises(AnnotationError, match=r"demo_annotations\.json:1: invalid json"):
        load_demo(root)
    with pytest.raises(DataError, match="not found"):
        load_demo(tmp_path / "nowhere")


def test_convert_dataset_rejects_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        convert_dataset("coco", tmp_path, tmp_path / "x.json")


# ------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_convert_real_nwpu(nwpu_root: Path, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "nwpu.json"
    summary = convert_dataset("nwpu", nwpu_root, out)
    assert summary == {"images": 800, "annotations": 3896, "clipped_boxes": 0, "dropped_boxes": 0,
                       "skipped_images": []}
    coco = json.loads(out.read_text())
    negatives = [im for im in coco["images"] if im["negative"]]
    assert len(coco["images"]) == 800 and len(negatives) == 150
    assert all(im["file_name"].startswith("negative image set/") for im in negatives)
    with_anns = {a["image_id"] for a in coco["annotations"]}
    assert not with_anns & {im["id"] for im in negatives} and len(with_anns) == 650
    per_class = Counter(a["category_id"] for a in coco["annotations"])
    assert [per_class[i] for i in range(1, 11)] == [757, 302, 655, 390, 524, 159, 163, 224, 124, 598]
    assert coco["images"][150] == {"id": 151, "file_name": "positive image set/001.jpg", "width": 958,
                                   "height": 808, "negative": False, "split": None}
    assert coco["info"]["provenance"]["config"]["dataset"] == "nwpu"
    api = COCO(str(out))
    assert len(api.getImgIds()) == 800 and len(api.getAnnIds()) == 3896
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == list(CLASSES["nwpu"])
    # the parent folder (holding "NWPU VHR-10 dataset/") is accepted as root too
    assert convert_dataset("nwpu", nwpu_root.parent, tmp_path / "again.json")["annotations"] == 3896
