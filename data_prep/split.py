"""Tile large images into fixed-size windows (DOTA_devkit ``ImgSplit.SplitSingle`` semantics).

Input: the converted COCO json of ``docs/formats.md`` section 1. Output (section 2): ``OUT/images/*.png``,
``OUT/annotations.json`` (``file_name`` = ``images/<stem>__<x0>_<y0>.png``, relative to ``OUT``) and
``OUT/summary.json``. The whole ``OUT`` is built in a temporary sibling and renamed into place, so an
interrupted run leaves no partial output. Output is identical for any worker count.

Two object rules (``docs/formats.md`` section 2):

- box objects (NWPU, HRRSD, demo, user COCO): :func:`keep_object`, kept when ``>= keep_ratio`` of the box
  lies in the tile, otherwise left out;
- oriented objects (an annotation whose ``segmentation`` is one 4-corner polygon: DOTA):
  :func:`keep_polygon`, DOTA_devkit ``ImgSplit.savepatches`` measured on the polygon. Objects kept at or below
  ``keep_ratio`` are written as devkit difficulty 2 (``difficult: 2, iscrowd: 1``: ignored by the COCO
  evaluator and left out of every training target).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_prep.errors import IMAGE_DECODE_ERRORS, CorruptImageError, DataError
from benchcore.atomic import atomic_dir, atomic_write_json
from benchcore.provenance import provenance

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
Point = tuple[float, float]
_EPS = 1e-9  # float slack: an overlap of exactly ``keep_ratio`` is kept (box rule) / partial (polygon rule)
PARTIAL_DIFFICULTY = 2  # DOTA_devkit's mark for an object kept at or below the threshold


def tile_windows(width: int, height: int, tile: int, gap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(x0, y0)`` of the tiles, exactly as DOTA_devkit ``SplitSingle``.

    Stride is ``tile - gap``; the last column/row is moved back to be flush with the image edge
    (``max(size - tile, 0)``), so an image smaller than ``tile`` gives a single window at 0.
    Order is the devkit's: columns (x) outer, rows (y) inner.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got tile={tile}")
    if not 0 <= gap < tile:
        raise ValueError(f"gap must satisfy 0 <= gap < tile, got gap={gap}, tile={tile}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    stride = tile - gap

    def starts(size: int) -> list[int]:
        out, pos = [], 0
        while True:
            if pos + tile >= size:
                out.append(max(size - tile, 0))
                return out
            out.append(pos)
            pos += stride

    ys = starts(height)
    return [(x, y) for x in starts(width) for y in ys]


def keep_object(box_xyxy: Box, window_xyxy: Box, keep_ratio: float = 0.7) -> Box | None:
    """Clip ``box_xyxy`` to ``window_xyxy`` (both in image pixels) if enough of it lies inside.

    Kept when ``intersection area / box area >= keep_ratio``; returns the clipped box (still in image
    coordinates: the caller subtracts the tile offset), or None. Degenerate boxes are never kept.
    """
    bx1, by1, bx2, by2 = box_xyxy
    wx1, wy1, wx2, wy2 = window_xyxy
    area = (bx2 - bx1) * (by2 - by1)
    if bx2 <= bx1 or by2 <= by1 or area <= 0:
        return None
    cx1, cy1, cx2, cy2 = max(bx1, wx1), max(by1, wy1), min(bx2, wx2), min(by2, wy2)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    if (cx2 - cx1) * (cy2 - cy1) / area + _EPS < keep_ratio:
        return None
    return (cx1, cy1, cx2, cy2)


def polygon_area(points: Sequence[Point]) -> float:
    """Unsigned area of a polygon (shoelace; vertices in order, either orientation)."""
    n = len(points)
    if n < 3:
        return 0.0
    x0, y0 = points[0]  # relative coordinates: less cancellation far from the origin
    twice = sum((points[i][0] - x0) * (points[i + 1][1] - y0) - (points[i + 1][0] - x0) * (points[i][1] - y0)
                for i in range(1, n - 1))
    return abs(twice) / 2.0


def clip_polygon(points: Sequence[Point], window_xyxy: Box) -> list[Point]:
    """The part of a polygon inside an axis-aligned window (Sutherland-Hodgman, one pass per window side).

    Exact for a convex polygon (DOTA's oriented boxes). A concave one whose cut falls apart comes back as one
    ring joined by zero-area edges along the window border: its :func:`polygon_area` is still right.
    Vertices exactly on a side count as inside, so the result may repeat a point (see :func:`polygon_corners`).
    """
    out = [(float(x), float(y)) for x, y in points]
    for axis, bound, keep_low in ((0, window_xyxy[0], False), (0, window_xyxy[2], True),
                                  (1, window_xyxy[1], False), (1, window_xyxy[3], True)):
        if not out:
            break
        ring, out = out, []
        prev = ring[-1]
        prev_in = prev[axis] <= bound if keep_low else prev[axis] >= bound
        for cur in ring:
            cur_in = cur[axis] <= bound if keep_low else cur[axis] >= bound
            if cur_in != prev_in:  # the edge crosses the side: the two ends lie strictly apart on ``axis``
                other = 1 - axis
                t = (bound - prev[axis]) * (cur[other] - prev[other]) / (cur[axis] - prev[axis])
                cut = prev[other] + t
                out.append((bound, cut) if axis == 0 else (cut, bound))
            if cur_in:
                out.append(cur)
            prev, prev_in = cur, cur_in
    return out


def polygon_corners(points: Sequence[Point], tol: float = 1e-7) -> int:
    """Number of corners of a polygon: repeated points and straight (180 degree) vertices do not count.

    This is the vertex count of the same region as a geometry library writes it (DOTA_devkit counts the
    exterior ring of shapely's intersection), independent of how the clipping produced it.
    """
    ring: list[Point] = []
    for p in points:
        if not ring or abs(p[0] - ring[-1][0]) > tol or abs(p[1] - ring[-1][1]) > tol:
            ring.append(p)
    while len(ring) > 1 and abs(ring[0][0] - ring[-1][0]) <= tol and abs(ring[0][1] - ring[-1][1]) <= tol:
        ring.pop()
    changed = True
    while changed and len(ring) >= 3:
        changed = False
        for i in range(len(ring)):
            a, b, c = ring[i - 1], ring[i], ring[(i + 1) % len(ring)]
            ux, uy, vx, vy = b[0] - a[0], b[1] - a[1], c[0] - b[0], c[1] - b[1]
            if abs(ux * vy - uy * vx) <= tol * max(1.0, abs(ux) + abs(uy)) * max(1.0, abs(vx) + abs(vy)):
                del ring[i]  # a, b, c on one line: b is no corner (a spike back along the line neither)
                changed = True
                break
    return len(ring) if len(ring) >= 3 else 0


class KeptObject(NamedTuple):
    """An oriented object as written into one tile: ``box`` in image pixels (the caller subtracts the offset)."""

    box: Box
    truncated: bool  # the polygon is not wholly inside the tile
    partial: bool  # kept fraction <= keep_ratio: DOTA_devkit difficulty 2


def keep_polygon(points: Sequence[Point], window_xyxy: Box, keep_ratio: float = 0.7) -> KeptObject | None:
    """DOTA_devkit ``ImgSplit.savepatches`` for one oriented object and one tile (both in image pixels).

    ``f = area(polygon inside the window) / area(polygon)``:

    - polygon wholly inside: written unchanged (its bounding box), not truncated;
    - ``0 < f < 1``: the window clips the polygon; the cut is written only when it has 4 or 5 corners (the
      devkit skips cuts of 3 corners and of more than 5), as the bounding box of the cut, with the object's
      own difficulty when ``f > keep_ratio`` and as a partial object (difficulty 2) when ``f <= keep_ratio``;
    - ``f == 0`` (apart, or only touching the border) or a polygon of zero area: None.
    """
    wx1, wy1, wx2, wy2 = window_xyxy
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    if x2 <= wx1 or x1 >= wx2 or y2 <= wy1 or y1 >= wy2:  # apart (the common case): f = 0
        return None
    pts = list(zip(xs, ys))
    area = polygon_area(pts)
    if area <= 0:
        return None
    if wx1 <= x1 and x2 <= wx2 and wy1 <= y1 and y2 <= wy2:
        return KeptObject((x1, y1, x2, y2), False, False)
    cut = clip_polygon(pts, window_xyxy)
    fraction = polygon_area(cut) / area
    if fraction <= _EPS or polygon_corners(cut) not in (4, 5):
        return None
    cx, cy = [p[0] for p in cut], [p[1] for p in cut]
    box = (float(max(min(cx), wx1)), float(max(min(cy), wy1)), float(min(max(cx), wx2)), float(min(max(cy), wy2)))
    return KeptObject(box, True, fraction <= keep_ratio + _EPS)


def oriented_polygon(ann: dict[str, Any]) -> tuple[Point, ...] | None:
    """The 4-corner polygon of an oriented (DOTA) annotation: its ``segmentation`` ``[[x1, y1, ..., x4, y4]]``.

    None for a box-only annotation (no ``segmentation``, or one that is not a single 4-corner polygon).
    """
    seg = ann.get("segmentation")
    if not (isinstance(seg, list) and len(seg) == 1 and isinstance(seg[0], list) and len(seg[0]) == 8):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg[0]):
        return None
    return tuple((float(seg[0][i]), float(seg[0][i + 1])) for i in range(0, 8, 2))


def devkit_window(x0: int, y0: int, tile: int, width: int, height: int) -> Box:
    """The window DOTA_devkit measures oriented objects on: ``[x0, min(x0 + tile, W - 1)] x [y0, ...]``.

    One pixel short of the image on the last column / row (``SplitSingle``'s ``right = min(left + subsize,
    weight - 1)``), the tile's full extent elsewhere. Kept as is so that the kept set equals the devkit's.
    """
    return (x0, y0, min(x0 + tile, width - 1), min(y0 + tile, height - 1))


def tile_objects(objects: Sequence[tuple], offset: tuple[int, int], tile: int, image_size: tuple[int, int],
                 keep_ratio: float = 0.7) -> tuple[list[dict[str, Any]], int, set[int]]:
    """Annotations of the tile at ``offset`` (its top-left corner) of a ``(W, H)`` image; also the dropped count
    and the kept ``ann_id``s.

    ``objects``: ``(ann_id, category_id, (x, y, w, h), difficult, polygon | None)`` per source object, in
    image pixels. Objects with a polygon follow :func:`keep_polygon` on :func:`devkit_window`, the others
    :func:`keep_object` on the tile's part inside the image. Boxes come back in tile pixels. Dropped: objects
    that overlap the tile but are not written in it.
    """
    (x0, y0), (width, height) = offset, image_size
    box_window = (x0, y0, x0 + min(tile, width - x0), y0 + min(tile, height - y0))
    poly_window = devkit_window(x0, y0, tile, width, height)
    anns, dropped, kept_ids = [], 0, set()
    for ann_id, cat, (bx, by, bw, bh), difficult, polygon in objects:
        box = (bx, by, bx + bw, by + bh)
        partial = False
        if polygon is None:
            clipped = keep_object(box, box_window, keep_ratio)
            truncated = clipped is not None and clipped != box
        else:
            kept = keep_polygon(polygon, poly_window, keep_ratio)
            clipped, truncated, partial = (None, False, False) if kept is None else kept
        if clipped is None:
            if polygon is None:
                wx1, wy1, wx2, wy2 = box_window
                touched = min(box[2], wx2) > max(box[0], wx1) and min(box[3], wy2) > max(box[1], wy1)
            else:
                px, py = [p[0] for p in polygon], [p[1] for p in polygon]
                touched = (min(px) < poly_window[2] and max(px) > poly_window[0] and min(py) < poly_window[3]
                           and max(py) > poly_window[1]
                           and polygon_area(clip_polygon(polygon, poly_window)) > _EPS * polygon_area(polygon))
            dropped += int(touched)  # overlaps this tile but is not written in it
            continue
        kept_ids.add(ann_id)
        x1, y1, x2, y2 = clipped[0] - x0, clipped[1] - y0, clipped[2] - x0, clipped[3] - y0
        anns.append({"category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                     "iscrowd": int(partial), "truncated": int(truncated),
                     "difficult": PARTIAL_DIFFICULTY if partial else difficult})
    return anns, dropped, kept_ids


def _decode_rgb(path: Path) -> np.ndarray:
    """Fully decode ``path`` as an RGB uint8 array (raises OSError & co. on corrupt files).

    Pillow's decompression-bomb limit is lifted: DOTA has genuine images of ~20000 x 20000 px.
    """
    old_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            im.load()  # full decode: truncated files fail here
            return np.asarray(im.convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _write_png(path: Path, rgb: np.ndarray, writer: str) -> None:
    """Write an RGB array as PNG: ``cv2`` (fastest measured, zlib level 1 + RLE) or ``pil`` (level 1)."""
    if writer == "cv2":
        import cv2  # noqa: PLC0415

        if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"cv2 could not write {path}")
    elif writer == "pil":
        Image.fromarray(rgb).save(path, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown png writer {writer!r}; expected 'cv2' or 'pil'")


def _tile_one(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: decode one image, write its tiles, return their metadata (no ids assigned yet)."""
    tile, pad = job["tile"], job["pad"]
    try:
        rgb = _decode_rgb(Path(job["path"]))
    except IMAGE_DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError
        return {"error": f"cannot decode image ({type(exc).__name__}: {exc})"}
    height, width = rgb.shape[:2]
    if (width, height) != (job["width"], job["height"]):
        return {"error": f"decoded size {width}x{height} differs from the json's {job['width']}x{job['height']}"}
    tiles, dropped, kept_ids, partial = [], 0, set(), 0
    objects = job["anns"]
    # extent of each object (its polygon's box, else its box): only objects overlapping a tile can be written
    # in it or dropped from it, so each tile looks at those only (same output, far fewer pairs on big images)
    ext = np.array([(min(p[0] for p in o[4]), min(p[1] for p in o[4]), max(p[0] for p in o[4]),
                     max(p[1] for p in o[4])) if o[4] is not None else
                    (o[2][0], o[2][1], o[2][0] + o[2][2], o[2][1] + o[2][3]) for o in objects],
                   dtype=np.float64).reshape(-1, 4)
    for x0, y0 in tile_windows(width, height, tile, job["gap"]):
        vw, vh = min(tile, width - x0), min(tile, height - y0)
        crop = rgb[y0:y0 + vh, x0:x0 + vw]
        if pad and (vw < tile or vh < tile):
            canvas = np.zeros((tile, tile, 3), dtype=np.uint8)
            canvas[:vh, :vw] = crop
            crop = canvas
        name = f"{job['stem']}__{x0}_{y0}.png"
        _write_png(Path(job["out_images"]) / name, crop, job["writer"])
        near = np.flatnonzero((ext[:, 0] < x0 + vw) & (ext[:, 2] > x0) & (ext[:, 1] < y0 + vh) & (ext[:, 3] > y0))
        anns, n_dropped, ids = tile_objects([objects[i] for i in near], (x0, y0), tile, (width, height),
                                            job["keep_ratio"])
        dropped, partial = dropped + n_dropped, partial + sum(a["iscrowd"] for a in anns)
        kept_ids |= ids
        tiles.append({"name": name, "offset": [x0, y0], "valid_size": [vw, vh],
                      "width": crop.shape[1], "height": crop.shape[0], "anns": anns})
    return {"error": None, "tiles": tiles, "dropped": dropped, "partial": partial,
            "lost": len(objects) - len(kept_ids)}


def _tile_stems(file_names: list[str]) -> list[str]:
    """Tile name stems: the file stem, or the sanitised relative path where two stems collide."""
    stems = [Path(f).stem for f in file_names]
    counts = Counter(stems)
    return [s if counts[s] == 1 else re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(f).with_suffix("")))
            for s, f in zip(stems, file_names)]


