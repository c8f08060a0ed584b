"""Partition a tile json into train/val/test without leakage (``docs/formats.md`` section 3).

Tiles are grouped by ``source_image_id``: all tiles of one source image land in the same part, because
overlapping tiles share pixels and objects. Writes ``OUT/{train,val,test}.json`` (every part, even an
empty one), each a COCO subset with image/annotation ids and ``file_name``s preserved.

A part left with fewer than ``min_source_images`` source images (default :data:`MIN_SOURCE_IMAGES`) is
logged as a warning with its counts, before any training: its metrics would rest on one or two scenes.
A part that is empty on purpose (ratio 0 in ratio mode) is not warned about.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from data_prep.errors import DataError
from benchcore.atomic import atomic_write_json
from benchcore.provenance import provenance

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
#: A part with fewer source images than this is warned about (config key ``partition.min_source_images``).
MIN_SOURCE_IMAGES = 2
DEFAULT_RATIOS: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
_OFFICIAL_ALIASES = {"train": "train", "trainval": "train", "val": "val", "test": "test"}


def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Validate ``ratios`` (keys among train/val/test, missing keys = 0, non-negative, sum 1 +- 1e-6)."""
    out = {p: 0.0 for p in PARTS}
    for key, value in ratios.items():
        if key not in PARTS:
            raise ValueError(f"ratios: unknown key {key!r}; expected some of {list(PARTS)}")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"ratios[{key!r}] = {value!r} is not a number") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise ValueError(f"ratios[{key!r}] = {value!r} must be a finite number >= 0")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        detail = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise ValueError(f"ratios must sum to 1 within 1e-6, got {total:.6g} ({detail})")
    return out


def split_by_ratio(source_ids: list[int], ratios: Mapping[str, float], seed: int) -> dict[str, list[int]]:
    """Shuffle the sorted ``source_ids`` with ``default_rng(seed)`` and cut at the cumulative ratios."""
    ratios = check_ratios(ratios)
    ids = sorted(set(int(i) for i in source_ids))
    perm = [int(i) for i in np.random.default_rng(seed).permutation(ids)] if ids else []
    parts, start, cum = {}, 0, 0.0
    for p in PARTS:
        cum += ratios[p]
        end = len(perm) if p == PARTS[-1] else min(len(perm), math.floor(len(perm) * cum + 0.5))
        parts[p] = sorted(perm[start:end])
        start = end
    return parts


def _official(images: list[dict[str, Any]], ratios: Mapping[str, float], seed: int,
              where: str, split_map: Mapping[str, str] | None = None) -> tuple[dict[str, list[int]], bool]:
    """Source ids per part from each tile's ``split``; carve val out of train when val is absent.

    ``split_map`` renames official splits first, e.g. ``{"val": "test"}`` for DOTA, whose test labels are
    private (the official SDCoNet configs score on ``val``); keys and values are split / part names.
    """
    for key, value in (split_map or {}).items():
        if value not in PARTS:
            raise DataError(f"split_map[{key!r}] = {value!r}: expected one of {PARTS}")
    missing = [im for im in images if im.get("split") is None]
    if missing:
        raise DataError(f"{where}: {len(missing)} tile(s) have no official split (split is null), "
                        f"e.g. {missing[0].get('file_name')}; use mode='ratio'")
    split_of: dict[int, str] = {}
    for im in images:
        name = (split_map or {}).get(str(im["split"]).lower(), str(im["split"]).lower())
        part = _OFFICIAL_ALIASES.get(name)
        if part is None:
            raise DataError(f"{where}: tile {im.get('file_name')} has unknown split {im['split']!r}; "
                            f"expected one of {sorted(_OFFICIAL_ALIASES)}")
        sid = im["source_image_id"]
        if split_of.setdefault(sid, part) != part:
            raise DataError(f"{where}: source image {im.get('source_file', sid)} has tiles in both "
                            f"{split_of[sid]!r} and {part!r}")
    parts = {p: sorted(s for s, q in split_of.items() if q == p) for p in PARTS}
    carved = not parts["val"] and bool(parts["train"])
    if carved:
        val_ratio = check_ratios(ratios)["val"]
        sub = split_by_ratio(parts["train"], {"train": 1.0 - val_ratio, "val": val_ratio}, seed)
        parts["train"], parts["val"] = sub["train"], sub["val"]
    return parts, carved


