"""Tiling: DOTA_devkit window semantics, keep rule, tile output contract, robustness, real NWPU counts."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import split as split_mod
from data_prep.errors import CorruptImageError
from data_prep.split import keep_object, split_dataset, tile_windows


def devkit_windows(w: int, h: int, sub: int, gap: int) -> list[tuple[int, int]]:
    """Literal transcription of the loop in DOTA_devkit ImgSplit.SplitSingle."""
    slide, out, left = sub - gap, [], 0
    while left < w:
        if left + sub >= w:
            left = max(w - sub, 0)
        up = 0
        while up < h:
            if up + sub >= h:
                up = max(h - sub, 0)
            out.append((left, up))
            if up + sub >= h:
                break
            up += slide
        if left + sub >= w:
            break
        left += slide
    return out


@pytest.mark.parametrize("w,h,tile,gap", [(1000, 800, 512, 200), (512, 512, 512, 0), (513, 300, 512, 200),
                                          (1728, 1028, 512, 200), (958, 808, 512, 100), (100, 40, 64, 0),
                                          (2000, 1500, 1024, 200), (533, 358, 512, 200)])
def test_windows_cover_every_pixel_and_end_flush(w: int, h: int, tile: int, gap: int) -> None:
    wins = tile_windows(w, h, tile, gap)
    assert wins == devkit_windows(w, h, tile, gap)
    covered = np.zeros((h, w), dtype=bool)
    for x0, y0 in wins:
        assert 0 <= x0 and 0 <= y0 and (x0 + tile <= w or x0 == 0) and (y0 + tile <= h or y0 == 0)
        covered[y0:y0 + tile, x0:x0 + tile] = True
    assert covered.all()
    xs, ys = sorted({x for x, _ in wins}), sorted({y for _, y in wins})
    assert max(xs) == max(w - tile, 0) and max(ys) == max(h - tile, 0)  # last window flush with the edge
    assert all(b - a <= tile - gap for a, b in zip(xs, xs[1:]))
    assert len(wins) == len(xs) * len(ys) == len(set(wins))


def test_windows_known_values_small_image_and_bad_gap() -> None:
    assert tile_windows(1000, 512, 512, 200) == [(0, 0), (312, 0), (488, 0)]
    assert tile_windows(513, 100, 512, 200) == [(0, 0), (1, 0)]
    assert tile_windows(300, 200, 512, 200) == tile_windows(512, 512, 512, 200) == [(0, 0)]
    for gap in (512, 600, -1):
        with pytest.raises(ValueError, match="gap"):
            tile_windows(1000, 1000, 512, gap)


def test_keep_rule_edges() -> None:
    win = (0, 0, 512, 512)
    assert keep_object((10, 10, 50, 60), win) == (10, 10, 50, 60)  # fully inside: unchanged
    assert keep_object((505, 0, 515, 10), win, 0.7) == (505, 0, 512, 10)  # exactly 0.7 kept, clipped
    assert keep_object((505.1, 0, 515.1, 10), win, 0.7) is None  # 0.69 dropped
    assert keep_object((100.1, 3.3, 110.1, 13.3), (103.1, 0, 400, 400), 0.7) == (103.1, 3.3, 110.1, 13.3)
    assert keep_object((600, 600, 700, 700), win) is None  # no overlap
    assert keep_object((10, 10, 10, 50), win) is None  # degenerate
    assert keep_object((500, 500, 520, 520), win, 0.1) == (500, 500, 512, 512)
    assert keep_object((-5, 200, 95, 300), (0, 0, 512, 512), 0.9) == (0, 200, 95, 300)


# ----------------------------------------------------------------------------- synthetic dataset
def make_dataset(root: Path) -> Path:
    """Four images (RGB 700x600, grayscale 300x200, palette 520x530, negative) and a COCO json."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    specs = [("imgs/a.png", "RGB", (700, 600), False, [(10, 20, 40, 30, 1), (480, 100, 100, 50, 2),
                                                      (650, 500, 50, 100, 1)]),
             ("imgs/b.jpg", "L", (300, 200), False, [(5, 5, 20, 20, 2)]),
             ("imgs/c.png", "P", (520, 530), False, [(0, 0, 520, 530, 1)]),
             ("imgs/d.png", "RGB", (400, 400), True, [])]
    images, anns = [], []
    for i, (name, mode, (w, h), neg, boxes) in enumerate(specs, 1):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        im = im.convert(mode) if mode == "L" else im.quantize(16) if mode == "P" else im
        im.save(root / name, **({"quality": 95} if name.endswith(".jpg") else {}))
        images.append({"id": i, "file_name": name, "width": w, "height": h, "negative": neg, "split": "train"})
        for x, y, bw, bh, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0, "difficult": int(c == 2)})
    coco = {"info": {"dataset": "demo"}, "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}],
            "images": images, "annotations": anns}
    path = root / "coco.json"
    path.write_text(json.dumps(coco))
    return path


