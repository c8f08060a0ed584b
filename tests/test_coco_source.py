"""A user dataset given as a COCO json + image folder (``source: coco``): validation, classes, conversion."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from data_prep.classes import NWPU_CLASSES, dataset_classes
from data_prep.cli import main
from data_prep.convert import convert_coco
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers.coco import coco_class_names, load_coco
from data_prep.partition import partition_tiles
from data_prep.split import split_dataset

# Listed out of id order, ids not contiguous: the suite's order is by id (boat, car, tank).
CATEGORIES = [{"id": 9, "name": "tank", "supercategory": "structure"}, {"id": 2, "name": "boat"},
              {"id": 5, "name": "car"}]


def make_coco(root: Path) -> tuple[Path, Path, dict]:
    """``root/instances.json`` + ``root/imgs/{sub/a.png, b.jpg}`` (100x80 and 64x64)."""
    imgs = root / "imgs"
    (imgs / "sub").mkdir(parents=True)
    Image.new("RGB", (100, 80), (90, 90, 90)).save(imgs / "sub" / "a.png")
    Image.new("RGB", (64, 64), (10, 90, 10)).save(imgs / "b.jpg")
    data = {
        "info": {"description": "user data"},
        "images": [{"id": 40, "file_name": "sub/a.png", "width": 100, "height": 80},
                   {"id": 7, "file_name": "b.jpg"}],  # size read from the file
        "annotations": [
            {"id": 1, "image_id": 40, "category_id": 5, "bbox": [10, 20, 30, 10], "area": 1, "iscrowd": 0,
             "segmentation": [[10, 20, 40, 20, 40, 30]]},
            {"id": 2, "image_id": 40, "category_id": 9, "bbox": [90, 70, 20, 20]},    # clipped to 10 x 10
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [100, 0, 10, 10]},     # outside: dropped
            {"id": 4, "image_id": 7, "category_id": 2, "bbox": [1.5, 2.5, 4, 6], "difficult": 1},
            {"id": 5, "image_id": 7, "category_id": 9, "bbox": [0, 0, 64, 64], "iscrowd": 1},  # left out
        ],
        "categories": copy.deepcopy(CATEGORIES),
    }
    ann = root / "instances.json"
    ann.write_text(json.dumps(data))
    return ann, imgs, data


def test_convert_coco_classes_ids_and_boxes(tmp_path: Path) -> None:
    ann, imgs, _ = make_coco(tmp_path)
    out = tmp_path / "coco.json"
    summary = convert_coco(ann, imgs, out, name="harbour")
    coco = json.loads(out.read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "boat", "supercategory": "harbour", "source_id": 2},
        {"id": 2, "name": "car", "supercategory": "harbour", "source_id": 5},
        {"id": 3, "name": "tank", "supercategory": "structure", "source_id": 9}]
    assert coco["info"]["dataset"] == "harbour" and coco["info"]["annotations"] == str(ann.resolve())
    assert coco["info"]["root"] == str(imgs.resolve())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "b.jpg", 64, 64), (2, "sub/a.png", 100, 80)]
    anns = [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["difficult"]) for a in coco["annotations"]]
    assert anns == [(1, 1, [1.5, 2.5, 4.0, 6.0], 24.0, 1), (2, 2, [10.0, 20.0, 30.0, 10.0], 300.0, 0),
                    (2, 3, [90.0, 70.0, 10.0, 10.0], 100.0, 0)]
    assert all(a["iscrowd"] == 0 for a in coco["annotations"])
    assert summary == {"images": 2, "annotations": 3, "clipped_boxes": 1, "dropped_boxes": 1,
                       "skipped_images": [], "crowd_boxes": 1}
    assert coco["summary"] == summary


def test_classes_come_from_the_json(tmp_path: Path) -> None:
    ann, _, _ = make_coco(tmp_path)
    assert coco_class_names(ann) == ("boat", "car", "tank")
    assert dataset_classes({"source": "coco", "annotations": "instances.json"},
                           resolve=lambda p: tmp_path / p) == ("boat", "car", "tank")
    assert dataset_classes({"source": "nwpu"}) == NWPU_CLASSES
    with pytest.raises(DataError, match="needs the config key 'annotations'"):
        dataset_classes({"source": "coco"})
    with pytest.raises(DataError, match=r"coco dataset: annotations 'nope.json' not found \(resolved to .*nope"):
        dataset_classes({"source": "coco", "annotations": "nope.json"}, resolve=lambda p: tmp_path / p)
    with pytest.raises(DataError, match="unknown dataset source 'voc'"):
        dataset_classes({"source": "voc"})


def test_tiles_and_partition_keep_the_json_classes(tmp_path: Path) -> None:
    ann, imgs, _ = make_coco(tmp_path)
    convert_coco(ann, imgs, tmp_path / "coco.json", name="harbour")
    split_dataset(tmp_path / "coco.json", imgs, tmp_path / "tiles", tile=64, gap=0, workers=1, progress=False)
    partition_tiles(tmp_path / "tiles" / "annotations.json", tmp_path / "part",
                    ratios={"train": 1.0, "val": 0.0, "test": 0.0}, min_source_images=0)
    train = json.loads((tmp_path / "part" / "train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["boat", "car", "tank"]
    assert {a["category_id"] for a in train["annotations"]} <= {1, 2, 3} and train["annotations"]


def _broken(tmp_path: Path, edit) -> tuple[Path, Path]:
    ann, imgs, data = make_coco(tmp_path)
    edit(data)
    ann.write_text(json.dumps(data))
    return ann, imgs


@pytest.mark.parametrize("edit, error, pattern", [
    (lambda d: d["annotations"][3].update(bbox=[1, 2, 3]), AnnotationError,
     r"instances\.json: annotations\[3\] \(id 4\): 'bbox' must be \[x, y, w, h\]"),
    (lambda d: d["annotations"][3].update(bbox=[1, 2, -3, 4]), AnnotationError,
     r"annotations\[3\] \(id 4\): 'bbox' .* negative width"),
    (lambda d: d["annotations"][1].update(category_id=3), UnknownClassError,
     r"annotations\[1\] \(id 2\): category_id 3 is not the id of an entry of 'categories' \[2, 5, 9\]"),
    (lambda d: d["annotations"][0].update(image_id=99), AnnotationError,
     r"annotations\[0\] \(id 1\): image_id 99 is not the id"),
    (lambda d: d["annotations"][4].update(id=1), AnnotationError, r"annotations\[4\]: duplicate annotation id 1"),
    (lambda d: d["annotations"][2].pop("id"), AnnotationError, r"annotations\[2\]: 'id' must be an integer"),
    (lambda d: d["annotations"][2].update(iscrowd=2), AnnotationError, r"\(id 3\): 'iscrowd' must be 0 or 1"),
    (lambda d: d["categories"].append({"id": 11, "name": "car"}), AnnotationError,
     r"categories\[3\] \(id 11\): duplicate category name 'car' \(also id 5\)"),
    (lambda d: d["categories"][1].update(name=""), AnnotationError, r"categories\[1\] \(id 2\): 'name' must be"),
    (lambda d: d["categories"].clear(), AnnotationError, r"categories: empty"),
    (lambda d: d.pop("categories"), AnnotationError, r"top level: missing key 'categories'"),
    (lambda d: d["images"][1].update(file_name="../b.jpg"), AnnotationError,
     r"images\[1\] \(id 7\): 'file_name' must be a relative POSIX path"),
    (lambda d: d["images"][1].update(id=40), AnnotationError, r"images\[1\] \(id 40\): duplicate image id 40"),
    (lambda d: d["images"][0].update(width=99), AnnotationError,
     r"images\[0\] \(id 40\): width x height 99x80 differs from the file .*a\.png \(100x80\)"),
    (lambda d: d["images"].append({"id": 8, "file_name": "gone.png"}), DataError,
     r"instances\.json: 1 listed image\(s\) not found under .*imgs, e.g. 'gone.png'"),
])
def test_malformed_entries_name_file_and_entry(tmp_path: Path, edit, error, pattern) -> None:
    ann, imgs = _broken(tmp_path, edit)
    with pytest.raises(error, match=pattern):
        convert_coco(ann, imgs, tmp_path / "coco.json")
    assert not (tmp_path / "coco.json").exists()


def test_unreadable_json_and_missing_folder(tmp_path: Path) -> None:
    ann, imgs, _ = make_coco(tmp_path)
    with pytest.raises(DataError, match="image folder .*directory not found"):
        load_coco(ann, tmp_path / "nope")
    ann.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(AnnotationError, match=r"instances\.json:2: invalid json"):
        load_coco(ann, imgs)


def test_corrupt_image_is_skipped_with_its_boxes(tmp_path: Path) -> None:
    ann, imgs, _ = make_coco(tmp_path)
    (imgs / "b.jpg").write_bytes(b"not an image")
    summary = convert_coco(ann, imgs, tmp_path / "coco.json")
    assert summary["images"] == 1 and summary["annotations"] == 2
    assert [s["file"] for s in summary["skipped_images"]] == ["b.jpg"]


def test_cli_convert_coco(tmp_path: Path, capsys) -> None:
    ann, imgs, _ = make_coco(tmp_path)
    out = tmp_path / "coco.json"
    assert main(["convert", "--dataset", "coco", "--root", str(imgs), "--annotations", str(ann), "--out", str(out),
                 "--name", "harbour"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations"] == 3
    assert json.loads(out.read_text())["info"]["dataset"] == "harbour"
    assert main(["convert", "--dataset", "coco", "--root", str(imgs), "--out", str(out)]) == 2
    assert "needs --annotations" in capsys.readouterr().err
