"""Parser of the synthetic demo dataset (``ROOT/demo_annotations.json``).

Format (written by the demo generator)::

    {"classes": ["vehicle", ...],
     "images": [{"file_name": "images/demo_0000.png", "width": W, "height": H, "split": null,
                 "objects": [{"bbox": [x1, y1, x2, y2], "category": "vehicle", "angle": 12.5}]}]}

``bbox`` holds 0-based pixel corners; ``angle`` (optional) is ignored by the COCO conversion. Every
error names the json key path, e.g. ``images[3].objects[0].bbox``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from data_prep.classes import DEMO_CLASSES
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import RawImage, RawObject, read_json

ANNOTATION_FILE = "demo_annotations.json"
SPLITS = (None, "train", "val", "test")


def _get(obj: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise AnnotationError(path, None, f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise AnnotationError(path, None, f"{where}: missing key {key!r}")
    return obj[key]


def _positive_int(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AnnotationError(path, None, f"{where}: expected a positive integer, got {value!r}")
    return value


def _parse_object(obj: Any, where: str, path: Path) -> RawObject:
    bbox = _get(obj, "bbox", where, path)
    numbers = isinstance(bbox, list) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not numbers:
        raise AnnotationError(path, None, f"{where}.bbox: expected [x1, y1, x2, y2] (4 finite numbers), "
                                          f"got {bbox!r}")
    category = _get(obj, "category", where, path)
    if category not in DEMO_CLASSES:
        raise UnknownClassError(path, None, f"{where}.category: unknown demo class {category!r}; "
                                            f"expected one of {list(DEMO_CLASSES)}")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return RawObject((x1, y1, x2, y2), category, 0, f"{path}#{where}")


def parse_demo_json(data: Any, path: Path) -> list[RawImage]:
    """Validate the loaded json ``data`` (from ``path``) and return its images (unsorted)."""
    classes = _get(data, "classes", "top level", path)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise AnnotationError(path, None, f"classes: expected a list of names, got {classes!r}")
    unknown = [c for c in classes if c not in DEMO_CLASSES]
    if unknown:
        raise UnknownClassError(path, None, f"classes: {unknown} not in data_prep.classes.DEMO_CLASSES "
                                            f"{list(DEMO_CLASSES)}")
    images = _get(data, "images", "top level", path)
    if not isinstance(images, list):
        raise AnnotationError(path, None, f"images: expected a list, got {type(images).__name__}")
    out = []
    for i, img in enumerate(images):
        where = f"images[{i}]"
        file_name = _get(img, "file_name", where, path)
        if not isinstance(file_name, str) or not file_name or file_name.startswith("/") or "\\" in file_name:
            raise AnnotationError(path, None, f"{where}.file_name: expected a relative POSIX path, "
                                              f"got {file_name!r}")
        width = _positive_int(_get(img, "width", where, path), f"{where}.width", path)
        height = _positive_int(_get(img, "height", where, path), f"{where}.height", path)
        split = img.get("split")
        if split not in SPLITS:
            raise AnnotationError(path, None, f"{where}.split: expected one of {list(SPLITS)}, got {split!r}")
        objects = _get(img, "objects", where, path)
        if not isinstance(objects, list):
            raise AnnotationError(path, None, f"{where}.objects: expected a list, got {type(objects).__name__}")
        raws = [_parse_object(o, f"{where}.objects[{j}]", path) for j, o in enumerate(objects)]
        out.append(RawImage(file_name, width, height, raws, negative=False, split=split))
    return out


def load_demo(root: str | Path, check_images: bool = True) -> list[RawImage]:
    """Read ``ROOT/demo_annotations.json`` into RawImages sorted by file name.

    With ``check_images`` every listed image must exist under ``root`` (DataError otherwise).
    """
    root = Path(root)
    path = root / ANNOTATION_FILE
    if not path.is_file():
        raise DataError(f"demo dataset: {path} not found (generate the demo dataset first)")
    data = read_json(path)
    images = parse_demo_json(data, path)
    if check_images:
        missing = [im.file_name for im in images if not (root / im.file_name).is_file()]
        if missing:
            raise DataError(f"demo dataset at {root}: {len(missing)} listed image(s) missing, e.g. {missing[:5]}")
    images.sort(key=lambda im: im.file_name)
    return images


__all__ = ["ANNOTATION_FILE", "load_demo", "parse_demo_json"]
