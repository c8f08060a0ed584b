"""Parser of a user dataset given as a standard COCO instances json plus a folder of images.

Config (``docs/recipes.md``)::

    datasets:
      mydata: {source: coco, annotations: path/to/instances.json, images: path/to/images}

The json needs ``images`` (``id``, ``file_name`` relative to the image folder, optional ``width`` /
``height``), ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox: [x, y, w, h]`` in pixels,
optional ``iscrowd``, ``difficult``) and ``categories`` (``id``, ``name``, optional ``supercategory``).
``segmentation`` and ``area`` are ignored (the suite's ``area`` is ``w * h`` of the box).

Class list and order: the ``categories`` sorted by their ``id`` (the pycocotools / detectron2
convention, independent of their order in the file), renumbered 1..C in that order; the json's own id
is kept as ``source_id``. Names must be unique and non-empty.

Every image header is read: a missing image is an error that names it, an unreadable one is skipped
(CorruptImageError when ``strict``), and a ``width`` / ``height`` that disagrees with the file is an error.
Crowd annotations (``iscrowd: 1``) are left out and counted. A malformed entry is an AnnotationError
naming the json file and the entry (``annotations[7] (id 12): ...``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from data_prep.errors import AnnotationError, DataError, UnknownClassError
from data_prep.parsers import RawImage, RawObject, read_image_size, read_json, require_dir

log = logging.getLogger(__name__)


@dataclass
class CocoSource:
    """What :func:`load_coco` read: suite categories (ids 1..C), images, and the crowd boxes left out."""

    categories: list[dict[str, Any]]
    images: list[RawImage] = field(default_factory=list)
    crowd_boxes: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """The loaded json at ``path`` with its ``images``, ``annotations`` and ``categories`` lists checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO annotations file not found (config key 'annotations' of a coco dataset)")
    data = read_json(path, encoding="utf-8-sig")
    if not isinstance(data, dict):
        raise AnnotationError(path, None, f"top level: expected an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(path, None, f"top level: missing key {key!r} (a COCO instances json has "
                                              "images, annotations and categories)")
        if not isinstance(data[key], list):
            raise AnnotationError(path, None, f"{key}: expected a list, got {type(data[key]).__name__}")
    return data


def parse_categories(data: dict[str, Any], path: str | Path) -> list[dict[str, Any]]:
    """Suite categories ``{"id": 1..C, "name", "supercategory", "source_id"}`` sorted by the json's ids."""
    cats: dict[int, dict[str, Any]] = {}
    names: dict[str, int] = {}
    for i, c in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(c, dict):
            raise AnnotationError(path, None, f"{where}: expected an object, got {type(c).__name__}")
        cid, name = c.get("id"), c.get("name")
        if not _is_int(cid):
            raise AnnotationError(path, None, f"{where}: 'id' must be an integer, got {cid!r}")
        if not isinstance(name, str) or not name.strip():
            raise AnnotationError(path, None, f"{where} (id {cid}): 'name' must be a non-empty string, got {name!r}")
        if cid in cats:
            raise AnnotationError(path, None, f"{where}: duplicate category id {cid}")
        if name in names:
            raise AnnotationError(path, None, f"{where} (id {cid}): duplicate category name {name!r} "
                                              f"(also id {names[name]})")
        sup = c.get("supercategory")
        cats[cid], names[name] = {"name": name, "supercategory": sup if isinstance(sup, str) else None}, cid
    if not cats:
        raise AnnotationError(path, None, "categories: empty (at least one class is needed)")
    return [{"id": new, "name": cats[old]["name"], "supercategory": cats[old]["supercategory"], "source_id": old}
            for new, old in enumerate(sorted(cats), start=1)]


def coco_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names of the COCO json at ``path`` in suite order (categories sorted by id)."""
    return tuple(c["name"] for c in parse_categories(read_coco_json(path), path))


def _file_name(value: Any, where: str, path: Path) -> str:
    ok = isinstance(value, str) and value.strip() and "\\" not in value
    parts = PurePosixPath(value).parts if ok else ()
    if not ok or PurePosixPath(value).is_absolute() or ".." in parts:
        raise AnnotationError(path, None, f"{where}: 'file_name' must be a relative POSIX path inside the image "
                                          f"folder, got {value!r}")
    return PurePosixPath(value).as_posix()


def _images(data: dict[str, Any], path: Path, root: Path, strict: bool,
            skipped: list[dict] | None) -> dict[int, RawImage]:
    """Image id -> RawImage (no objects yet) for every readable image; errors as in the module docstring."""
    entries: list[tuple[int, str, Any, Any, str]] = []
    ids: set[int] = set()
    names: dict[str, int] = {}
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict):
            raise AnnotationError(path, None, f"{where}: expected an object, got {type(im).__name__}")
        iid = im.get("id")
        if not _is_int(iid):
            raise AnnotationError(path, None, f"{where}: 'id' must be an integer, got {iid!r}")
        where = f"{where} (id {iid})"
        if iid in ids:
            raise AnnotationError(path, None, f"{where}: duplicate image id {iid}")
        name = _file_name(im.get("file_name"), where, path)
        if name in names:
            raise AnnotationError(path, None, f"{where}: file_name {name!r} is also image id {names[name]}")
        for key in ("width", "height"):
            if key in im and not (_is_int(im[key]) and im[key] > 0):
                raise AnnotationError(path, None, f"{where}: {key!r} must be a positive integer, got {im[key]!r}")
        ids.add(iid)
        names[name] = iid
        entries.append((iid, name, im.get("width"), im.get("height"), where))
    missing = [name for _, name, *_ in entries if not (root / name).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed image(s) not found under {root}, e.g. "
                        + ", ".join(repr(m) for m in missing[:5]))
    out: dict[int, RawImage] = {}
    for iid, name, width, height, where in entries:
        size = read_image_size(root / name, name, strict=strict, skipped=skipped)
        if size is None:
            continue
        if (width or size[0], height or size[1]) != size:
            raise AnnotationError(path, None, f"{where}: width x height {width or '?'}x{height or '?'} differs from the file "
                                              f"{root / name} ({size[0]}x{size[1]})")
        out[iid] = RawImage(name, size[0], size[1])
    return out


def _object(ann: Any, i: int, path: Path, images: set[int], all_images: set[int],
            cat_names: dict[int, str]) -> tuple[int, RawObject, bool] | None:
    """``(image_id, object, is_crowd)`` of annotation ``i``; None when its image was skipped as unreadable."""
    if not isinstance(ann, dict):
        raise AnnotationError(path, None, f"annotations[{i}]: expected an object, got {type(ann).__name__}")
    aid = ann.get("id")
    if not _is_int(aid):
        raise AnnotationError(path, None, f"annotations[{i}]: 'id' must be an integer, got {aid!r}")
    where = f"annotations[{i}] (id {aid})"
    iid, cid, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
    if not _is_int(iid) or iid not in all_images:
        raise AnnotationError(path, None, f"{where}: image_id {iid!r} is not the id of an entry of 'images'")
    if not _is_int(cid) or cid not in cat_names:
        raise UnknownClassError(path, None, f"{where}: category_id {cid!r} is not the id of an entry of "
                                            f"'categories' {sorted(cat_names)}")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise AnnotationError(path, None, f"{where}: 'bbox' must be [x, y, w, h] (4 finite numbers), got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise AnnotationError(path, None, f"{where}: 'bbox' {bbox!r} has a negative width or height")
    crowd, difficult = ann.get("iscrowd", 0), ann.get("difficult", 0)
    for key, value in (("iscrowd", crowd), ("difficult", difficult)):
        if value not in (0, 1) or isinstance(value, float):
            raise AnnotationError(path, None, f"{where}: {key!r} must be 0 or 1, got {value!r}")
    if iid not in images:
        return None
    return iid, RawObject((x, y, x + w, y + h), cat_names[cid], int(difficult), f"{path}#{where}"), bool(crowd)


def load_coco(annotations: str | Path, images_root: str | Path, strict: bool = False,
              skipped: list[dict] | None = None) -> CocoSource:
    """Read and validate a COCO instances json whose ``file_name``s are relative to ``images_root``.

    Returns the suite categories and the images sorted by file name, their boxes converted to
    ``(x1, y1, x2, y2)`` and not yet clipped (``data_prep.convert.build_coco`` clips and drops).
    """
    path, root = Path(annotations), Path(images_root)
    data = read_coco_json(path)
    cats = parse_categories(data, path)
    require_dir(root, f"{path}: image folder (config key 'images' of a coco dataset)")
    images = _images(data, path, root, strict, skipped)
    cat_names = {c["source_id"]: c["name"] for c in cats}
    all_images = {im["id"] for im in data["images"]}
    readable = set(images)
    ann_ids: set[int] = set()
    crowd = 0
    for i, ann in enumerate(data["annotations"]):
        got = _object(ann, i, path, readable, all_images, cat_names)
        if ann["id"] in ann_ids:
            raise AnnotationError(path, None, f"annotations[{i}]: duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        if got is None:
            continue
        iid, obj, is_crowd = got
        if is_crowd:
            crowd += 1
            continue
        images[iid].objects.append(obj)
    if crowd:
        log.warning("%s: left out %d crowd annotation(s) (iscrowd=1)", path, crowd)
    return CocoSource(cats, sorted(images.values(), key=lambda im: im.file_name), crowd)


__all__ = ["CocoSource", "coco_class_names", "load_coco", "parse_categories", "read_coco_json"]
