"""DOTA_devkit ``ImgSplit.savepatches`` semantics for oriented (DOTA) objects.

The rule (docs/formats.md section 2): ``f = area(polygon inside the devkit window) / area(polygon)``; a polygon
wholly inside is written unchanged; otherwise the cut is written only when it has 4 or 5 corners, as its box,
with the object's own difficulty when ``f > 0.7`` and as a partial object (``difficult: 2, iscrowd: 1``) when
``0 < f <= 0.7``. Every expected number below is derived by hand from those rules, not from the suite's output.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchcore.metrics.detection import coco_evaluate, voc_map50
from data_prep.convert import convert_dataset
from data_prep.export import yolo_label_lines
from data_prep.split import (KeptObject, clip_polygon, keep_object, keep_polygon, oriented_polygon, polygon_area,
                             polygon_corners, split_dataset, tile_objects, tile_windows)

WIN = (0.0, 0.0, 512.0, 512.0)


def pts(*coords: float) -> list[tuple[float, float]]:
    return list(zip(coords[0::2], coords[1::2]))


# ----------------------------------------------------------------------------- geometry
def test_area_clip_and_corner_count() -> None:
    diamond = pts(447, 150, 497, 100, 547, 150, 497, 200)  # |x-497| + |y-150| <= 50: area 2 * 50^2
    assert polygon_area(diamond) == polygon_area(diamond[::-1]) == 5000.0
    cut = clip_polygon(diamond, WIN)  # the tip beyond x = 512 goes: a triangle of height 35, base 70
    assert polygon_area(cut) == 5000.0 - 35 * 35 and polygon_corners(cut) == 5
    assert sorted(cut) == sorted(pts(447, 150, 497, 100, 512, 115, 512, 185, 497, 200))
    # repeated points and straight vertices are no corners (a cut through a vertex repeats it)
    assert polygon_corners(pts(0, 0, 1, 0, 2, 0, 2, 2, 2, 2, 0, 2, 0, 0)) == 4
    assert polygon_corners(pts(0, 0, 5, 0, 10, 0)) == 0  # flat: no polygon
    assert clip_polygon(pts(600, 0, 700, 0, 700, 50), WIN) == []


def test_keep_polygon_edges() -> None:
    inside = pts(10, 10, 60, 10, 60, 40, 10, 40)
    assert keep_polygon(inside, WIN) == KeptObject((10.0, 10.0, 60.0, 40.0), False, False)
    assert keep_polygon(pts(512, 0, 522, 0, 522, 10, 512, 10), WIN) is None  # touches the border only: f = 0
    assert keep_polygon(pts(0, 0, 10, 10, 20, 20, 30, 30), WIN) is None  # zero area (devkit: skipped)
    # f = 7/10 exactly: the devkit keeps its own difficulty only above 0.7 -> partial (the box rule keeps >= 0.7)
    at_thr = pts(505, 0, 515, 0, 515, 10, 505, 10)
    assert keep_polygon(at_thr, WIN) == KeptObject((505.0, 0.0, 512.0, 10.0), True, True)
    assert keep_object((505, 0, 515, 10), WIN) == (505, 0, 512, 10)
    assert keep_polygon(pts(504, 0, 514, 0, 514, 10, 504, 10), WIN) == KeptObject((504.0, 0.0, 512.0, 10.0),
                                                                                  True, False)  # f = 0.8
    # a diamond's tip (f = 8^2 / (2 * 40^2) = 0.02) is a 3-corner cut: the devkit skips it
    assert keep_polygon(pts(440, 60, 480, 20, 520, 60, 480, 100), (512, 0, 1024, 512)) is None
    # two tips cut off (f = 1 - 2 * 10^2 / 5000 = 0.96): 6 corners, skipped although f > 0.7
    hexagon_case = pts(302, 352, 352, 302, 402, 352, 352, 402)
    assert polygon_corners(clip_polygon(hexagon_case, (312, 312, 824, 824))) == 6
    assert keep_polygon(hexagon_case, (312, 312, 824, 824)) is None


def test_oriented_polygon_only_for_one_four_corner_ring() -> None:
    assert oriented_polygon({"segmentation": [[1, 2, 3, 2, 3, 4, 1, 4]]}) == ((1, 2), (3, 2), (3, 4), (1, 4))
    for seg in (None, [[1, 2, 3, 2, 3, 4]], [[1, 2, 3, 2, 3, 4, 1, 4], [1, 2, 3, 2, 3, 4, 1, 4]],
                {"counts": "x", "size": [4, 4]}, [[1, 2, 3, 2, 3, 4, 1, "4"]]):
        assert oriented_polygon({"segmentation": seg}) is None


def test_tile_objects_box_and_polygon_rules_side_by_side() -> None:
    """The same rotated object measured on its box (NWPU-style source) and on its polygon (DOTA)."""
    diamond = (447, 150, 497, 100, 547, 150, 497, 200)
    box_only = [(1, 2, (447, 100, 100, 100), 0, None)]
    oriented = [(1, 2, (447, 100, 100, 100), 0, tuple(pts(*diamond)))]
    # box rule: 65 / 100 = 0.65 < 0.7 in tile (0, 0) of a 1000 x 600 image -> dropped
    assert tile_objects(box_only, (0, 0), 512, (1000, 600)) == ([], 1, set())
    # polygon rule: f = 0.755 > 0.7, 5-corner cut -> kept, box of the cut, own difficulty
    anns, dropped, kept = tile_objects(oriented, (0, 0), 512, (1000, 600))
    assert dropped == 0 and kept == {1}
    assert anns == [{"category_id": 2, "bbox": [447.0, 100.0, 65.0, 100.0], "area": 6500.0, "iscrowd": 0,
                     "truncated": 1, "difficult": 0}]


# ----------------------------------------------------------------------------- a DOTA-format image end to end
# 824 x 824 image, tile 512, gap 200: tile_windows gives x0, y0 in {0, 312} (312 + 512 = 824 reaches the edge),
# i.e. four tiles, in the suite's order (columns outer): (0, 0), (0, 312), (312, 0), (312, 312).
# The devkit measures on [x0, min(x0 + 512, W - 1)] x [y0, min(y0 + 512, H - 1)]:
#   A (0, 0): [0, 512]^2   C (0, 312): [0, 512] x [312, 823]   B (312, 0): [312, 823] x [0, 512]
#   D (312, 312): [312, 823]^2
LABELS = """imagesource:GoogleEarth
gsd:0.146343590398
50.0 50.0 150.0 50.0 150.0 120.0 50.0 120.0 plane 0
447.0 150.0 497.0 100.0 547.0 150.0 497.0 200.0 ship 0
260.0 230.0 340.0 290.0 370.0 250.0 290.0 190.0 large-vehicle 1
545.0 345.0 541.0 341.0 341.0 541.0 345.0 545.0 bridge 0
302.0 352.0 352.0 302.0 402.0 352.0 352.0 402.0 storage-tank 1
240.0 60.0 280.0 20.0 320.0 60.0 280.0 100.0 helicopter 0
-1.0 600.0 40.0 600.0 40.0 640.0 -1.0 640.0 small-vehicle 0
600.0 790.0 700.0 790.0 700.0 824.0 600.0 824.0 swimming-pool 0
"""
# The objects (y < 312 keeps O1, O2, O3, O6 out of tiles C and D; x < 312 keeps O1, O7 out of B and D):
# O1 plane, axis-aligned [50, 150] x [50, 120]: wholly inside A only.
# O2 ship, diamond |x - 497| + |y - 150| <= 50 (area 5000), crosses x = 512 (A's right side).
#    A: the tip beyond 512 is a triangle of height 35 and base 70 (1225): f = 3775 / 5000 = 0.755 > 0.7;
#       the cut (447,150) (497,100) (512,115) (512,185) (497,200) has 5 corners -> kept, own difficulty 0,
#       box [447, 100] - [512, 200]. (Its box fraction is 65 / 100 = 0.65: the box rule drops it.)
#    B: wholly inside -> [447, 100] - [547, 200] unchanged.
# O3 large-vehicle (difficult 1), rectangle 100 x 50 rotated by atan(3/4) (area 5000), crosses x = 312.
#    A: wholly inside -> [260, 190] - [370, 290], difficulty 1.
#    B: edge (260,230)-(340,290) meets x = 312 at y = 230 + 52 * 60 / 80 = 269; edge (370,250)-(290,190) at
#       y = 250 - 58 * 60 / 80 = 206.5. Cut (312,269) (340,290) (370,250) (312,206.5): 4 corners, shoelace area
#       2687.5, f = 0.5375 <= 0.7 -> partial: difficulty 2, iscrowd 1, box [312, 206.5] - [370, 290].
# O4 bridge, a thin rectangle along x + y = 886 (|x + y - 886| <= 4, |x - y| <= 200: area 8 * 400 / 2 = 1600),
#    through A's bottom-right corner (512, 512), which it does not contain (x + y = 1024 > 890).
#    Each end beyond x = 512 (or y = 512) is, per s = x + y in [882, 890], the d = x - y interval
#    [1024 - s, 200]: area = int (s - 824) ds / 2 over [882, 890] = (66^2 - 58^2) / 4 = 248.
#    A: both ends cut: f = (1600 - 496) / 1600 = 0.69 <= 0.7 -> partial (difficulty 2, iscrowd 1); cut
#       (512,370) (512,378) (378,512) (370,512): 4 corners, box [370, 370] - [512, 512]. (Its box fraction is
#       (171 / 204)^2 = 0.7026: the box rule keeps it as a normal object.)
#    B: the end beyond y = 512 only: f = 1352 / 1600 = 0.845 -> kept, cut (545,345) (541,341) (370,512)
#       (378,512), box [370, 341] - [545, 512].  C: mirror image, box [341, 370] - [512, 545].
#    D: wholly inside -> [341, 341] - [545, 545].
# O5 storage-tank (difficult 1), diamond |x - 352| + |y - 352| <= 50 (area 5000), near D's top-left corner.
#    A: wholly inside -> [302, 302] - [402, 402].
#    B: the tip left of x = 312 (height 10, base 20: 100) goes: f = 0.98, a 5-corner cut -> kept, difficulty 1,
#       box [312, 302] - [402, 402].  C: mirror image, box [302, 312] - [402, 402].
#    D: both tips go: f = 0.96, but the cut has 6 corners (corner (312, 312) is outside: 40 + 40 > 50) ->
#       the devkit skips it: not written, counted as dropped.
# O6 helicopter, diamond |x - 280| + |y - 60| <= 40 (area 3200).
#    A: wholly inside -> [240, 20] - [320, 100].
#    B: only the tip right of x = 312 (height 8, base 16: 64, f = 0.02): a 3-corner cut -> skipped (dropped).
# O7 small-vehicle, [-1, 40] x [600, 640], one pixel outside the image (a DOTA trap): the converted box is
#    clipped to [0, 600, 40, 40], the polygon is not. C: f = 40 / 41 = 0.976 -> kept, box [0, 600] - [40, 640].
# O8 swimming-pool, [600, 700] x [790, 824], reaching the image's bottom edge H = 824.
#    D measures up to H - 1 = 823: f = 33 / 34 = 0.971 -> kept, box [600, 790] - [700, 823].
# Tile boxes = image boxes minus the tile offset. (category, [x, y, w, h], difficult, iscrowd, truncated):
EXPECTED = {
    (0, 0): [("plane", [50, 50, 100, 70], 0, 0, 0), ("ship", [447, 100, 65, 100], 0, 0, 1),
             ("large-vehicle", [260, 190, 110, 100], 1, 0, 0), ("bridge", [370, 370, 142, 142], 2, 1, 1),
             ("storage-tank", [302, 302, 100, 100], 1, 0, 0), ("helicopter", [240, 20, 80, 80], 0, 0, 0)],
    (0, 312): [("bridge", [341, 58, 171, 175], 0, 0, 1), ("storage-tank", [302, 0, 100, 90], 1, 0, 1),
               ("small-vehicle", [0, 288, 40, 40], 0, 0, 1)],
    (312, 0): [("ship", [135, 100, 100, 100], 0, 0, 0), ("large-vehicle", [0, 206.5, 58, 83.5], 2, 1, 1),
               ("bridge", [58, 341, 175, 171], 0, 0, 1), ("storage-tank", [0, 302, 90, 100], 1, 0, 1)],
    (312, 312): [("bridge", [29, 29, 204, 204], 0, 0, 0), ("swimming-pool", [288, 478, 100, 33], 0, 0, 1)],
}
# The box rule on the same boxes (what the suite did before, and still does for box-only sources), by hand on
# the tiles' valid areas [x0, x0 + 512] x [y0, y0 + 512] clipped to 824, keeping a box fraction >= 0.7:
#    A: O2 0.65 dropped; O4 (171 / 204)^2 = 0.7026 kept as [341, 341] - [512, 512]; O1, O3, O5, O6 whole.
#    C: O4 171 / 204 = 0.838 -> [341, 341] - [512, 545]; O5 0.9 -> [302, 312] - [402, 402]; O7 whole.
#    B: O3 58 / 110 = 0.527 and O6 8 / 80 = 0.1 dropped; O2 whole; O4 -> [341, 341] - [545, 512];
#       O5 0.9 -> [312, 302] - [402, 402].
#    D: O4 whole; O5 0.9^2 = 0.81 -> [312, 312] - [402, 402]; O8 whole (the box reaches 824).
EXPECTED_BOX_RULE = {
    (0, 0): [("plane", [50, 50, 100, 70], 0, 0, 0), ("large-vehicle", [260, 190, 110, 100], 1, 0, 0),
             ("bridge", [341, 341, 171, 171], 0, 0, 1), ("storage-tank", [302, 302, 100, 100], 1, 0, 0),
             ("helicopter", [240, 20, 80, 80], 0, 0, 0)],
    (0, 312): [("bridge", [341, 29, 171, 204], 0, 0, 1), ("storage-tank", [302, 0, 100, 90], 1, 0, 1),
               ("small-vehicle", [0, 288, 40, 40], 0, 0, 0)],
    (312, 0): [("ship", [135, 100, 100, 100], 0, 0, 0), ("bridge", [29, 341, 204, 171], 0, 0, 1),
               ("storage-tank", [0, 302, 90, 100], 1, 0, 1)],
    (312, 312): [("bridge", [29, 29, 204, 204], 0, 0, 0), ("storage-tank", [0, 0, 90, 90], 1, 0, 1),
                 ("swimming-pool", [288, 478, 100, 34], 0, 0, 0)],
}


def _dota_root(root: Path) -> Path:
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labelTxt").mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (824, 824, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "train" / "images" / "P9001.png")
    (root / "train" / "labelTxt" / "P9001.txt").write_text(LABELS)
    return root


def _by_tile(coco: dict) -> dict[tuple[int, int], list[tuple]]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out: dict[tuple[int, int], list[tuple]] = {tuple(im["offset"]): [] for im in coco["images"]}
    offset = {im["id"]: tuple(im["offset"]) for im in coco["images"]}
    for a in coco["annotations"]:
        out[offset[a["image_id"]]].append((names[a["category_id"]], a["bbox"], a["difficult"], a["iscrowd"],
                                           a["truncated"]))
    return out


@pytest.fixture(scope="module")
def dota_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("dota")
    root = _dota_root(work / "DOTA")
    conv = convert_dataset("dota", root, work / "coco.json")
    summ = split_dataset(work / "coco.json", root, work / "tiles", tile=512, gap=200, workers=1, progress=False)
    return {"work": work, "root": root, "convert": conv, "summary": summ,
            "coco": json.loads((work / "coco.json").read_text()),
            "tiles": json.loads((work / "tiles" / "annotations.json").read_text())}


def test_converted_json_carries_the_polygon(dota_case: dict) -> None:
    coco = dota_case["coco"]
    assert dota_case["convert"]["clipped_boxes"] == 1  # O7's box, x from -1 to 0
    rows = [ln.split() for ln in LABELS.splitlines()[2:]]
    assert [a["segmentation"] for a in coco["annotations"]] == [[[float(v) for v in r[:8]]] for r in rows]
    assert coco["annotations"][6]["bbox"] == [0.0, 600.0, 40.0, 40.0]  # the box is clipped, the polygon is not


def test_dota_tiles_follow_devkit_rules(dota_case: dict) -> None:
    tiles, summ = dota_case["tiles"], dota_case["summary"]
    assert [tuple(im["offset"]) for im in tiles["images"]] == tile_windows(824, 824, 512, 200) == list(EXPECTED)
    got = _by_tile(tiles)
    assert got == {k: [(c, [float(v) for v in b], d, i, t) for c, b, d, i, t in rows] for k, rows in EXPECTED.items()}
    for a in tiles["annotations"]:
        assert a["area"] == a["bbox"][2] * a["bbox"][3]
    # 15 tile annotations, 2 of them partial; O5 in D (6 corners) and O6 in B (3 corners) dropped; none lost
    assert {k: summ[k] for k in ("tiles", "objects_in", "objects_oriented", "objects_kept", "objects_partial",
                                 "objects_dropped", "objects_lost")} == {
        "tiles": 4, "objects_in": 8, "objects_oriented": 8, "objects_kept": 15, "objects_partial": 2,
        "objects_dropped": 2, "objects_lost": 0}


def test_same_boxes_without_polygons_keep_the_box_rule(dota_case: dict, tmp_path: Path) -> None:
    coco = copy.deepcopy(dota_case["coco"])
    for a in coco["annotations"]:
        del a["segmentation"]
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    summ = split_dataset(tmp_path / "boxes.json", dota_case["root"], tmp_path / "tiles", workers=1, progress=False)
    got = _by_tile(json.loads((tmp_path / "tiles" / "annotations.json").read_text()))
    assert got == {k: [(c, [float(v) for v in b], d, i, t) for c, b, d, i, t in rows]
                   for k, rows in EXPECTED_BOX_RULE.items()}
    assert (summ["objects_oriented"], summ["objects_kept"], summ["objects_partial"], summ["objects_dropped"]) == \
        (0, 14, 0, 3)


def test_partial_objects_are_ignored_by_the_evaluator(dota_case: dict) -> None:
    """``iscrowd: 1``: pycocotools neither counts a partial object as a positive nor a detection on it as a
    false positive; the VOC scorer treats it as difficult. So hitting or missing it changes nothing."""
    gt = dota_case["tiles"]
    normal = [a for a in gt["annotations"] if not a["iscrowd"]]
    partial = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(partial) == 2
    hits = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in normal]
    on_partial = [{**d, "score": 0.95} for d in ({"image_id": a["image_id"], "category_id": a["category_id"],
                                                  "bbox": a["bbox"]} for a in partial)]
    for dets in (hits, hits + on_partial):
        assert coco_evaluate(gt, dets)["AP"] == pytest.approx(1.0)
        assert voc_map50(gt, dets)["mAP50"] == pytest.approx(1.0)
    # control: scored as ordinary objects, the two partial ones would be missed
    plain = {**gt, "annotations": [{**a, "iscrowd": 0} for a in gt["annotations"]]}
    assert coco_evaluate(plain, hits)["AP"] < 1.0


def test_partial_objects_are_no_training_targets(dota_case: dict) -> None:
    from baselines.frcnn import CocoTileDataset  # noqa: PLC0415
    from sdconet.data import TileDataset  # noqa: PLC0415

    gt, tiles_dir = dota_case["tiles"], dota_case["work"] / "tiles"
    tile_a = next(im for im in gt["images"] if im["offset"] == [0, 0])
    anns_a = [a for a in gt["annotations"] if a["image_id"] == tile_a["id"]]
    n_scored = sum(not a["iscrowd"] for a in anns_a)
    assert (len(anns_a), n_scored) == (6, 5)
    assert len(yolo_label_lines(anns_a, (512, 512), (512, 512), len(gt["categories"]))) == n_scored
    ds = TileDataset(gt, tiles_dir, train=False)
    boxes, _ = ds.targets_of(ds.image_ids.index(tile_a["id"]))
    assert boxes.shape == (n_scored, 4)
    assert len(CocoTileDataset(gt, tiles_dir).anns[tile_a["id"]]) == n_scored
