"""DOTA v1.5 parser (labelTxt, oriented polygons -> horizontal boxes).

Layout under ``root``::

    train/images/P0000.png   train/labelTxt/P0000.txt
    val/images/P0003.png     val/labelTxt/P0003.txt
    test/images/P0006.png    (labels are private: included only with include_unlabelled=True)

A label file may start with ``imagesource:...`` and ``gsd:...`` header lines (the gsd value is
sometimes ``null`` or garbage: headers are ignored), then one object per line::

    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

(the DOTA devkit also accepts a missing ``difficult``, meaning 0). The horizontal box is the
polygon's bounding box; the polygon itself is kept too (``RawObject.polygon``, the converted json's
``segmentation``) so that tiling measures the object on it, as DOTA_devkit does. Vertices slightly
outside the image are kept here; ``build_coco`` clips the box (not the polygon) and counts
``clipped_boxes``.
"""
from __future__ import annotations

import math
from pathlib import Path

from data_prep.classes import DOTA15_CLASSES
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import (RawImage, RawObject, check_pairs, list_files, list_images,
                               read_annotation_lines, read_image_size, rel_posix, require_dir)

LABELLED_SPLITS = ("train", "val")
UNLABELLED_SPLIT = "test"
HEADER_KEYS = ("imagesource", "gsd")
_CLASSES = frozenset(DOTA15_CLASSES)


def _is_header(text: str) -> bool:
    key, sep, _ = text.partition(":")
    return bool(sep) and key.strip().strip("'\"").lower() in HEADER_KEYS


def parse_dota_line(line: str, path: object, lineno: int) -> RawObject | None:
    """One labelTxt line -> RawObject with the polygon's bounding box; None for blank/header lines."""
    text = line.strip().lstrip("\ufeff")
    if not text or _is_header(text):
        return None
    tokens = text.split()
    if len(tokens) not in (9, 10):
        raise AnnotationError(path, lineno, f"expected 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult' "
                                            f"(10 fields), got {len(tokens)} fields: {text!r}")
    try:
        coords = [float(t) for t in tokens[:8]]
    except ValueError:
        raise AnnotationError(path, lineno, f"non-numeric polygon coordinate in {text!r}") from None
    if not all(math.isfinite(c) for c in coords):
        raise AnnotationError(path, lineno, f"non-finite polygon coordinate in {text!r}")
    category = tokens[8]
    if category not in _CLASSES:
        raise UnknownClassError(path, lineno, f"unknown DOTA v1.5 category {category!r}; "
                                              f"expected one of {list(DOTA15_CLASSES)}")
    difficult = 0
    if len(tokens) == 10:
        if tokens[9] not in ("0", "1"):
            raise AnnotationError(path, lineno, f"difficult flag must be 0 or 1, got {tokens[9]!r}")
        difficult = int(tokens[9])
    xs, ys = coords[0::2], coords[1::2]
    return RawObject((min(xs), min(ys), max(xs), max(ys)), category, difficult, f"{path}:{lineno}", tuple(coords))


def parse_dota_file(path: Path) -> list[RawObject]:
    """All objects of one labelTxt file."""
    objects = []
    for lineno, line in read_annotation_lines(path):
        obj = parse_dota_line(line, path, lineno)
        if obj is not None:
            objects.append(obj)
    return objects


def load_dota(root: str | Path, strict: bool = False, include_unlabelled: bool = False,
              skipped: list[dict] | None = None) -> list[RawImage]:
    """Load DOTA v1.5 train/val (and test images when ``include_unlabelled``), sorted by file name.

    ``split`` is the folder name. Present labelled splits must pair every image with a label file
    (DataError otherwise); at least one of train/val must exist. Unreadable images are skipped and
    appended to ``skipped`` (CorruptImageError when ``strict``).
    """
    root = Path(root)
    present = [s for s in LABELLED_SPLITS if (root / s).is_dir()]
    if not present:
        raise DataError(f"DOTA v1.5 at {root}: none of {list(LABELLED_SPLITS)} found "
                        f"(expected {root}/train/images and {root}/train/labelTxt)")
    out: list[RawImage] = []
    for split in present:
        images = list_images(require_dir(root / split / "images", f"DOTA {split} images"))
        labels = list_files(require_dir(root / split / "labelTxt", f"DOTA {split} labels"), ".txt")
        check_pairs(images, labels, f"DOTA v1.5 {split} split at {root / split}")
        for stem, img_path in images.items():
            objects = parse_dota_file(labels[stem])
            rel = rel_posix(img_path, root)
            size = read_image_size(img_path, rel, strict, skipped)
            if size is not None:
                out.append(RawImage(rel, size[0], size[1], objects, split=split))
    if include_unlabelled:
        test_dir = require_dir(root / UNLABELLED_SPLIT / "images", "DOTA test images (include_unlabelled)")
        for img_path in list_images(test_dir).values():
            rel = rel_posix(img_path, root)
            size = read_image_size(img_path, rel, strict, skipped)
            if size is not None:
                out.append(RawImage(rel, size[0], size[1], [], split=UNLABELLED_SPLIT))
    out.sort(key=lambda im: im.file_name)
    return out


__all__ = ["load_dota", "parse_dota_file", "parse_dota_line"]
