"""DOTA v1.5 and HRRSD parsers on small files in their official formats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_prep.convert import convert_dataset
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers.dota import load_dota, parse_dota_file, parse_dota_line
from data_prep.parsers.hrrsd import load_hrrsd, parse_hrrsd_xml

OBJ = "10.0 20.0 50.0 20.0 50.0 60.0 10.0 60.0 small-vehicle 0"


def _img(path: Path, size: tuple[int, int], fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path, fmt)


# ----------------------------------------------------------------------------------------- DOTA
@pytest.mark.parametrize("header", [
    "imagesource:GoogleEarth\ngsd:0.146343590398\n",
    "imagesource:GoogleEarth\ngsd:null\n",
    "imagesource:GF2\ngsd:0.1.2 garbage\n",
    "imagesource:JL1\ngsd:-1e999\n",
    "gsd:None\n",
    "imagesource:GoogleEarth\r\ngsd:0.5\r\n",
    "",
])
def test_dota_header_variants(tmp_path: Path, header: str) -> None:
    path = tmp_path / "P0001.txt"
    path.write_text(header + OBJ + "\n", newline="")
    objs = parse_dota_file(path)
    assert len(objs) == 1
    assert objs[0].bbox == (10.0, 20.0, 50.0, 60.0) and objs[0].category == "small-vehicle"
    assert objs[0].source == f"{path}:{header.count(chr(10)) + 1}"


def test_dota_rotated_polygon_bbox_and_difficult() -> None:
    obj = parse_dota_line("30 0 60 30 30 60 0 30 container-crane 1 ", "x.txt", 3)
    assert obj is not None and obj.bbox == (0.0, 0.0, 60.0, 60.0)
    assert obj.difficult == 1 and obj.category == "container-crane"
    nine = parse_dota_line("1 2 3 2 3 4 1 4 plane", "x.txt", 4)  # devkit: missing difficult == 0
    assert nine is not None and nine.difficult == 0
    assert parse_dota_line("   ", "x.txt", 5) is None


@pytest.mark.parametrize("line, exc, pattern", [
    ("10 20 50 20 50 60 10 60 car 0", UnknownClassError, r"P9\.txt:7: unknown DOTA v1\.5 category 'car'"),
    ("10 20 50 20 50 60 10 60 Small-Vehicle 0", UnknownClassError, r"P9\.txt:7"),
    ("10 20 50 20 50 60 small-vehicle 0", AnnotationError, r"P9\.txt:7: expected .* got 8 fields"),
    ("10 20 50 20 50 x 10 60 plane 0", AnnotationError, r"P9\.txt:7: non-numeric"),
    ("10 20 50 20 50 nan 10 60 plane 0", AnnotationError, r"P9\.txt:7: non-finite"),
    ("10 20 50 20 50 60 10 60 plane 2", AnnotationError, r"P9\.txt:7: difficult flag"),
])
def test_dota_bad_lines(line: str, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        parse_dota_line(line, "P9.txt", 7)


def _dota_root(tmp_path: Path) -> Path:
    root = tmp_path / "dota"
    _img(root / "train" / "images" / "P0001.png", (100, 80))
    _img(root / "val" / "images" / "P0002.png", (64, 64))
    _img(root / "test" / "images" / "P0003.png", (32, 32))
    (root / "train" / "labelTxt").mkdir(parents=True)
    (root / "val" / "labelTxt").mkdir(parents=True)
    (root / "train" / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:null\n"
        "-1.0 5.0 40.0 5.0 40.0 30.0 -1.0 30.0 plane 0\n"      # 1 px left of the image: clipped
        "90.0 70.0 101.0 70.0 101.0 81.0 90.0 81.0 ship 1\n"   # right/bottom outside: clipped
        "10.0 10.0 20.0 10.0 20.0 20.0 10.0 20.0 harbor 0\n")  # inside
    (root / "val" / "labelTxt" / "P0002.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.2\n"
        "70 70 80 70 80 80 70 80 bridge 0\n"                    # fully outside: dropped
        "1 1 9 1 9 9 1 9 roundabout 0")
    return root


def test_load_dota_layout_and_splits(tmp_path: Path) -> None:
    root = _dota_root(tmp_path)
    images = load_dota(root)
    assert [(im.file_name, im.split) for im in images] == [
        ("train/images/P0001.png", "train"), ("val/images/P0002.png", "val")]
    assert (images[0].width, images[0].height) == (100, 80)
    assert images[0].objects[0].bbox == (-1.0, 5.0, 40.0, 30.0)  # kept unclipped by the parser
    with_test = load_dota(root, include_unlabelled=True)
    assert [im.split for im in with_test] == ["test", "train", "val"]
    assert with_test[0].objects == [] and with_test[0].file_name == "test/images/P0003.png"


def test_dota_out_of_image_vertices_clipped_by_convert(tmp_path: Path) -> None:
    root = _dota_root(tmp_path)
    out = tmp_path / "dota.json"
    summary = convert_dataset("dota", root, out)
    assert summary["clipped_boxes"] == 2 and summary["dropped_boxes"] == 1
    assert summary["images"] == 2 and summary["annotations"] == 4
    coco = json.loads(out.read_text())
    boxes = {a["category_id"]: a["bbox"] for a in coco["annotations"]}
    assert boxes[1] == [0.0, 5.0, 40.0, 25.0]      # plane: x clipped from -1 to 0
    assert boxes[2] == [90.0, 70.0, 10.0, 10.0]    # ship: clipped to 100 x 80
    assert [a["difficult"] for a in coco["annotations"]] == [0, 1, 0, 0]
    assert all(im["width"] >= a["bbox"][0] + a["bbox"][2] for a in coco["annotations"]
               for im in coco["images"] if im["id"] == a["image_id"])


def test_dota_missing_label_and_missing_splits(tmp_path: Path) -> None:
    root = _dota_root(tmp_path)
    _img(root / "train" / "images" / "P0009.png", (10, 10))
    with pytest.raises(DataError, match=r"without an annotation file.*P0009\.png"):
        load_dota(root)
    with pytest.raises(DataError, match="none of"):
        load_dota(tmp_path / "empty")


def test_dota_unknown_category_in_file(tmp_path: Path) -> None:
    root = _dota_root(tmp_path)
    (root / "val" / "labelTxt" / "P0002.txt").write_text("gsd:1\n1 1 9 1 9 9 1 9 tank 0\n")
    with pytest.raises(UnknownClassError, match=r"P0002\.txt:2"):
        load_dota(root)


# ---------------------------------------------------------------------------------------- HRRSD
def _voc(filename: str, objects: list[tuple[str, int, tuple]], size: tuple[int, int] | None) -> str:
    size_xml = (f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
                if size else "")
    objs = "".join(
        f"<object><name>{n}</name><pose>overlook</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects)
    return (f"<annotation>\n\t<folder>OPTIMAL_Z</folder>\n\t<filename>{filename}</filename>\n"
            f"\t{size_xml}\n\t<segmented>0</segmented>\n\t{objs}\n</annotation>\n")


def _hrrsd_root(tmp_path: Path) -> Path:
    root = tmp_path / "hrrsd"
    base = root / "OPT2017"
    ann, main = base / "Annotations", base / "ImageSets" / "Main"
    ann.mkdir(parents=True)
    main.mkdir(parents=True)
    for stem, size in (("00001", (120, 100)), ("00002", (60, 50)), ("00003", (40, 30))):
        _img(base / "JPEGImages" / f"{stem}.jpg", size, "JPEG")
    (ann / "00001.xml").write_text(_voc("00001.jpg", [("T junction", 0, (1, 1, 10, 20)),
                                                     ("parking lot", 1, (50, 40, 120, 100))], (120, 100)))
    (ann / "00002.xml").write_text(_voc("00002.jpg", [("storage tank", 0, (5, 6, 7, 8))], None))  # no <size>
    (ann / "00003.xml").write_text(_voc("00003.jpg", [("vehicle", 0, (2, 2, 4, 4))], (0, 0)))   # zero size
    (main / "train.txt").write_text("00001\n")
    (main / "val.txt").write_text("00002\n\n")
    (main / "test.txt").write_text("")
    (main / "T junction_train.txt").write_text("00001 1\n")  # per-class lists are ignored
    return root


def test_hrrsd_xml_t_junction_difficult_and_voc_conversion(tmp_path: Path) -> None:
    root = _hrrsd_root(tmp_path)
    filename, w, h, objs = parse_hrrsd_xml(root / "OPT2017" / "Annotations" / "00001.xml")
    assert (filename, w, h) == ("00001.jpg", 120, 100)
    assert [o.category for o in objs] == ["T junction", "parking lot"]
    assert [o.difficult for o in objs] == [0, 1]
    assert objs[0].bbox == (0.0, 0.0, 10.0, 20.0)    # VOC 1-based inclusive -> 0-based corners
    assert objs[1].bbox == (49.0, 39.0, 120.0, 100.0)


def test_load_hrrsd_sizes_and_splits(tmp_path: Path) -> None:
    root = _hrrsd_root(tmp_path)
    images = load_hrrsd(root)
    assert [(im.file_name, im.width, im.height, im.split) for im in images] == [
        ("OPT2017/JPEGImages/00001.jpg", 120, 100, "train"),
        ("OPT2017/JPEGImages/00002.jpg", 60, 50, "val"),    # size from the image header
        ("OPT2017/JPEGImages/00003.jpg", 40, 30, None)]     # zero <size> -> header; in no list
    summary = convert_dataset("hrrsd", root, tmp_path / "h.json")
    coco = json.loads((tmp_path / "h.json").read_text())
    assert summary["annotations"] == 4 and summary["clipped_boxes"] == 0
    first = coco["annotations"][0]
    assert first["bbox"] == [0.0, 0.0, 10.0, 20.0] and first["area"] == 200.0  # 10 px = xmax-xmin+1
    assert first["category_id"] == 11                                          # "T junction"


@pytest.mark.parametrize("text, exc, pattern", [
    ("<annotation><object><name>airplane</name>", AnnotationError, r"00001\.xml:1: malformed XML"),
    (_voc("00001.jpg", [("T-junction_x", 0, (1, 1, 2, 2))], (9, 9)), UnknownClassError, r"00001\.xml.*object 0"),
    (_voc("00001.jpg", [("ship", 0, (1, "a", 2, 2))], (9, 9)), AnnotationError, r"00001\.xml.*<ymin> is not"),
    (_voc("00001.jpg", [("ship", 3, (1, 1, 2, 2))], (9, 9)), AnnotationError, r"00001\.xml.*<difficult>"),
    ("<voc/>", AnnotationError, r"00001\.xml.*expected <annotation>"),
])
def test_hrrsd_bad_xml_names_file(tmp_path: Path, text: str, exc: type, pattern: str) -> None:
    path = tmp_path / "00001.xml"
    path.write_text(text)
    with pytest.raises(exc, match=pattern):
        parse_hrrsd_xml(path)


def test_hrrsd_tolerant_class_spelling(tmp_path: Path) -> None:
    path = tmp_path / "00001.xml"
    path.write_text(_voc("00001.jpg", [("t_junction", 0, (1, 1, 2, 2)), (" Storage  Tank ", 0, (1, 1, 2, 2))],
                         (9, 9)))
    assert [o.category for o in parse_hrrsd_xml(path)[3]] == ["T junction", "storage tank"]


def test_hrrsd_missing_image_and_conflicting_lists(tmp_path: Path) -> None:
    root = _hrrsd_root(tmp_path)
    main = root / "OPT2017" / "ImageSets" / "Main"
    (main / "test.txt").write_text("00001\n")
    with pytest.raises(DataError, match=r"test\.txt: image '00001' is already listed in train"):
        load_hrrsd(root)
    (main / "test.txt").write_text("")
    (root / "OPT2017" / "JPEGImages" / "00003.jpg").unlink()
    with pytest.raises(DataError, match=r"without a matching image.*00003\.xml"):
        load_hrrsd(root)
