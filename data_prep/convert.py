"""Convert a dataset's official annotations into the COCO json of ``docs/formats.md`` section 1.

``convert_dataset("nwpu", root, out)`` loads the dataset with its parser, builds the COCO dict
(images sorted by file name, 1-based ids, categories in ``data_prep.classes`` order, boxes clipped
to the image, empty boxes dropped) and writes it atomically with a provenance block.
``convert_coco(annotations, images, out, name)`` does the same for a user dataset given as a COCO
json plus an image folder (``source: coco``; classes from the json, see ``data_prep.parsers.coco``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_prep.classes import CLASSES, categories
from data_prep.errors import DataError, UnknownClassError
from data_prep.parsers import RawImage
from benchcore.atomic import atomic_write_json
from benchcore.provenance import provenance

log = logging.getLogger(__name__)

DATASETS = ("nwpu", "dota", "hrrsd", "demo")


def clip_box(bbox: tuple[float, float, float, float], width: int,
             height: int) -> tuple[tuple[float, float, float, float], bool]:
    """Clip ``(x1, y1, x2, y2)`` to ``[0, width] x [0, height]``; also return whether it changed."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    width, height = float(width), float(height)
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    return clipped, clipped != (x1, y1, x2, y2)


def build_coco(images: list[RawImage], dataset: str, root: Path,
               skipped: list[dict] | None = None,
               prov: dict[str, Any] | None = None,
               cats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The COCO dict for ``images`` of ``dataset`` whose file names are relative to ``root``.

    Boxes are clipped to the image; a box with zero or negative width or height after clipping is
    dropped. ``summary`` counts images, annotations, clipped and dropped boxes and lists
    ``skipped`` images. ``prov`` defaults to ``provenance(config={"dataset", "root"})``. ``cats``
    (ids 1..C, unique names) defaults to ``categories(dataset)`` of a built-in dataset. An object with a
    polygon (DOTA) also gets ``segmentation: [[x1, y1, ..., x4, y4]]``, as annotated (not clipped).
    """
    cats = categories(dataset) if cats is None else cats
    cat_id = {c["name"]: c["id"] for c in cats}
    ordered = sorted(images, key=lambda im: im.file_name)
    seen: set[str] = set()
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    n_clipped = n_dropped = 0
    for image_id, im in enumerate(ordered, start=1):
        if im.file_name in seen:
            raise DataError(f"{dataset}: duplicate image file name {im.file_name!r}")
        seen.add(im.file_name)
        if im.width <= 0 or im.height <= 0:
            raise DataError(f"{dataset}: image {im.file_name!r} has invalid size {im.width}x{im.height}")
        if im.negative and im.objects:
            raise DataError(f"{dataset}: negative image {im.file_name!r} has {len(im.objects)} object(s)")
        coco_images.append({"id": image_id, "file_name": im.file_name, "width": int(im.width),
                            "height": int(im.height), "negative": bool(im.negative), "split": im.split})
        for obj in im.objects:
            if obj.category not in cat_id:
                raise UnknownClassError(obj.source or im.file_name, None,
                                        f"category {obj.category!r} is not a {dataset} class {list(cat_id)}")
            (x1, y1, x2, y2), was_clipped = clip_box(obj.bbox, im.width, im.height)
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                n_dropped += 1
                log.warning("dropping box %s (%s) of %s: empty after clipping to the %dx%d image", obj.bbox,
                            obj.source, im.file_name, im.width, im.height)
                continue
            n_clipped += int(was_clipped)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cat_id[obj.category], "bbox": [x1, y1, w, h],
                                "area": w * h, "iscrowd": 0, "difficult": int(obj.difficult)})
            if obj.polygon is not None:  # oriented object (DOTA): the polygon as annotated, not clipped
                annotations[-1]["segmentation"] = [[float(v) for v in obj.polygon]]
    root_str = str(Path(root).resolve())
    if prov is None:
        prov = provenance(config={"dataset": dataset, "root": root_str})
    summary = {"images": len(coco_images), "annotations": len(annotations), "clipped_boxes": n_clipped,
               "dropped_boxes": n_dropped, "skipped_images": list(skipped or [])}
    return {"info": {"dataset": dataset, "root": root_str, "provenance": prov},
            "categories": cats, "images": coco_images, "annotations": annotations, "summary": summary}


def _loader(dataset: str, strict: bool, include_unlabelled: bool,
            skipped: list[dict]) -> tuple[Callable[[Path], list[RawImage]], Callable[[Path], Path]]:
    """(loader(root) -> images, root resolver) for ``dataset``; imports lazily."""
    if dataset == "nwpu":
        from data_prep.parsers.nwpu import load_nwpu, resolve_nwpu_root  # noqa: PLC0415
        return (lambda r: load_nwpu(r, strict=strict, skipped=skipped)), resolve_nwpu_root
    if dataset == "dota":
        from data_prep.parsers.dota import load_dota  # noqa: PLC0415
        return (lambda r: load_dota(r, strict=strict, include_unlabelled=include_unlabelled,
                                    skipped=skipped)), Path
    if dataset == "hrrsd":
        from data_prep.parsers.hrrsd import load_hrrsd  # noqa: PLC0415
        return (lambda r: load_hrrsd(r, strict=strict, skipped=skipped)), Path
    if dataset == "demo":
        from data_prep.parsers.demo import load_demo  # noqa: PLC0415
        return load_demo, Path
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")


def convert_dataset(dataset: str, root: str | Path, out: str | Path, strict: bool = False,
                    include_unlabelled: bool = False) -> dict[str, Any]:
    """Parse ``dataset`` at ``root``, write its COCO json to ``out`` atomically, return the summary.

    ``strict`` turns skipped (unreadable) images into CorruptImageError. ``include_unlabelled``
    adds DOTA's unlabelled test images (ignored for other datasets). For NWPU, ``root`` may also be
    the folder holding ``NWPU VHR-10 dataset/``.
    """
    if dataset not in CLASSES or dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    skipped: list[dict] = []
    load, resolve = _loader(dataset, strict, include_unlabelled, skipped)
    data_root = resolve(Path(root)).resolve()
    if not data_root.is_dir():
        raise DataError(f"{dataset}: dataset root not found: {data_root}")
    images = load(data_root)
    config = {"dataset": dataset, "root": str(data_root), "out": str(Path(out).resolve()),
              "strict": bool(strict), "include_unlabelled": bool(include_unlabelled)}
    coco = build_coco(images, dataset, data_root, skipped=skipped, prov=provenance(config=config))
    atomic_write_json(out, coco)
    s = coco["summary"]
    log.info("%s: wrote %s (%d images, %d annotations, %d clipped, %d dropped, %d skipped)", dataset, out,
             s["images"], s["annotations"], s["clipped_boxes"], s["dropped_boxes"], len(s["skipped_images"]))
    return s


def convert_coco(annotations: str | Path, images: str | Path, out: str | Path, name: str = "coco",
                 strict: bool = False) -> dict[str, Any]:
    """Validate a user's COCO json + image folder, write the suite's COCO json to ``out``, return the summary.

    ``name`` is the dataset id (``info.dataset``, and the ``supercategory`` of classes without one).
    Categories are the json's sorted by id and renumbered 1..C (``source_id`` keeps the json's id);
    ``summary`` also counts the ``crowd_boxes`` left out. ``strict`` turns unreadable images into
    CorruptImageError.
    """
    from data_prep.parsers.coco import load_coco  # noqa: PLC0415

    skipped: list[dict] = []
    ann_path, data_root = Path(annotations).resolve(), Path(images).resolve()
    src = load_coco(ann_path, data_root, strict=strict, skipped=skipped)
    cats = [{**c, "supercategory": c["supercategory"] or name} for c in src.categories]
    config = {"dataset": name, "source": "coco", "annotations": str(ann_path), "root": str(data_root),
              "out": str(Path(out).resolve()), "strict": bool(strict)}
    coco = build_coco(src.images, name, data_root, skipped=skipped, prov=provenance(config=config), cats=cats)
    coco["info"] = {"dataset": name, "root": str(data_root), "annotations": str(ann_path),
                    "provenance": coco["info"]["provenance"]}
    coco["summary"]["crowd_boxes"] = src.crowd_boxes
    atomic_write_json(out, coco)
    s = coco["summary"]
    log.info("%s: wrote %s from %s (%d classes, %d images, %d annotations, %d clipped, %d dropped, %d crowd, "
             "%d skipped)", name, out, ann_path, len(cats), s["images"], s["annotations"], s["clipped_boxes"],
             s["dropped_boxes"], src.crowd_boxes, len(s["skipped_images"]))
    return s


__all__ = ["DATASETS", "build_coco", "clip_box", "convert_coco", "convert_dataset"]
