"""Partition of tiles into train/val/test: no leakage, ratios, seeds, official splits, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.errors import DataError
from data_prep.partition import partition_tiles
from data_prep.split import split_dataset


def make_tiles(path: Path, n_sources: int = 50, splits: list | None = None) -> Path:
    """A tile json with 1..5 tiles per source image and 0..2 annotations per tile."""
    rng = np.random.default_rng(123)
    images, anns = [], []
    for s in range(1, n_sources + 1):
        for t in range(int(rng.integers(1, 6))):
            tid = len(images) + 1
            images.append({"id": tid, "file_name": f"images/{s:03d}__{t * 312}_0.png", "width": 512, "height": 512,
                           "source_image_id": s * 7, "source_file": f"src/{s:03d}.jpg", "offset": [t * 312, 0],
                           "valid_size": [512, 512], "split": splits[s - 1] if splits else None})
            for _ in range(int(rng.integers(0, 3))):
                anns.append({"id": len(anns) + 1, "image_id": tid, "category_id": 1, "bbox": [1, 2, 3, 4],
                             "area": 12, "iscrowd": 0, "truncated": 0, "difficult": 0})
    coco = {"info": {"dataset": "demo", "provenance": {"x": 1}},
            "categories": [{"id": 1, "name": "a"}], "images": images, "annotations": anns}
    path.write_text(json.dumps(coco))
    return path


def read_parts(out: Path) -> dict[str, dict]:
    return {p: json.loads((out / f"{p}.json").read_text()) for p in ("train", "val", "test")}


def sources(part: dict) -> set[int]:
    return {im["source_image_id"] for im in part["images"]}


def check_complete_and_disjoint(tiles: Path, parts: dict[str, dict]) -> None:
    src = json.loads(tiles.read_text())
    ids = [im["id"] for p in parts.values() for im in p["images"]]
    assert sorted(ids) == sorted(im["id"] for im in src["images"])  # every tile exactly once
    ann_ids = [a["id"] for p in parts.values() for a in p["annotations"]]
    assert sorted(ann_ids) == sorted(a["id"] for a in src["annotations"])
    by_id = {im["id"]: im for im in src["images"]}
    for p in parts.values():
        assert p["categories"] == src["categories"]
        assert all(by_id[im["id"]] == im for im in p["images"])  # records preserved verbatim
        own = {im["id"] for im in p["images"]}
        assert all(a["image_id"] in own for a in p["annotations"])
    s = [sources(p) for p in parts.values()]
    assert not (s[0] & s[1]) and not (s[0] & s[2]) and not (s[1] & s[2])  # no source image leaks


def test_ratio_mode(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles.json")
    summ = partition_tiles(tiles, tmp_path / "out", ratios={"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    parts = read_parts(tmp_path / "out")
    check_complete_and_disjoint(tiles, parts)
    assert [len(sources(parts[p])) for p in ("train", "val", "test")] == [35, 5, 10]
    assert summ["parts"]["train"]["source_images"] == 35 and summ["parts"]["test"]["tiles"] == len(parts["test"]["images"])
    info = parts["val"]["info"]["partition"]
    assert info["mode"] == "ratio" and info["seed"] == 0 and info["part"] == "val"
    assert info["ratios"] == {"train": 0.7, "val": 0.1, "test": 0.2}
    assert {p: set(v) for p, v in info["source_image_ids"].items()} == {p: sources(parts[p]) for p in parts}
    assert "git_sha" in parts["train"]["info"]["provenance"]


def test_seed_determinism(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles.json")
    assign = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        partition_tiles(tiles, tmp_path / name, seed=seed)
        assign[name] = {p: sorted(sources(v)) for p, v in read_parts(tmp_path / name).items()}
    assert assign["a"] == assign["b"] and assign["a"] != assign["c"]
    a = (tmp_path / "a" / "test.json").read_text()
    b = json.loads((tmp_path / "b" / "test.json").read_text())
    a = json.loads(a)
    for d in (a, b):
        d["info"].pop("provenance")
    assert a == b


def test_empty_parts_written_and_missing_keys(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles.json", n_sources=4)
    summ = partition_tiles(tiles, tmp_path / "out", ratios={"train": 1.0})
    parts = read_parts(tmp_path / "out")
    assert parts["val"]["images"] == [] and parts["test"]["annotations"] == []
    assert len(sources(parts["train"])) == 4 and summ["parts"]["val"]["tiles"] == 0


@pytest.mark.parametrize("ratios,match", [({"train": 0.7, "val": 0.1, "test": 0.1}, "sum to 1.*test=0.1"),
                                          ({"train": 0.8, "tset": 0.2}, "tset"),
                                          ({"train": 1.2, "val": -0.2}, "val"),
                                          ({"train": "x", "test": 1}, "train")])
def test_bad_ratios(tmp_path: Path, ratios: dict, match: str) -> None:
    tiles = make_tiles(tmp_path / "tiles.json", n_sources=5)
    with pytest.raises(ValueError, match=match):
        partition_tiles(tiles, tmp_path / "out", ratios=ratios)
    assert not (tmp_path / "out").exists()


def test_official_mode(tmp_path: Path) -> None:
    splits = ["train"] * 30 + ["val"] * 8 + ["test"] * 12
    tiles = make_tiles(tmp_path / "tiles.json", splits=splits)
    partition_tiles(tiles, tmp_path / "out", mode="official")
    parts = read_parts(tmp_path / "out")
    check_complete_and_disjoint(tiles, parts)
    for p, want in (("train", 30), ("val", 8), ("test", 12)):
        assert all(im["split"] == p for im in parts[p]["images"]) and len(sources(parts[p])) == want
    assert parts["test"]["info"]["partition"]["val_carved_from_train"] is False


def test_official_trainval_carves_val(tmp_path: Path) -> None:
    splits = ["trainval"] * 20 + ["train"] * 20 + ["test"] * 10
    tiles = make_tiles(tmp_path / "tiles.json", splits=splits)
    partition_tiles(tiles, tmp_path / "out", mode="official", ratios={"train": 0.7, "val": 0.1, "test": 0.2}, seed=1)
    parts = read_parts(tmp_path / "out")
    check_complete_and_disjoint(tiles, parts)
    assert len(sources(parts["val"])) == 4 and len(sources(parts["train"])) == 36  # 10 % of 40 train sources
    assert sources(parts["test"]) == {s * 7 for s in range(41, 51)}
    assert parts["val"]["info"]["partition"]["val_carved_from_train"] is True
    partition_tiles(tiles, tmp_path / "again", mode="official", seed=1)
    assert sources(read_parts(tmp_path / "again")["val"]) == sources(parts["val"])


def test_official_errors(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles.json", splits=["train"] * 48 + [None, None])
    n_null = sum(im["split"] is None for im in json.loads(tiles.read_text())["images"])
    with pytest.raises(DataError, match=rf"{n_null} tile\(s\).*images/049__0_0.png"):
        partition_tiles(tiles, tmp_path / "out", mode="official")
    coco = json.loads(tiles.read_text())
    first = [im for im in coco["images"] if im["source_image_id"] == 7]
    if len(first) < 2:
        first.append(dict(first[0], id=10_000, file_name="images/001__999_0.png"))
        coco["images"].append(first[-1])
    first[-1]["split"] = "test"
    for im in coco["images"]:
        im["split"] = im["split"] or "train"
    tiles.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="both 'train' and 'test'"):
        partition_tiles(tiles, tmp_path / "out", mode="official")
    with pytest.raises(ValueError, match="mode"):
        partition_tiles(tiles, tmp_path / "out", mode="random")


def test_split_then_partition(tmp_path: Path) -> None:
    """End to end on real tiles: 6 source images of different sizes, ratio mode."""
    (tmp_path / "src").mkdir()
    images = []
    for i, (w, h) in enumerate([(700, 600), (300, 200), (900, 512), (512, 800), (600, 600), (1000, 700)], 1):
        Image.fromarray(np.full((h, w, 3), i * 30, dtype=np.uint8)).save(tmp_path / "src" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h, "negative": False, "split": None})
    anns = [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [400, 100, 50, 50], "area": 2500, "iscrowd": 0}]
    (tmp_path / "c.json").write_text(json.dumps({"categories": [{"id": 1, "name": "a"}], "images": images,
                                                 "annotations": anns}))
    split_dataset(tmp_path / "c.json", tmp_path / "src", tmp_path / "tiles", workers=1, progress=False)
    tiles = tmp_path / "tiles" / "annotations.json"
    partition_tiles(tiles, tmp_path / "parts", ratios={"train": 0.5, "val": 0.0, "test": 0.5}, seed=0)
    parts = read_parts(tmp_path / "parts")
    check_complete_and_disjoint(tiles, parts)
    assert len(sources(parts["train"])) == 3 == len(sources(parts["test"])) and parts["val"]["images"] == []
    for im in parts["train"]["images"] + parts["test"]["images"]:
        assert (tmp_path / "tiles" / im["file_name"]).is_file()


def test_split_map_renames_official_val_to_test(tmp_path):
    """DOTA: official val becomes the test part and val is carved out of train."""
    import json

    from data_prep.partition import partition_tiles

    images = [{"id": i + 1, "file_name": f"images/t{i}.png", "width": 8, "height": 8,
               "source_image_id": i // 2 + 1, "split": "train" if i < 12 else "val"} for i in range(16)]
    tiles = tmp_path / "tiles.json"
    tiles.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    partition_tiles(tiles, tmp_path / "p", mode="official", ratios={"train": 0.7, "val": 0.2, "test": 0.1},
                    seed=0, split_map={"val": "test"})
    parts = {p: json.loads((tmp_path / "p" / f"{p}.json").read_text()) for p in ("train", "val", "test")}
    assert {im["source_image_id"] for im in parts["test"]["images"]} == {7, 8}
    assert parts["val"]["images"] and parts["train"]["images"]
    assert len(parts["train"]["images"]) + len(parts["val"]["images"]) == 12


def test_small_split_warns_with_counts(tmp_path: Path, caplog) -> None:
    """Issue 11: a part left with very few source images is warned about (dataset, file, split, counts)."""
    tiles = make_tiles(tmp_path / "tiles.json", n_sources=4)
    out = tmp_path / "part"
    with caplog.at_level("WARNING", logger="data_prep.partition"):
        summary = partition_tiles(tiles, out, ratios={"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    parts = read_parts(out)
    assert len(summary["warnings"]) == 2 and len(caplog.records) == 2
    for rec, part in zip(caplog.records, ("val", "test")):
        n_tiles, n_objects = len(parts[part]["images"]), len(parts[part]["annotations"])
        assert rec.levelname == "WARNING"
        assert rec.getMessage() == (
            f"dataset demo, partition {out}: split {part!r} has only 1 source image(s) ({n_tiles} tile(s), "
            f"{n_objects} object(s)), fewer than min_source_images=2; its metrics will rest on very few scenes "
            "(add images or change partition.ratios)")
    assert summary["warnings"] == [r.getMessage() for r in caplog.records]


def test_small_split_threshold_and_intentionally_empty_parts(tmp_path: Path, caplog) -> None:
    tiles = make_tiles(tmp_path / "tiles.json", n_sources=6)
    with caplog.at_level("WARNING", logger="data_prep.partition"):
        s = partition_tiles(tiles, tmp_path / "a", ratios={"train": 0.5, "val": 0.0, "test": 0.5})
        assert s["warnings"] == []  # val empty on purpose (ratio 0); train and test have 3 each
        s = partition_tiles(tiles, tmp_path / "b", ratios={"train": 0.5, "val": 0.0, "test": 0.5},
                            min_source_images=4)
        assert [w.split("split ")[1][:6] for w in s["warnings"]] == ["'train", "'test'"]
        s = partition_tiles(tiles, tmp_path / "c", ratios={"train": 0.9, "val": 0.05, "test": 0.05},
                            min_source_images=0)
        assert s["warnings"] == []
    assert len(caplog.records) == 2


def test_small_split_warning_on_stderr_of_the_cli(tmp_path: Path, repo_root: Path) -> None:
    import subprocess
    import sys

    tiles = make_tiles(tmp_path / "tiles.json", n_sources=4)

    def run(*extra: str) -> str:
        r = subprocess.run([sys.executable, "-m", "data_prep", "partition", "--tiles", str(tiles), "--out",
                            str(tmp_path / "p"), "--ratios", "train=0.5,val=0.25,test=0.25", *extra],
                           cwd=repo_root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stderr

    err = run()
    assert "WARNING data_prep.partition: dataset demo, partition" in err
    assert "split 'test' has only 1 source image(s)" in err
    assert "source image(s)" not in run("--min-source-images", "0")
