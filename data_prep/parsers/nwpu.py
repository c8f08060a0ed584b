"""NWPU VHR-10 parser.

Layout under ``root`` (the folder ``.../NWPU VHR-10 dataset``)::

    positive image set/001.jpg .. 650.jpg   ground truth/001.txt .. 650.txt
    negative image set/001.jpg .. 150.jpg   (no annotations; returned with negative=True)

Each ground-truth line is ``(x1,y1),(x2,y2),c`` with the top-left / bottom-right corners and a class
id 1..10 (``data_prep.classes.NWPU_CLASSES`` order). The genuine files have trailing spaces, blank
lines, no final newline (440..453) and space-padded numbers such as ``( 72,305),(133,369),1``: all
of these are valid. Anything else raises AnnotationError naming the file and the 1-based line.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from data_prep.classes import NWPU_CLASSES
from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import (RawImage, RawObject, check_pairs, list_files, list_images,
                               read_annotation_lines, read_image_size, rel_posix, require_dir)

log = logging.getLogger(__name__)

DATASET_DIR = "NWPU VHR-10 dataset"
POSITIVE_DIR, NEGATIVE_DIR, GT_DIR = "positive image set", "negative image set", "ground truth"

_NUM = r"\s*([-+]?\d+(?:\.\d*)?)\s*"
_LINE_RE = re.compile(rf"\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)\s*,\s*([-+]?\d+)")


def parse_nwpu_line(line: str, path: object, lineno: int) -> tuple[float, float, float, float, int] | None:
    """Parse one ground-truth line into ``(x1, y1, x2, y2, class_id)``; None for a blank line.

    Raises AnnotationError (malformed line) or UnknownClassError (class id outside 1..10), both
    with ``path:lineno`` in the message.
    """
    text = line.strip().lstrip("\ufeff")
    if not text:
        return None
    m = _LINE_RE.fullmatch(text)
    if m is None:
        raise AnnotationError(path, lineno, f"expected '(x1,y1),(x2,y2),class_id', got {text!r}")
    x1, y1, x2, y2 = (float(g) for g in m.groups()[:4])
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise AnnotationError(path, lineno, f"non-finite coordinate in {text!r}")
    cls = int(m.group(5))
    if not 1 <= cls <= len(NWPU_CLASSES):
        raise UnknownClassError(path, lineno, f"class id {cls} outside 1..{len(NWPU_CLASSES)} in {text!r}")
    return x1, y1, x2, y2, cls


def parse_nwpu_file(path: Path) -> list[RawObject]:
    """All objects of one ground-truth file (blank lines skipped)."""
    objects = []
    for lineno, line in read_annotation_lines(path):
        parsed = parse_nwpu_line(line, path, lineno)
        if parsed is not None:
            x1, y1, x2, y2, cls = parsed
            objects.append(RawObject((x1, y1, x2, y2), NWPU_CLASSES[cls - 1], 0, f"{path}:{lineno}"))
    return objects


def resolve_nwpu_root(root: str | Path) -> Path:
    """Accept either the dataset folder itself or its parent holding ``NWPU VHR-10 dataset/``."""
    root = Path(root)
    if not (root / GT_DIR).is_dir() and (root / DATASET_DIR / GT_DIR).is_dir():
        return root / DATASET_DIR
    return root


def load_nwpu(root: str | Path, strict: bool = False, skipped: list[dict] | None = None) -> list[RawImage]:
    """Load all NWPU VHR-10 images (650 positive + 150 negative), sorted by file name.

    Unreadable images are skipped and appended to ``skipped`` (or raise CorruptImageError when
    ``strict``). A ground-truth file without its image, or a positive image without ground truth,
    raises DataError.
    """
    root = Path(root)
    pos_dir = require_dir(root / POSITIVE_DIR, "NWPU VHR-10 positive images")
    neg_dir = require_dir(root / NEGATIVE_DIR, "NWPU VHR-10 negative images")
    gt_dir = require_dir(root / GT_DIR, "NWPU VHR-10 ground truth")
    positives, labels = list_images(pos_dir), list_files(gt_dir, ".txt")
    check_pairs(positives, labels, f"NWPU VHR-10 at {root}")
    if not positives:
        raise DataError(f"NWPU VHR-10 at {root}: no images in {pos_dir}")

    out: list[RawImage] = []
    for stem, img_path in positives.items():
        objects = parse_nwpu_file(labels[stem])  # parse first: bad labels fail even for bad images
        rel = rel_posix(img_path, root)
        size = read_image_size(img_path, rel, strict, skipped)
        if size is None:
            continue
        if not objects:
            log.warning("%s has no objects although it is in %r", labels[stem], POSITIVE_DIR)
        out.append(RawImage(rel, size[0], size[1], objects, negative=False))
    for img_path in list_images(neg_dir).values():
        rel = rel_posix(img_path, root)
        size = read_image_size(img_path, rel, strict, skipped)
        if size is not None:
            out.append(RawImage(rel, size[0], size[1], [], negative=True))
    out.sort(key=lambda im: im.file_name)
    return out


__all__ = ["load_nwpu", "parse_nwpu_file", "parse_nwpu_line", "resolve_nwpu_root"]