def load(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def test_split_output_contract(tmp_path: Path) -> None:
    cj = make_dataset(tmp_path / "src")
    out = tmp_path / "tiles"
    summ = split_dataset(cj, tmp_path / "src", out, tile=512, gap=200, workers=1, progress=False)
    coco = load(out)
    expected = len(tile_windows(700, 600, 512, 200)) + 1 + len(tile_windows(520, 530, 512, 200))
    assert summ["tiles"] == len(coco["images"]) == expected and summ["excluded_negative"] == 1
    assert [im["id"] for im in coco["images"]] == list(range(1, expected + 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert coco["categories"] == json.loads(cj.read_text())["categories"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(Path(i["file_name"]).name
                                                                        for i in coco["images"])
    src = {n: np.asarray(Image.open(tmp_path / "src" / "imgs" / n).convert("RGB")) for n in ("a.png", "b.jpg")}
    for im in coco["images"]:
        tile = np.asarray(Image.open(out / im["file_name"]))
        assert tile.shape == (512, 512, 3) and (im["width"], im["height"]) == (512, 512)
        assert im["split"] == "train" and not im["negative"]
        assert im["file_name"] == f"images/{Path(im['source_file']).stem}__{im['offset'][0]}_{im['offset'][1]}.png"
        vw, vh = im["valid_size"]
        if im["source_file"] in ("imgs/a.png", "imgs/b.jpg"):
            x0, y0 = im["offset"]
            ref = src[Path(im["source_file"]).name][y0:y0 + vh, x0:x0 + vw]
            assert np.array_equal(tile[:vh, :vw], ref)  # lossless, RGB-converted crop
        assert not tile[vh:].any() and not tile[:, vw:].any()  # zero padding
    small = next(im for im in coco["images"] if im["source_file"] == "imgs/b.jpg")
    assert small["valid_size"] == [300, 200] and small["offset"] == [0, 0]
    for a in coco["annotations"]:
        im = coco["images"][a["image_id"] - 1]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["valid_size"][0] and y + h <= im["valid_size"][1]
        assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0 and a["difficult"] == int(a["category_id"] == 2)
    # box (480,100,100,50) of a.png: window x0=188 holds it whole; window x0=0 holds 32/100 < 0.7 -> dropped
    a_tiles = {tuple(im["offset"]): im["id"] for im in coco["images"] if im["source_file"] == "imgs/a.png"}
    in_first = [a for a in coco["annotations"] if a["image_id"] == a_tiles[(0, 0)] and a["category_id"] == 2]
    assert in_first == []
    whole = [a for a in coco["annotations"] if a["image_id"] == a_tiles[(188, 0)] and a["category_id"] == 2]
    assert [(w["bbox"], w["truncated"]) for w in whole] == [([292, 100, 100, 50], 0)]
    # the palette image's full-size box is truncated in each 512 tile (512*512/(520*530) = 0.95 kept)
    c_anns = [a for a in coco["annotations"] if coco["images"][a["image_id"] - 1]["source_file"] == "imgs/c.png"]
    assert len(c_anns) == 4 and all(a["truncated"] == 1 and a["bbox"] == [0, 0, 512, 512] for a in c_anns)
    assert summ["objects_in"] == 5 and summ["objects_kept"] == len(coco["annotations"]) and summ["objects_lost"] == 0
    assert summ["objects_dropped"] >= 1 and summ["skipped_images"] == []
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["parameters"]["gap"] == 200 and "git_sha" in on_disk["provenance"]


def test_no_pad_and_negative(tmp_path: Path) -> None:
    cj = make_dataset(tmp_path / "src")
    out = tmp_path / "tiles"
    summ = split_dataset(cj, tmp_path / "src", out, pad=False, include_negative=True, workers=1, progress=False)
    coco = load(out)
    small = next(im for im in coco["images"] if im["source_file"] == "imgs/b.jpg")
    assert (small["width"], small["height"]) == (300, 200)
    with Image.open(out / small["file_name"]) as im:
        assert im.size == (300, 200)
    neg = [im for im in coco["images"] if im["negative"]]
    assert len(neg) == 1 and summ["excluded_negative"] == 0 and neg[0]["valid_size"] == [400, 400]


def test_deterministic_across_workers_and_writers(tmp_path: Path) -> None:
    cj = make_dataset(tmp_path / "src")
    runs = {}
    for key, workers, writer in (("w1", 1, "cv2"), ("w2", 2, "cv2"), ("pil", 2, "pil")):
        split_dataset(cj, tmp_path / "src", tmp_path / key, workers=workers, writer=writer, progress=False)
        coco = load(tmp_path / key)
        coco["info"].pop("provenance"), coco["info"]["tiling"].pop("writer")
        runs[key] = coco
    assert runs["w1"] == runs["w2"] == runs["pil"]
    for im in runs["w1"]["images"]:
        a, b = (tmp_path / "w1" / im["file_name"]).read_bytes(), (tmp_path / "w2" / im["file_name"]).read_bytes()
        assert a == b
        assert np.array_equal(np.asarray(Image.open(tmp_path / "w1" / im["file_name"])),
                              np.asarray(Image.open(tmp_path / "pil" / im["file_name"])))


def test_corrupt_image_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cj = make_dataset(tmp_path / "src")
    jpg = tmp_path / "src" / "imgs" / "b.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 3])  # truncated JPEG: header intact
    with caplog.at_level(logging.WARNING, logger="data_prep.split"):
        summ = split_dataset(cj, tmp_path / "src", tmp_path / "out", workers=2, progress=False)
    assert [s["file"] for s in summ["skipped_images"]] == ["imgs/b.jpg"]
    assert "b.jpg" in caplog.text and summ["images_tiled"] == 2 and summ["objects_in"] == 4
    assert not any(im["source_file"] == "imgs/b.jpg" for im in load(tmp_path / "out")["images"])
    with pytest.raises(CorruptImageError, match=re.escape(str(tmp_path / "src" / "imgs" / "b.jpg"))):
        split_dataset(cj, tmp_path / "src", tmp_path / "strict", workers=2, strict=True, progress=False)
    assert not (tmp_path / "strict").exists()


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cj = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    real, calls = split_mod._write_png, []

    def flaky(path: Path, rgb: np.ndarray, writer: str) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        real(path, rgb, writer)

    monkeypatch.setattr(split_mod, "_write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(cj, tmp_path / "src", out, workers=1, progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
    # an existing output survives a failed rerun untouched
    monkeypatch.setattr(split_mod, "_write_png", real)
    split_dataset(cj, tmp_path / "src", out, workers=1, progress=False)
    before = (out / "annotations.json").read_bytes()
    calls.clear()
    monkeypatch.setattr(split_mod, "_write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(cj, tmp_path / "src", out, workers=1, gap=100, progress=False)
    assert (out / "annotations.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_tile_names_unique_when_stems_collide() -> None:
    names = split_mod._tile_stems(["positive image set/001.jpg", "negative image set/001.jpg", "p/002.jpg"])
    assert names == ["positive_image_set_001", "negative_image_set_001", "002"]


def test_bad_parameters(tmp_path: Path) -> None:
    cj = make_dataset(tmp_path / "src")
    with pytest.raises(ValueError, match="gap"):
        split_dataset(cj, tmp_path / "src", tmp_path / "o", tile=512, gap=512, progress=False)
    with pytest.raises(ValueError, match="keep_ratio"):
        split_dataset(cj, tmp_path / "src", tmp_path / "o", keep_ratio=0, progress=False)
    with pytest.raises(ValueError, match="writer"):
        split_dataset(cj, tmp_path / "src", tmp_path / "o", writer="jpeg", progress=False)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- real NWPU VHR-10
def _positive_sizes(root: Path) -> list[tuple[str, int, int]]:
    """(name, width, height) of the positive set, from the image headers only."""
    out = []
    for p in sorted((root / "positive image set").glob("*.jpg")):
        with Image.open(p) as im:
            out.append((p.name, *im.size))
    return out


@pytest.mark.realdata
def test_nwpu_split_tile_counts(nwpu_root: Path) -> None:
    sizes = _positive_sizes(nwpu_root)
    assert len(sizes) == 650
    counts = {gap: sum(len(tile_windows(w, h, 512, gap)) for _, w, h in sizes) for gap in (200, 100, 0)}
    assert counts == {200: 3631, 100: 3241, 0: 2823}


@pytest.mark.realdata
def test_nwpu_real_tiling_of_five_images(nwpu_root: Path, tmp_path: Path) -> None:
    sizes = _positive_sizes(nwpu_root)
    chosen = sizes[:4] + [next(s for s in sizes if s[2] < 512)]  # include one padded (short) image
    images, anns = [], []
    pat = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*(\d+)")
    for i, (name, w, h) in enumerate(chosen, 1):
        images.append({"id": i, "file_name": f"positive image set/{name}", "width": w, "height": h,
                       "negative": False, "split": None})
        gt = (nwpu_root / "ground truth" / name.replace(".jpg", ".txt")).read_text()
        for m in pat.finditer(gt):
            x1, y1, x2, y2, c = map(int, m.groups())
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "difficult": 0})
    cj = tmp_path / "coco.json"
    cj.write_text(json.dumps({"info": {}, "categories": [{"id": k, "name": str(k)} for k in range(1, 11)],
                              "images": images, "annotations": anns}))
    summ = split_dataset(cj, nwpu_root, tmp_path / "tiles", workers=2, progress=False)
    coco = load(tmp_path / "tiles")
    assert summ["tiles"] == len(coco["images"]) == sum(len(tile_windows(w, h, 512, 200)) for _, w, h in chosen)
    assert summ["objects_in"] == len(anns) > 0 and summ["objects_kept"] >= len(anns) - summ["objects_lost"]
    for im in coco["images"]:
        with Image.open(tmp_path / "tiles" / im["file_name"]) as tile:
            assert tile.size == (512, 512)
    short = [im for im in coco["images"] if im["source_file"].endswith(chosen[-1][0])]
    assert all(im["valid_size"][1] == chosen[-1][2] < 512 for im in short)
    for a in coco["annotations"]:
        vw, vh = coco["images"][a["image_id"] - 1]["valid_size"]
        x, y, w, h = a["bbox"]
        assert 0 <= x < x + w <= vw and 0 <= y < y + h <= vh


def test_max_source_images_tiles_a_seeded_subset(tmp_path):
    """Small-budget runs: only N source images are tiled, the same N for the same seed, and it is recorded."""
    import json

    from PIL import Image

    from data_prep.split import split_dataset

    root = tmp_path / "raw"
    root.mkdir()
    images = []
    for i in range(1, 7):
        Image.new("RGB", (64, 64), (i * 30, 10, 10)).save(root / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 64, "height": 64})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    runs = []
    for k in range(2):
        summary = split_dataset(coco, root, tmp_path / f"t{k}", tile=64, gap=0, workers=1, progress=False,
                                max_source_images=3, subset_seed=5)
        tiles = json.loads((tmp_path / f"t{k}" / "annotations.json").read_text())
        runs.append(sorted(im["source_image_id"] for im in tiles["images"]))
        assert summary["images_in"] == 3 and summary["excluded_by_subset"] == 3
    assert len(runs[0]) == 3 and runs[0] == runs[1]


@pytest.mark.realdata
def test_nwpu_box_rule_keeps_the_published_annotation_count(nwpu_root: Path) -> None:
    """Box-only sources keep the box rule: the 650 positive images at 512/200 give 10,392 tile annotations
    (docs/benchmarks.md), none partial. Counted on the ground truth alone (no image is decoded)."""
    from data_prep.split import tile_objects

    pat = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*(\d+)")
    n_in = n_kept = n_lost = 0
    for name, w, h in _positive_sizes(nwpu_root):
        gt = (nwpu_root / "ground truth" / name.replace(".jpg", ".txt")).read_text()
        objs = [(i, int(c), (float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)), 0, None)
                for i, (x1, y1, x2, y2, c) in enumerate(pat.findall(gt))]
        kept: set[int] = set()
        for x0, y0 in tile_windows(w, h, 512, 200):
            anns, _, ids = tile_objects(objs, (x0, y0), 512, (w, h))
            assert all(a["iscrowd"] == 0 and a["difficult"] == 0 for a in anns)
            n_kept, kept = n_kept + len(anns), kept | ids
        n_in, n_lost = n_in + len(objs), n_lost + len(objs) - len(kept)
    assert (n_in, n_kept, n_lost) == (3896, 10392, 0)