def _run_jobs(jobs: list[dict[str, Any]], workers: int, progress: bool) -> Iterable[dict[str, Any]]:
    """Results of ``_tile_one`` in job order (in-process for ``workers == 1``).

    Workers are forked (a forkserver or spawn child would re-run a Snakemake rule script, which is the parent's
    ``__main__``). Closing the generator early (a strict error) cancels the jobs not yet started and waits for the
    running ones: no worker is killed holding a queue lock, which is how ``multiprocessing.Pool.terminate`` once
    hung a CI run.
    """
    bar = tqdm(total=len(jobs), desc="tiling", unit="img", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield _tile_one(job)
                bar.update()
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
            try:
                for res in pool.map(_tile_one, jobs):
                    yield res
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def split_dataset(coco_json: str | Path, image_root: str | Path, out_dir: str | Path, tile: int = 512,
                  gap: int = 200, keep_ratio: float = 0.7, pad: bool = True, workers: int = 2,
                  strict: bool = False, progress: bool = True, include_negative: bool = False,
                  writer: str = "cv2", max_source_images: int | None = None, subset_seed: int = 0) -> dict[str, Any]:
    """Tile every (positive) image of ``coco_json`` into ``out_dir``; return the summary dict.

    ``max_source_images``: tile only a seeded random subset of that many source images (a small-budget
    run on real data; the summary records it). None tiles them all.

    Objects follow :func:`keep_object` (boxes) or :func:`keep_polygon` (oriented objects: annotations whose
    ``segmentation`` is one 4-corner polygon); see the module docstring.

    Counts: ``objects_in`` source objects on tiled images, ``objects_oriented`` of them measured on their
    polygon; ``objects_kept`` tile annotations written (an object in an overlap is counted once per tile),
    ``objects_partial`` of them partial (difficulty 2, ``iscrowd`` 1); ``objects_dropped`` (object, tile)
    pairs that overlap but are not written (box below ``keep_ratio``; polygon cut of 3 or more than 5
    corners); ``objects_lost`` source objects written in no tile at all.
    """
    coco_json, image_root = Path(coco_json), Path(image_root)
    tile_windows(tile, tile, tile, gap)  # validate tile/gap before any work
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if writer not in ("cv2", "pil"):
        raise ValueError(f"unknown png writer {writer!r}; expected 'cv2' or 'pil'")
    try:
        src = json.loads(coco_json.read_text(encoding="utf-8"))
        images, annotations, categories = src["images"], src["annotations"], src["categories"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{coco_json}: not a converted COCO json ({type(exc).__name__}: {exc})") from exc
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in sorted(annotations, key=lambda a: a["id"]):
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted(images, key=lambda im: im["id"])
    selected = [im for im in images if include_negative or not im.get("negative", False)]
    n_eligible = len(selected)
    if max_source_images is not None and max_source_images < len(selected):
        if max_source_images < 1:
            raise ValueError(f"max_source_images must be >= 1, got {max_source_images}")
        pick = np.random.default_rng(subset_seed).choice(len(selected), size=max_source_images, replace=False)
        selected = [selected[i] for i in sorted(pick)]
    params = {"tile": tile, "gap": gap, "keep_ratio": keep_ratio, "pad": pad, "include_negative": include_negative,
              "max_source_images": max_source_images, "subset_seed": subset_seed,
              "strict": strict, "writer": writer, "source_json": str(coco_json), "image_root": str(image_root)}
    summary: dict[str, Any] = {"images_in": len(selected), "excluded_negative": len(images) - n_eligible,
                               "excluded_by_subset": n_eligible - len(selected),
                               "images_tiled": 0, "tiles": 0, "objects_in": 0, "objects_oriented": 0,
                               "objects_kept": 0, "objects_partial": 0, "objects_dropped": 0, "objects_lost": 0,
                               "skipped_images": []}
    out_images, out_anns = [], []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        jobs = [{"path": str(image_root / im["file_name"]), "width": im["width"], "height": im["height"],
                 "stem": stem, "out_images": str(tmp / "images"), "tile": tile, "gap": gap, "pad": pad,
                 "keep_ratio": keep_ratio, "writer": writer,
                 "anns": [(a["id"], a["category_id"], tuple(a["bbox"]), int(a.get("difficult", 0)),
                           oriented_polygon(a)) for a in by_image.get(im["id"], [])]}
                for im, stem in zip(selected, _tile_stems([im["file_name"] for im in selected]))]
        results = _run_jobs(jobs, max(1, min(workers, len(jobs))), progress)
        with contextlib.closing(results):  # stop the pool before atomic_dir removes tmp on error
            for im, job, res in zip(selected, jobs, results):
                if res["error"] is not None:
                    if strict:
                        raise CorruptImageError(f"{job['path']}: {res['error']}")
                    log.warning("skipping %s: %s", job["path"], res["error"])
                    summary["skipped_images"].append({"file": im["file_name"], "reason": res["error"]})
                    continue
                summary["images_tiled"] += 1
                summary["objects_in"] += len(job["anns"])
                summary["objects_oriented"] += sum(a[4] is not None for a in job["anns"])
                summary["objects_partial"] += res["partial"]
                summary["objects_dropped"] += res["dropped"]
                summary["objects_lost"] += res["lost"]
                for t in res["tiles"]:
                    tid = len(out_images) + 1
                    out_images.append({"id": tid, "file_name": f"images/{t['name']}", "width": t["width"],
                                       "height": t["height"], "source_image_id": im["id"],
                                       "source_file": im["file_name"], "offset": t["offset"],
                                       "valid_size": t["valid_size"], "negative": bool(im.get("negative", False)),
                                       "split": im.get("split")})
                    for a in t["anns"]:
                        out_anns.append({"id": len(out_anns) + 1, "image_id": tid, **a})
        summary["tiles"], summary["objects_kept"] = len(out_images), len(out_anns)
        summary["parameters"] = params
        summary["provenance"] = provenance(config=params)
        info = {**{k: v for k, v in src.get("info", {}).items() if k != "provenance"},
                "tiling": params, "source_provenance": src.get("info", {}).get("provenance"),
                "provenance": summary["provenance"]}
        atomic_write_json(tmp / "annotations.json",
                          {"info": info, "categories": categories, "images": out_images,
                           "annotations": out_anns,
                           "summary": {k: v for k, v in summary.items() if k not in ("parameters", "provenance")}})
        atomic_write_json(tmp / "summary.json", summary)
    return summary


__all__ = ["PARTIAL_DIFFICULTY", "KeptObject", "clip_polygon", "devkit_window", "keep_object", "keep_polygon",
           "oriented_polygon", "polygon_area", "polygon_corners", "split_dataset", "tile_objects", "tile_windows"]
