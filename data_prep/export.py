"""Exports of the tile partitions to ultralytics YOLO and BasicSR paired folders (docs/formats.md §5).

Both exports read the partition jsons (``{train,val,test}.json``, COCO tiles, §3), find every image
by the basename of its ``file_name`` in a flat tile folder (HR tiles or an LR copy, §4), and build the
output directory atomically. Files are hard-linked by default (copied when the link fails, e.g.
across file systems), or symlinked / copied on request.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.errors import IMAGE_DECODE_ERRORS, CorruptImageError, DataError, UnknownClassError
from benchcore.atomic import atomic_dir, atomic_write_json, atomic_write_text
from benchcore.provenance import provenance

LINK_MODES: tuple[str, ...] = ("hardlink", "symlink", "copy")


class MissingFileError(DataError, FileNotFoundError):
    """An image named by a json (or an HR/LR partner) that is not in the given folder."""


def _load_part(part: str, path: Path) -> dict[str, Any]:
    if not part or "/" in part or part.startswith("."):
        raise ValueError(f"invalid part name {part!r} (used as a folder name)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise MissingFileError(f"partition json for part {part!r} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid json ({exc.msg})") from None
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or invalid key {key!r}")
    return data


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except IMAGE_DECODE_ERRORS as exc:
        raise CorruptImageError(f"{path}: cannot read image ({exc})") from None


def _place(src: Path, dst: Path, link: str) -> None:
    """Put ``src`` at ``dst`` by hard link (copy fallback), symlink (absolute target) or copy."""
    if link == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:  # EXDEV across file systems, or links not permitted: fall back to a copy
            pass
    elif link == "symlink":
        os.symlink(src.resolve(), dst)
        return
    shutil.copy2(src, dst)


def _check_link(link: str) -> None:
    if link not in LINK_MODES:
        raise ValueError(f"unknown link mode {link!r}; expected one of {', '.join(LINK_MODES)}")


def _basename(path: Path, img: dict[str, Any]) -> str:
    name = Path(str(img.get("file_name", ""))).name
    if not name:
        raise DataError(f"{path}: image id {img.get('id')} has no file_name")
    return name


def _names(parts: dict[str, Path], loaded: dict[str, dict[str, Any]]) -> list[str]:
    """Class names by id 1..C; every part must carry the same categories with contiguous ids."""
    ref: list[dict[str, Any]] | None = None
    ref_path = None
    for part, path in parts.items():
        cats = sorted(loaded[part]["categories"], key=lambda c: c["id"])
        if ref is None:
            ids = [c["id"] for c in cats]
            if ids != list(range(1, len(cats) + 1)):
                raise DataError(f"{path}: category ids must be 1..{len(cats)} (class = id - 1), got {ids}")
            ref, ref_path = cats, path
        elif [(c["id"], c["name"]) for c in cats] != [(c["id"], c["name"]) for c in ref]:
            raise DataError(f"{path}: categories differ from those of {ref_path}")
    return [c["name"] for c in ref or []]


def yolo_label_lines(anns: list[dict[str, Any]], json_size: tuple[int, int], img_size: tuple[int, int],
                     num_classes: int, json_path: Path | str = "<json>") -> list[str]:
    """``cls cx cy w h`` lines for the annotations of one image.

    Boxes are in json-image pixels (``json_size`` = (W, H)); the image actually exported is
    ``img_size`` = json size // k (k = 1 for HR, the scale for an LR copy), so boxes are divided by k and
    normalised by ``img_size``, then clipped to [0, 1]. Boxes empty after clipping are left out.
    """
    kx, ky = json_size[0] // img_size[0], json_size[1] // img_size[1]
    lines = []
    for a in [a for a in anns if not a.get("iscrowd", 0)]:  # crowd / DOTA partial (difficulty 2): no target
        cid = a.get("category_id")
        if not isinstance(cid, int) or not 1 <= cid <= num_classes:
            raise UnknownClassError(json_path, None, f"annotation id {a.get('id')}: category_id {cid!r} "
                                                     f"not in categories (ids 1..{num_classes})")
        x, y, w, h = (float(v) for v in a["bbox"])
        x1 = min(max(x / kx / img_size[0], 0.0), 1.0)
        y1 = min(max(y / ky / img_size[1], 0.0), 1.0)
        x2 = min(max((x + w) / kx / img_size[0], 0.0), 1.0)
        y2 = min(max((y + h) / ky / img_size[1], 0.0), 1.0)
        if x2 <= x1 or y2 <= y1:
            continue
        lines.append(f"{cid - 1} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return lines


def _scale_of(json_path: Path, name: str, json_size: tuple[int, int], img_size: tuple[int, int]) -> None:
    """Check that the exported image covers the json image's top-left ``k * size`` pixels for one integer ``k``:
    the image itself (k = 1), an LR copy (``json // k``), or an SR output of a scale the tile size is not a
    multiple of (``s * (json // s)``, the mod-crop: fewer than 8 pixels short)."""
    kx, ky = json_size[0] // max(img_size[0], 1), json_size[1] // max(img_size[1], 1)
    ok = kx >= 1 and kx == ky and all(0 <= j - i * kx < max(kx, 8) for j, i in zip(json_size, img_size))
    if not ok:
        raise DataError(f"{json_path}: image {name} is {img_size[0]}x{img_size[1]} but the json says "
                        f"{json_size[0]}x{json_size[1]}; expected the same size, an integer downscale or its "
                        f"mod-crop")


def export_yolo(parts: dict[str, Path], image_dir: Path, out_dir: Path, link: str = "hardlink") -> Path:
    """Export partitions to an ultralytics dataset; returns the path of ``out_dir/data.yaml``.

    Layout: ``out/images/<part>/<name>.png`` and ``out/labels/<part>/<name>.txt`` (one
    ``cls cx cy w h`` line per object, normalised, ``cls = category_id - 1``; empty file for an image
    without objects). ``data.yaml`` has ``path`` (absolute), one ``<part>: images/<part>`` key per part
    (``train`` and ``val`` are required by ultralytics), ``names`` and ``nc``.
    """
    import yaml  # noqa: PLC0415

    _check_link(link)
    parts = {str(k): Path(v) for k, v in parts.items()}
    for required in ("train", "val"):
        if required not in parts:
            raise ValueError(f"ultralytics needs a {required!r} part; got parts {sorted(parts)}")
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if not image_dir.is_dir():
        raise MissingFileError(f"image folder not found: {image_dir}")
    loaded = {part: _load_part(part, jpath) for part, jpath in parts.items()}
    names = _names(parts, loaded)
    counts: dict[str, dict[str, int]] = {}
    with atomic_dir(out_dir) as tmp:
        for part, jpath in parts.items():
            data = loaded[part]
            by_image: dict[Any, list[dict[str, Any]]] = {}
            for a in data.get("annotations", []):
                by_image.setdefault(a.get("image_id"), []).append(a)
            (tmp / "images" / part).mkdir(parents=True)
            (tmp / "labels" / part).mkdir(parents=True)
            seen: set[str] = set()
            n_obj = 0
            for img in data["images"]:
                name = _basename(jpath, img)
                if name in seen:
                    raise DataError(f"{jpath}: two images share the file name {name} (image id {img.get('id')})")
                seen.add(name)
                src = image_dir / name
                if not src.is_file():
                    raise MissingFileError(f"{jpath}: image id {img.get('id')} ({img.get('file_name')}): "
                                           f"{src} not found")
                img_size = _image_size(src)
                json_size = (int(img.get("width") or img_size[0]), int(img.get("height") or img_size[1]))
                _scale_of(jpath, name, json_size, img_size)
                lines = yolo_label_lines(by_image.get(img.get("id"), []), json_size, img_size, len(names), jpath)
                n_obj += len(lines)
                _place(src, tmp / "images" / part / name, link)
                # plain write: the whole folder is renamed into place atomically at the end
                (tmp / "labels" / part / f"{Path(name).stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            counts[part] = {"images": len(seen), "objects": n_obj}
        spec: dict[str, Any] = {"path": str(out_dir.resolve())}
        spec.update({part: f"images/{part}" for part in parts})
        spec["names"] = dict(enumerate(names))
        spec["nc"] = len(names)
        atomic_write_text(tmp / "data.yaml", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        atomic_write_json(tmp / "export_manifest.json", {
            "kind": "yolo", "image_dir": str(image_dir.resolve()), "link": link,
            "parts": {p: str(Path(j).resolve()) for p, j in parts.items()}, "counts": counts,
            "provenance": provenance(config={"kind": "yolo", "link": link})})
    return out_dir / "data.yaml"


def export_basicsr_pairs(parts: dict[str, Path], hr_dir: Path, lr_dir: Path, out_dir: Path,
                         link: str = "hardlink") -> dict[str, Any]:
    """Export ``out/<part>/HR/<name>.png`` and ``out/<part>/LR/<name>.png`` for BasicSR paired datasets.

    Every HR tile named by a part json must have an LR partner of the same name whose size is the HR
    size // one integer scale (mod-crop: x3 of a 256 px tile is 85 px), the same for all pairs. Writes and returns
    ``out/manifest.json`` (scale, counts, provenance).
    """
    _check_link(link)
    parts = {str(k): Path(v) for k, v in parts.items()}
    hr_dir, lr_dir, out_dir = Path(hr_dir), Path(lr_dir), Path(out_dir)
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise MissingFileError(f"image folder not found: {d}")
    scale: int | None = None
    counts: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        for part, jpath in parts.items():
            data = _load_part(part, jpath)
            (tmp / part / "HR").mkdir(parents=True)
            (tmp / part / "LR").mkdir(parents=True)
            for img in data["images"]:
                name = _basename(jpath, img)
                hr, lr = hr_dir / name, lr_dir / name
                if not hr.is_file():
                    raise MissingFileError(f"{jpath}: image id {img.get('id')}: HR tile {hr} not found")
                if not lr.is_file():
                    raise MissingFileError(f"{jpath}: HR tile {name} has no LR partner {lr}")
                (hw, hh), (lw, lh) = _image_size(hr), _image_size(lr)
                k = hw // lw if lw else 0
                if k < 1 or hw // k != lw or hh // k != lh:  # LR = HR // k (a mod-cropped HR when k does not divide it)
                    raise DataError(f"{name}: LR size {lw}x{lh} is not the HR size {hw}x{hh} divided by one "
                                    f"integer scale ({hr} vs {lr})")
                if scale is not None and k != scale:
                    raise DataError(f"{name}: HR/LR scale {k} ({hw}x{hh} vs {lw}x{lh}) differs from the "
                                    f"scale {scale} of the other pairs")
                scale = k
                _place(hr, tmp / part / "HR" / name, link)
                _place(lr, tmp / part / "LR" / name, link)
            counts[part] = len(data["images"])
        manifest = {"kind": "basicsr_pairs", "hr_dir": str(hr_dir.resolve()), "lr_dir": str(lr_dir.resolve()),
                    "out_dir": str(out_dir.resolve()), "scale": scale, "link": link, "counts": counts,
                    "parts": {p: str(Path(j).resolve()) for p, j in parts.items()},
                    "provenance": provenance(config={"kind": "basicsr_pairs", "link": link})}
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest
