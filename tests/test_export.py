"""Exports: ultralytics labels/data.yaml and BasicSR paired folders from partition jsons."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data_prep.errors import DataError, UnknownClassError
from data_prep.export import MissingFileError, export_basicsr_pairs, export_yolo

CATS = [{"id": 1, "name": "vehicle", "supercategory": "demo"}, {"id": 2, "name": "ship", "supercategory": "demo"}]


def _part(path: Path, names: list[str], anns: list[dict], size: int = 64) -> Path:
    images = [{"id": i + 1, "file_name": f"images/{n}", "width": size, "height": size} for i, n in enumerate(names)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return path


def _ann(aid: int, image_id: int, cid: int, bbox: list[float]) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": cid, "bbox": bbox, "area": bbox[2] * bbox[3]}


def _images(d: Path, names: list[str], size: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(d / n)


@pytest.fixture()
def dataset(tmp_path: Path) -> dict:
    train = _part(tmp_path / "train.json", ["a.png", "b.png"], [
        _ann(1, 1, 1, [8, 16, 16, 8]),     # cx=16/64, cy=20/64, w=16/64, h=8/64
        _ann(2, 1, 2, [56, 0, 16, 32]),    # runs past the right edge: clipped to x 56..64
    ])
    val = _part(tmp_path / "val.json", ["c.png"], [_ann(3, 1, 2, [0, 0, 64, 64])])
    test = _part(tmp_path / "test.json", ["d.png"], [])
    _images(tmp_path / "hr", ["a.png", "b.png", "c.png", "d.png"], 64)
    _images(tmp_path / "lr", ["a.png", "b.png", "c.png", "d.png"], 32)
    return {"parts": {"train": train, "val": val, "test": test}, "root": tmp_path}


def test_yolo_labels_exact(dataset: dict) -> None:
    root = dataset["root"]
    data_yaml = export_yolo(dataset["parts"], root / "hr", root / "yolo")
    out = root / "yolo"
    assert data_yaml == out / "data.yaml"
    lines = (out / "labels" / "train" / "a.txt").read_text().splitlines()
    assert lines == ["0 0.250000 0.312500 0.250000 0.125000", "1 0.937500 0.250000 0.125000 0.500000"]
    assert (out / "labels" / "train" / "b.txt").read_text() == ""
    assert (out / "labels" / "val" / "c.txt").read_text() == "1 0.500000 0.500000 1.000000 1.000000\n"
    assert (out / "labels" / "test" / "d.txt").read_text() == ""
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["a.png", "b.png"]
    assert os.stat(out / "images" / "train" / "a.png").st_ino == os.stat(root / "hr" / "a.png").st_ino
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["path"] == str(out.resolve())
    assert (spec["train"], spec["val"], spec["test"]) == ("images/train", "images/val", "images/test")
    assert spec["names"] == {0: "vehicle", 1: "ship"} and spec["nc"] == 2


def test_yolo_lr_images_give_same_labels_and_copy_mode(dataset: dict) -> None:
    root = dataset["root"]
    export_yolo(dataset["parts"], root / "hr", root / "y_hr")
    export_yolo(dataset["parts"], root / "lr", root / "y_lr", link="copy")
    for part, name in (("train", "a"), ("val", "c")):
        hr = (root / "y_hr" / "labels" / part / f"{name}.txt").read_text()
        assert hr and hr == (root / "y_lr" / "labels" / part / f"{name}.txt").read_text()
    lr_img = root / "y_lr" / "images" / "train" / "a.png"
    assert Image.open(lr_img).size == (32, 32)
    assert os.stat(lr_img).st_ino != os.stat(root / "lr" / "a.png").st_ino
    export_yolo(dataset["parts"], root / "lr", root / "y_sym", link="symlink")
    assert (root / "y_sym" / "images" / "val" / "c.png").is_symlink()


def test_yolo_errors(dataset: dict) -> None:
    root = dataset["root"]
    (root / "hr" / "b.png").unlink()
    with pytest.raises(MissingFileError, match=r"train\.json.*image id 2.*b\.png"):
        export_yolo(dataset["parts"], root / "hr", root / "yolo")
    assert not (root / "yolo").exists()
    _images(root / "hr", ["b.png"], 64)
    bad = _part(root / "bad.json", ["a.png"], [_ann(77, 1, 5, [1, 1, 4, 4])])
    with pytest.raises(UnknownClassError, match=r"bad\.json.*annotation id 77"):
        export_yolo({**dataset["parts"], "val": bad}, root / "hr", root / "yolo")
    _images(root / "odd", ["a.png", "b.png", "c.png", "d.png"], 40)
    with pytest.raises(DataError, match=r"a\.png is 40x40.*64x64"):
        export_yolo(dataset["parts"], root / "odd", root / "yolo")
    with pytest.raises(ValueError, match="'val' part"):
        export_yolo({"train": dataset["parts"]["train"]}, root / "hr", root / "yolo")
    with pytest.raises(ValueError, match="hardlink, symlink, copy"):
        export_yolo(dataset["parts"], root / "hr", root / "yolo", link="move")


def test_yolo_accepted_by_ultralytics(dataset: dict) -> None:
    import sdconet  # noqa: F401  (offline defaults before ultralytics is imported)

    assert os.environ.get("YOLO_OFFLINE") == "1"
    check_det_dataset = pytest.importorskip("ultralytics.data.utils").check_det_dataset
    root = dataset["root"]
    data = check_det_dataset(str(export_yolo(dataset["parts"], root / "lr", root / "yolo")), autodownload=False)
    assert data["nc"] == 2 and data["names"] == {0: "vehicle", 1: "ship"}
    assert Path(data["train"]) == (root / "yolo" / "images" / "train").resolve()
    from ultralytics.data.utils import img2label_paths

    label = img2label_paths([str(root / "yolo" / "images" / "train" / "a.png")])[0]
    assert Path(label) == root / "yolo" / "labels" / "train" / "a.txt"


def test_basicsr_pairs(dataset: dict) -> None:
    root = dataset["root"]
    m = export_basicsr_pairs(dataset["parts"], root / "hr", root / "lr", root / "pairs")
    assert m["scale"] == 2 and m["counts"] == {"train": 2, "val": 1, "test": 1}
    for part, names in (("train", ["a.png", "b.png"]), ("val", ["c.png"]), ("test", ["d.png"])):
        assert sorted(p.name for p in (root / "pairs" / part / "HR").iterdir()) == names
        assert sorted(p.name for p in (root / "pairs" / part / "LR").iterdir()) == names
    assert Image.open(root / "pairs" / "train" / "LR" / "a.png").size == (32, 32)
    assert json.loads((root / "pairs" / "manifest.json").read_text())["scale"] == 2


def test_basicsr_pairs_errors(dataset: dict) -> None:
    root = dataset["root"]
    (root / "lr" / "c.png").unlink()
    with pytest.raises(MissingFileError, match=r"c\.png has no LR partner"):
        export_basicsr_pairs(dataset["parts"], root / "hr", root / "lr", root / "pairs")
    assert not (root / "pairs").exists()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "lr" / "c.png")
    with pytest.raises(DataError, match=r"c\.png: LR size 30x30 is not the HR size 64x64"):
        export_basicsr_pairs(dataset["parts"], root / "hr", root / "lr", root / "pairs")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "lr" / "c.png")
    with pytest.raises(DataError, match=r"c\.png: HR/LR scale 4 .* differs from the scale 2"):
        export_basicsr_pairs(dataset["parts"], root / "hr", root / "lr", root / "pairs")
