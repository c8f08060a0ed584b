"""Map detector outputs to COCO detections on the HR tile grid.

Detectors see the tile at some resolution (LR, SR or HR) and return ``xyxy`` boxes on *that* grid. Every
evaluation is on the HR grid (``docs/formats.md`` §4), so boxes are multiplied by the HR/input size ratio
(``scale_x``, ``scale_y``), clipped to the HR tile and converted to COCO ``[x, y, w, h]``. Image ids come
from the tile COCO json, matched by file *stem* (``images/P0001__0_512.png`` matches ``P0001__0_512.png``
and ``.../labels/test/P0001__0_512.txt`` alike); tile stems are unique by construction.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


def load_coco(coco: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A COCO dict from a dict or a json path (errors name the file)."""
    if isinstance(coco, Mapping):
        return dict(coco)
    path = Path(coco)
    if not path.is_file():
        raise FileNotFoundError(f"COCO json not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


class TileIndex:
    """Look up tile records (id, width, height) of a COCO json by file name or stem."""

    def __init__(self, coco: Mapping[str, Any] | str | os.PathLike):
        self.source = str(coco) if not isinstance(coco, Mapping) else "<dict>"
        self.coco = load_coco(coco)
        self.by_stem: dict[str, dict[str, Any]] = {}
        for im in self.coco["images"]:
            stem = Path(im["file_name"]).stem
            if stem in self.by_stem:
                raise ValueError(f"{self.source}: two images share the stem {stem!r}; cannot map files to ids")
            self.by_stem[stem] = im
        self.categories: list[dict[str, Any]] = sorted(self.coco["categories"], key=lambda c: c["id"])

    def __len__(self) -> int:
        return len(self.by_stem)

    def lookup(self, file: str | os.PathLike) -> dict[str, Any]:
        """The image record whose stem equals ``file``'s stem (KeyError naming the file otherwise)."""
        stem = Path(file).stem
        try:
            return self.by_stem[stem]
        except KeyError:
            raise KeyError(f"{file}: no image with stem {stem!r} in {self.source}") from None

    def find_file(self, image_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
        """The file of ``record`` in ``image_dir``: ``file_name`` as is, its base name, or ``<stem>.png``."""
        root, rel = Path(image_dir), Path(record["file_name"])
        for cand in (root / rel, root / rel.name, root / (rel.stem + ".png")):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"image for {record['file_name']!r} (id {record['id']}) not found in {root}")


def scale_factors(record: Mapping[str, Any], size: tuple[int, int], scale_to_hr: float | None = None
                  ) -> tuple[float, float]:
    """``(scale_x, scale_y)`` from an input image of ``size`` (w, h) to the HR grid of ``record``.

    With ``scale_to_hr`` given it is used for both axes after a sanity check (``size * scale`` must be
    within ``max(scale, 4)`` pixels of the json size: LR = HR // scale loses up to ``scale - 1`` pixels, a
    wrong factor is off by far more); otherwise the json/actual size ratio per axis.
    """
    w, h = size
    if scale_to_hr is None:
        return record["width"] / w, record["height"] / h
    s = float(scale_to_hr)
    tol = max(s, 4.0)
    if abs(w * s - record["width"]) > tol or abs(h * s - record["height"]) > tol:
        raise ValueError(f"{record['file_name']}: input {w}x{h} x {s} does not match the HR size "
                         f"{record['width']}x{record['height']} in the COCO json (wrong scale_to_hr?)")
    return s, s


def boxes_to_coco(xyxy: np.ndarray | Sequence[Sequence[float]], scores: Iterable[float],
                  category_ids: Iterable[int], image_id: int, scale_x: float, scale_y: float,
                  width: float | None = None, height: float | None = None) -> list[dict[str, Any]]:
    """``xyxy`` boxes on the detector grid -> COCO detections ``[x, y, w, h]`` on the HR grid.

    Boxes are scaled, clipped to ``[0, width] x [0, height]`` when given, and dropped if empty after clipping.
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) * np.array([scale_x, scale_y, scale_x, scale_y])
    if width is not None:
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    if height is not None:
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    out = []
    for box, score, cat in zip(b, scores, category_ids):
        w, h = box[2] - box[0], box[3] - box[1]
        if w > 0 and h > 0:
            out.append({"image_id": int(image_id), "category_id": int(cat),
                        "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "score": float(score)})
    return out


def map_detections_to_hr(dets: Iterable[Mapping[str, Any]], scale_x: float, scale_y: float | None = None,
                         width: float | None = None, height: float | None = None) -> list[dict[str, Any]]:
    """Map ``[{"image_id", "category_id", "xyxy": [x1, y1, x2, y2], "score"}]`` to COCO HR detections.

    ``scale_y`` defaults to ``scale_x``. ``width``/``height`` (HR) clip the boxes when given.
    """
    sy = scale_x if scale_y is None else scale_y
    out: list[dict[str, Any]] = []
    for d in dets:
        out += boxes_to_coco([d["xyxy"]], [d["score"]], [d["category_id"]], d["image_id"], scale_x, sy,
                             width, height)
    return out


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("-", " ").replace("_", " ").split())


def yolo_class_map(names: Mapping[int, str] | Sequence[str], categories: Sequence[Mapping[str, Any]]
                   ) -> dict[int, int]:
    """YOLO class index -> COCO ``category_id`` (``cls + 1``), checked against the class names.

    Names are compared case-insensitively with ``-``/``_`` treated as spaces; a mismatch (e.g. a model
    trained on another dataset's class order) raises ValueError listing the first differing class.
    """
    names = dict(enumerate(names)) if not isinstance(names, Mapping) else dict(names)
    cats = {int(c["id"]): str(c["name"]) for c in categories}
    out = {}
    for cls, name in sorted(names.items()):
        cid = int(cls) + 1
        if cid not in cats:
            raise ValueError(f"YOLO class {cls} ({name!r}) -> category_id {cid}, absent from the COCO categories")
        if _norm(name) != _norm(cats[cid]):
            raise ValueError(f"YOLO class {cls} is {name!r} but category_id {cid} is {cats[cid]!r}: "
                             f"class order differs from the COCO json")
        out[int(cls)] = cid
    if len(out) != len(cats):
        raise ValueError(f"YOLO model has {len(out)} classes, the COCO json {len(cats)}")
    return out


def label_maps(categories: Sequence[Mapping[str, Any]]) -> tuple[dict[int, int], dict[int, int]]:
    """``(category_id -> label, label -> category_id)`` with labels 1..C (0 = background) in id order."""
    ids = sorted(int(c["id"]) for c in categories)
    cat_to_label = {cid: i + 1 for i, cid in enumerate(ids)}
    return cat_to_label, {v: k for k, v in cat_to_label.items()}
