"""Embedded synthetic DEMO dataset: small aerial-like scenes with the 4 ``DEMO_CLASSES``.

Each scene has a smoothed-noise ground of earth/grass colours, a water patch, one to three roads with
dashed lane marks, and objects whose appearance differs per class so a detector can learn them:

* vehicle: small bright rectangle with a dark windscreen stripe, on a road along its direction (or
  anywhere at a random angle);
* ship: elongated hull with a pointed bow and a superstructure, on the water;
* storage tank: bright disc inside a dark ring (angle 0);
* airplane: cross shape (fuselage, wings, tailplane) with a soft shadow.

Object sizes (longest side of the axis-aligned box) lie in ``[min_obj, max_obj]``; placements whose
box has IoU > 0.1 with an already placed box are rejected. The output is deterministic for a seed.
``angle`` is the heading of the object's long axis in degrees from +x, in image coordinates (y down).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from data_prep.classes import DEMO_CLASSES
from benchcore.atomic import atomic_dir, atomic_write_json

_GROUND = np.array([[96, 112, 64], [132, 118, 88], [78, 96, 58], [150, 140, 110]], dtype=np.float32)
_WATER = np.array([38, 72, 118], dtype=np.float32)
_CAR_COLOURS = [(220, 30, 30), (240, 240, 240), (30, 80, 220), (240, 200, 20), (20, 20, 20), (200, 200, 210)]
# size range of each class as fractions of [min_obj, max_obj]
_SIZE_FRAC = {"vehicle": (0.0, 0.3), "ship": (0.25, 1.0), "storage tank": (0.1, 0.7), "airplane": (0.4, 1.0)}
# the simple style gives each class one colour of its own (shape and colour both tell the class)
_SIMPLE_BODY = {"vehicle": (220, 30, 30), "ship": (240, 200, 30), "storage tank": (60, 210, 230),
                "airplane": (245, 245, 245)}
_SHIFT = 4  # cv2 sub-pixel bits
_MAX_IOU = 0.1


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blend of earth/grass colours driven by two smooth noise fields, plus fine grain."""
    a, b = _smooth_noise(rng, size, 6), _smooth_noise(rng, size, 14)
    cols = _GROUND[rng.permutation(len(_GROUND))[:3]]
    w0 = np.clip(a, 0, 1)[..., None]
    w1 = np.clip(b, 0, 1)[..., None] * 0.4
    img = cols[1] + (cols[0] - cols[1]) * w0
    img = img * (0.6 + w1) + cols[2] * (0.4 - w1)
    img += rng.standard_normal((size, size, 1), dtype=np.float32) * 6
    return img


def _poly(img: np.ndarray, pts: np.ndarray, colour: tuple[float, ...]) -> None:
    cv2.fillPoly(img, [np.round(pts * (1 << _SHIFT)).astype(np.int32)], colour, cv2.LINE_AA, _SHIFT)


def _rot(pts: np.ndarray, deg: float, centre: np.ndarray) -> np.ndarray:
    t = math.radians(deg)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=np.float64)
    return pts @ r.T + centre


def _shape(cls: str) -> list[tuple[np.ndarray, str]]:
    """Unit-length polygons (long axis along +x, centred) with a colour role for each part."""
    if cls == "vehicle":
        return [(np.array([[-.5, -.25], [.5, -.25], [.5, .25], [-.5, .25]]), "body"),
                (np.array([[.12, -.2], [.26, -.2], [.26, .2], [.12, .2]]), "dark")]
    if cls == "ship":
        return [(np.array([[-.5, -.12], [.22, -.12], [.5, 0], [.22, .12], [-.5, .12]]), "body"),
                (np.array([[-.4, -.07], [-.1, -.07], [-.1, .07], [-.4, .07]]), "dark")]
    if cls == "airplane":
        fus = np.array([[-.5, -.06], [.42, -.06], [.5, 0], [.42, .06], [-.5, .06]])
        wing = np.array([[.16, -.48], [.02, -.48], [-.02, .48], [.12, .48]])
        tail = np.array([[-.36, -.18], [-.46, -.18], [-.46, .18], [-.36, .18]])
        return [(fus, "body"), (wing, "body"), (tail, "body")]
    raise ValueError(f"no polygon shape for class {cls!r}")


