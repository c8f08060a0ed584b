"""HRRSD parser (Pascal VOC XML, official repo CrazyStoneonRoad/TGRS-HRRSD-Dataset).

Layout under ``root``::

    OPT2017/Annotations/00001.xml          OPT2017/JPEGImages/00001.jpg
    OPT2017/ImageSets/Main/{train,val,test}.txt   (one image id per line)

Object names are the class names with spaces, e.g. ``<name>T junction</name>`` (checked against
the official XML files; see ``data_prep.classes.HRRSD_CLASSES``).

Coordinates: VOC ``bndbox`` values are 1-based and inclusive (a box covering pixel columns 0..9 is
written ``xmin=1, xmax=10``). They are converted to 0-based pixel-corner coordinates with
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (so width = xmax - xmin + 1).

The image size comes from ``<size>``; when it is missing or zero the image header is read (an
unreadable image is then skipped, or CorruptImageError when ``strict``). ``split`` comes from the
ImageSets lists (``trainval.txt`` and per-class lists are ignored); an image in no list has
``split=None``.
"""
from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from data_prep.classes import HRRSD_CLASSES
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import RawImage, RawObject, list_files, read_image_size, rel_posix, require_dir

log = logging.getLogger(__name__)

SUBDIR = "OPT2017"
SPLITS = ("train", "val", "test")
# tolerant lookup: case, underscores and repeated spaces do not matter ("t_junction" -> "T junction")
_CLASS_KEY = {re.sub(r"[\s_]+", " ", n).strip().lower(): n for n in HRRSD_CLASSES}


def _class_name(raw: str) -> str | None:
    return _CLASS_KEY.get(re.sub(r"[\s_]+", " ", raw).strip().lower())


def _text(elem: ET.Element, tag: str) -> str | None:
    child = elem.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _number(elem: ET.Element, tag: str, path: Path, where: str) -> float:
    raw = _text(elem, tag)
    if raw is None:
        raise AnnotationError(path, None, f"{where}: missing <{tag}>")
    try:
        value = float(raw)
    except ValueError:
        raise AnnotationError(path, None, f"{where}: <{tag}> is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(path, None, f"{where}: <{tag}> is not finite: {raw!r}")
    return value


def parse_hrrsd_xml(path: Path) -> tuple[str | None, int, int, list[RawObject]]:
    """``(filename, width, height, objects)`` of one VOC XML file (width/height 0 when absent).

    Boxes are converted from VOC 1-based inclusive to 0-based corners (see module docstring).
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(path, exc.position[0], f"malformed XML: {exc}") from None
    if root.tag != "annotation":
        raise AnnotationError(path, None, f"root element is <{root.tag}>, expected <annotation>")
    width = height = 0
    size = root.find("size")
    if size is not None and _text(size, "width") and _text(size, "height"):
        width = int(_number(size, "width", path, "<size>"))
        height = int(_number(size, "height", path, "<size>"))
    objects = []
    for i, obj in enumerate(root.iter("object")):
        where = f"object {i}"
        raw_name = _text(obj, "name")
        if not raw_name:
            raise AnnotationError(path, None, f"{where}: missing <name>")
        name = _class_name(raw_name)
        if name is None:
            raise UnknownClassError(path, None, f"{where}: unknown HRRSD class {raw_name!r}; "
                                                f"expected one of {list(HRRSD_CLASSES)}")
        box = obj.find("bndbox")
        if box is None:
            raise AnnotationError(path, None, f"{where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, t, path, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        diff_raw = _text(obj, "difficult") or "0"
        if diff_raw not in ("0", "1"):
            raise AnnotationError(path, None, f"{where}: <difficult> must be 0 or 1, got {diff_raw!r}")
        objects.append(RawObject((xmin - 1.0, ymin - 1.0, xmax, ymax), name, int(diff_raw), f"{path}#{where}"))
    return _text(root, "filename"), width, height, objects


def read_image_sets(main_dir: Path) -> dict[str, str]:
    """Image id -> split from ``{train,val,test}.txt``; an id in two lists raises DataError."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        path = main_dir / f"{split}.txt"
        if not path.is_file():
            log.warning("HRRSD split list %s not found: its images get split=None", path)
            continue
        for line in path.read_text(encoding="utf-8-sig").split("\n"):
            tokens = line.split()
            if not tokens:
                continue
            image_id = tokens[0]
            if split_of.get(image_id, split) != split:
                raise DataError(f"{path}: image {image_id!r} is already listed in {split_of[image_id]}.txt")
            split_of[image_id] = split
    return split_of


def _image_path(jpeg_dir: Path, stem: str, filename: str | None) -> Path:
    candidates = [jpeg_dir / Path(filename).name] if filename else []
    candidates += [jpeg_dir / f"{stem}{ext}" for ext in (".jpg", ".jpeg", ".png", ".JPG")]
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_hrrsd(root: str | Path, strict: bool = False, skipped: list[dict] | None = None) -> list[RawImage]:
    """Load every annotated HRRSD image (one per XML file), sorted by file name.

    An XML file whose image is missing raises DataError (all missing images are listed).
    """
    root = Path(root)
    base = require_dir(root / SUBDIR, "HRRSD")
    xmls = list_files(require_dir(base / "Annotations", "HRRSD annotations"), ".xml")
    jpeg_dir = require_dir(base / "JPEGImages", "HRRSD images")
    if not xmls:
        raise DataError(f"HRRSD at {root}: no XML files in {base / 'Annotations'}")
    split_of = read_image_sets(base / "ImageSets" / "Main")
    out: list[RawImage] = []
    missing: list[str] = []
    for stem, xml_path in xmls.items():
        filename, width, height, objects = parse_hrrsd_xml(xml_path)
        img_path = _image_path(jpeg_dir, stem, filename)
        if not img_path.is_file():
            missing.append(f"{xml_path.name} -> {img_path}")
            continue
        rel = rel_posix(img_path, root)
        if width <= 0 or height <= 0:
            size = read_image_size(img_path, rel, strict, skipped)
            if size is None:
                continue
            width, height = size
        out.append(RawImage(rel, width, height, objects, split=split_of.get(stem)))
    if missing:
        raise DataError(f"HRRSD at {root}: {len(missing)} annotation file(s) without a matching image, "
                        f"e.g. {', '.join(missing[:5])}")
    unknown = sorted(set(split_of) - set(xmls))
    if unknown:
        log.warning("HRRSD ImageSets list %d id(s) without an XML file, e.g. %s", len(unknown), unknown[:5])
    out.sort(key=lambda im: im.file_name)
    return out


__all__ = ["load_hrrsd", "parse_hrrsd_xml", "read_image_sets"]