def warn_small_parts(summary: Mapping[str, Any], where: str, min_source_images: int = MIN_SOURCE_IMAGES
                     ) -> list[str]:
    """Log (and return) one warning per part of ``summary`` with fewer than ``min_source_images`` sources.

    ``where`` names the dataset and partition folder in the message. Parts with ratio 0 in ratio mode
    are skipped (empty on purpose).
    """
    msgs = []
    for p, c in summary["parts"].items():
        if c["source_images"] >= min_source_images or (summary["mode"] == "ratio" and summary["ratios"][p] == 0):
            continue
        msgs.append(f"{where}: split {p!r} has only {c['source_images']} source image(s) "
                    f"({c['tiles']} tile(s), {c['annotations']} object(s)), fewer than min_source_images="
                    f"{min_source_images}; its metrics will rest on very few scenes (add images or change "
                    "partition.ratios)")
        log.warning("%s", msgs[-1])
    return msgs


def partition_tiles(tiles_json: str | Path, out_dir: str | Path, mode: str = "ratio",
                    ratios: Mapping[str, float] | None = None, seed: int = 0,
                    split_map: Mapping[str, str] | None = None,
                    min_source_images: int = MIN_SOURCE_IMAGES) -> dict[str, Any]:
    """Write ``out_dir/{train,val,test}.json`` and return a summary (counts per part).

    ``mode="ratio"``: source images are shuffled with ``seed`` and cut by ``ratios`` (fractions of source
    images). ``mode="official"``: each tile's ``split`` decides; when no tile is ``val`` (a trainval-style
    split), a fraction ``ratios["val"]`` of the train source images is moved to val with ``seed``.
    Parts with fewer than ``min_source_images`` source images are warned about (``summary["warnings"]``).
    """
    tiles_json, out_dir = Path(tiles_json), Path(out_dir)
    ratios = check_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    try:
        coco = json.loads(tiles_json.read_text(encoding="utf-8"))
        images, annotations = coco["images"], coco["annotations"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{tiles_json}: not a tile COCO json ({type(exc).__name__}: {exc})") from exc
    for im in images:
        if "source_image_id" not in im:
            raise DataError(f"{tiles_json}: image {im.get('file_name', im.get('id'))} has no 'source_image_id' "
                            "(expected the output of data_prep.split)")
    carved = False
    if mode == "ratio":
        parts = split_by_ratio([im["source_image_id"] for im in images], ratios, seed)
    elif mode == "official":
        parts, carved = _official(images, ratios, seed, str(tiles_json), split_map)
    else:
        raise ValueError(f"unknown partition mode {mode!r}; expected 'ratio' or 'official'")
    part_of = {sid: p for p, sids in parts.items() for sid in sids}
    anns_by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in annotations:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    config = {"mode": mode, "ratios": ratios, "seed": seed, "split_map": dict(split_map or {}), "val_carved_from_train": carved,
              "source_json": str(tiles_json)}
    prov = provenance(config=config)
    info_common = {k: v for k, v in coco.get("info", {}).items() if k != "provenance"}
    summary: dict[str, Any] = {**config, "parts": {}}
    total_tiles = max(1, len(images))
    for p in PARTS:
        imgs = [im for im in images if part_of[im["source_image_id"]] == p]
        anns = [a for im in imgs for a in anns_by_image.get(im["id"], [])]
        info = {**info_common, "partition": {**config, "part": p, "source_image_ids": parts},
                "tile_provenance": coco.get("info", {}).get("provenance"), "provenance": prov}
        atomic_write_json(out_dir / f"{p}.json", {"info": info, "categories": coco.get("categories", []),
                                                  "images": imgs, "annotations": anns})
        summary["parts"][p] = {"source_images": len(parts[p]), "tiles": len(imgs), "annotations": len(anns),
                               "tile_fraction": len(imgs) / total_tiles}
    dataset = coco.get("info", {}).get("dataset", "?")
    summary["warnings"] = warn_small_parts(summary, f"dataset {dataset}, partition {out_dir}", min_source_images)
    return summary


__all__ = ["DEFAULT_RATIOS", "MIN_SOURCE_IMAGES", "PARTS", "check_ratios", "partition_tiles", "split_by_ratio",
           "warn_small_parts"]