def _iou(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _try_place(rng: np.random.Generator, cls: str, size: int, min_obj: int, max_obj: int, roads: list,
               water: np.ndarray, on_water: np.ndarray, objects: list[dict[str, Any]]) -> tuple | None:
    """A free placement ``(box, parts, angle, size, centre)`` for one object of ``cls``, or None."""
    lo, hi = _SIZE_FRAC[cls]
    # kept 0.02 px inside [min_obj, max_obj] so the outward 2-decimal rounding of the box stays inside
    target = min(max(min_obj + (max_obj - min_obj) * rng.uniform(lo, hi), min_obj), max_obj - 0.02)
    for _attempt in range(40):
        angle = float(rng.uniform(0, 360))
        if cls == "vehicle" and roads and rng.random() < 0.7:
            p, d, ang, width = roads[int(rng.integers(len(roads)))]
            normal = np.array([-d[1], d[0]])
            centre = p + d * rng.uniform(-size, size) + normal * width * rng.choice([-0.25, 0.25])
            angle = (ang + float(rng.choice([0.0, 180.0])) + float(rng.normal(0, 2))) % 360
        else:
            centre = rng.uniform(0, size, 2)
        parts: list[tuple[np.ndarray, str]] = []
        if cls == "storage tank":
            box = [*(centre - target / 2), *(centre + target / 2)]
            angle = 0.0
        else:
            unit = [(_rot(pts, angle, np.zeros(2)), role) for pts, role in _shape(cls)]
            allp = np.concatenate([u for u, _ in unit])
            ext = (allp.max(0) - allp.min(0)).max()
            parts = [(u * (target / ext) + centre, role) for u, role in unit]
            allp = np.concatenate([u for u, _ in parts])
            box = [*allp.min(0), *allp.max(0)]
        if box[0] < 1 or box[1] < 1 or box[2] > size - 1 or box[3] > size - 1:
            continue
        if any(_iou(box, o["bbox"]) > _MAX_IOU for o in objects):
            continue
        ix, iy = int(centre[0]), int(centre[1])
        if cls == "ship":
            corners = np.concatenate([u for u, _ in parts]).astype(int)
            if not on_water[corners[:, 1], corners[:, 0]].all() or not on_water[iy, ix]:
                continue
        elif water[iy, ix]:
            continue
        return [float(v) for v in box], parts, angle, float(target), centre
    return None


def _plain_ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """One earth/grass colour with light grain: the ``simple`` style's ground."""
    img = np.broadcast_to(_GROUND[int(rng.integers(len(_GROUND)))], (size, size, 3)).astype(np.float32)
    return img + rng.standard_normal((size, size, 1), dtype=np.float32) * 3


def _scene(rng: np.random.Generator, size: int, min_obj: int, max_obj: int,
           n_obj: int, style: str = "scene") -> tuple[np.ndarray, list[dict[str, Any]]]:
    simple = style == "simple"
    img = _plain_ground(rng, size) if simple else _ground(rng, size)
    # water patch: union of a few ellipses
    water = np.zeros((size, size), np.uint8)
    wc = rng.uniform(0.2, 0.8, 2) * size
    for _ in range(int(rng.integers(2, 5))):
        c = wc + rng.normal(0, size * 0.08, 2)
        ax = rng.uniform(0.08, 0.18, 2) * size
        cv2.ellipse(water, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
    ripple = _smooth_noise(rng, size, 24)[..., None] * (4 if simple else 18)
    img = np.where(water[..., None] > 0, _WATER + ripple, img)
    # roads through random points: horizontal, vertical or oblique (none in the simple style)
    roads = []
    for _ in range(0 if simple else int(rng.integers(1, 4))):
        p = rng.uniform(0.15, 0.85, 2) * size
        ang = float(rng.choice([0.0, 90.0, rng.uniform(0, 180)]))
        width = float(rng.uniform(0.035, 0.05) * size)
        d = np.array([math.cos(math.radians(ang)), math.sin(math.radians(ang))])
        a, b = p - d * size * 1.5, p + d * size * 1.5
        grey = float(rng.uniform(85, 120))
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (grey, grey, grey), int(width), cv2.LINE_AA)
        dash = max(4.0, size / 64)
        for t in np.arange(-size * 1.5, size * 1.5, 2 * dash):
            q0, q1 = p + d * t, p + d * (t + dash)
            cv2.line(img, (int(q0[0]), int(q0[1])), (int(q1[0]), int(q1[1])), (235, 235, 225), 1, cv2.LINE_AA)
        roads.append((p, d, ang, width))
    road_mask = np.zeros((size, size), np.uint8)
    for p, d, _, width in roads:
        a, b = p - d * size * 1.5, p + d * size * 1.5
        cv2.line(road_mask, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, int(width))
    on_water = (water > 0) & (road_mask == 0)
    sun = rng.uniform(0, 2 * math.pi)
    shadow = np.array([math.cos(sun), math.sin(sun)])

    objects: list[dict[str, Any]] = []
    for _ in range(n_obj):
        first = int(rng.integers(len(DEMO_CLASSES)))
        # the drawn class first; when it finds no free spot (e.g. no room on the water), the others
        for cls in (DEMO_CLASSES[(first + k) % len(DEMO_CLASSES)] for k in range(len(DEMO_CLASSES))):
            placed = _try_place(rng, cls, size, min_obj, max_obj, roads, water, on_water, objects)
            if placed is not None:
                break
        else:
            continue  # the scene is full: leave this object out
        box, parts, angle, target, centre = placed
        if cls == "storage tank":
            r = target / 2
            c = tuple(int(round(v * (1 << _SHIFT))) for v in centre)
            sc = tuple(int(round((v + s * r * 0.15) * (1 << _SHIFT))) for v, s in zip(centre, shadow))
            cv2.circle(img, sc, int(r * (1 << _SHIFT)), (40, 40, 40), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, c, int(r * (1 << _SHIFT)), (30, 30, 34), -1, cv2.LINE_AA, _SHIFT)
            disc = _SIMPLE_BODY["storage tank"] if simple else (228, 228, 222)
            cv2.circle(img, c, int(r * 0.78 * (1 << _SHIFT)), disc, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, c, int(r * 0.3 * (1 << _SHIFT)), (196, 196, 190), -1, cv2.LINE_AA, _SHIFT)
        else:
            body = (_CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))] if cls == "vehicle"
                    else (235, 235, 235) if cls == "airplane" else (210, 205, 195))
            if simple:
                body = _SIMPLE_BODY[cls]
            dark = (35, 40, 50) if cls == "vehicle" else (120, 120, 125)
            if cls == "airplane":
                for pts, _ in parts:
                    _poly(img, pts + shadow * target * 0.12, (55, 58, 50))
            for pts, role in parts:
                _poly(img, pts, body if role == "body" else dark)
        x1, y1 = (math.floor(v * 100) / 100 for v in box[:2])  # rounded outwards to 0.01 px
        x2, y2 = (math.ceil(v * 100) / 100 for v in box[2:])
        objects.append({"bbox": [max(x1, 0.0), max(y1, 0.0), min(x2, float(size)), min(y2, float(size))],
                        "category": cls, "angle": round(angle, 2)})
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects


DEMO_STYLES = ("scene", "simple")


def generate_demo(out_root: str | Path, n_images: int = 12, size: int = 512, seed: int = 0, min_obj: int = 8,
                  max_obj: int = 40, objects_per_image: tuple[int, int] | list[int] = (6, 14),
                  style: str = "scene") -> Path:
    """Write ``out_root/images/demo_NNNN.png`` and ``out_root/demo_annotations.json``; returns ``out_root``.

    ``style="scene"`` draws textured ground, water and roads; ``"simple"`` draws one flat ground colour with
    light grain and calm water, and no roads: the same objects on a background a small model learns in seconds.

    The json is ``{"classes": [...], "images": [{"file_name": "images/demo_0000.png", "width", "height",
    "split": null, "objects": [{"bbox": [x1, y1, x2, y2], "category": name, "angle": degrees}]}]}``.
    ``out_root`` is built in a temporary sibling and replaces any previous folder atomically.
    Deterministic for a given ``seed`` (``numpy.random.default_rng([seed, image index])`` per image).
    """
    if n_images < 1 or size < 64:
        raise ValueError(f"need n_images >= 1 and size >= 64, got n_images={n_images}, size={size}")
    if not 1 <= min_obj <= max_obj or max_obj > size // 4:
        raise ValueError(f"need 1 <= min_obj <= max_obj <= size/4, got min_obj={min_obj}, max_obj={max_obj}, "
                         f"size={size}")
    if style not in DEMO_STYLES:
        raise ValueError(f"unknown demo style {style!r}; expected one of {DEMO_STYLES}")
    lo, hi = objects_per_image
    if not 0 <= lo <= hi:
        raise ValueError(f"objects_per_image must be (lo, hi) with 0 <= lo <= hi, got {objects_per_image}")
    out_root = Path(out_root)
    records = []
    with atomic_dir(out_root) as tmp:
        (tmp / "images").mkdir()
        for i in range(n_images):
            rng = np.random.default_rng([int(seed), i])
            img, objects = _scene(rng, size, min_obj, max_obj, int(rng.integers(lo, hi + 1)), style)
            name = f"images/demo_{i:04d}.png"
            Image.fromarray(img).save(tmp / name, format="PNG", compress_level=1)
            records.append({"file_name": name, "width": size, "height": size, "split": None, "objects": objects})
        atomic_write_json(tmp / "demo_annotations.json", {"classes": list(DEMO_CLASSES), "images": records})
    return out_root
