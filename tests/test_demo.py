"""Synthetic demo dataset: format, determinism, object sizes and class coverage."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.classes import DEMO_CLASSES
from data_prep.demo import generate_demo


@pytest.fixture(scope="module")
def demo_default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    t0 = time.perf_counter()
    generate_demo(out)
    return out, time.perf_counter() - t0


def _ann(root: Path) -> dict:
    return json.loads((root / "demo_annotations.json").read_text())


def test_format_and_geometry(demo_default: tuple[Path, float]) -> None:
    root, seconds = demo_default
    ann = _ann(root)
    assert ann["classes"] == list(DEMO_CLASSES)
    assert [im["file_name"] for im in ann["images"]] == [f"images/demo_{i:04d}.png" for i in range(12)]
    counts = dict.fromkeys(DEMO_CLASSES, 0)
    angles = []
    for im in ann["images"]:
        assert (im["width"], im["height"], im["split"]) == (512, 512, None)
        with Image.open(root / im["file_name"]) as pil:
            assert pil.size == (512, 512) and pil.mode == "RGB"
        assert 6 <= len(im["objects"]) <= 14
        boxes = []
        for obj in im["objects"]:
            x1, y1, x2, y2 = obj["bbox"]
            assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
            assert 8 <= max(x2 - x1, y2 - y1) <= 40
            counts[obj["category"]] += 1
            angles.append(obj["angle"])
            boxes.append((x1, y1, x2, y2))
        for i, a in enumerate(boxes):  # no heavy overlaps
            for b in boxes[i + 1:]:
                iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = iw * ih
                union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
                assert inter / union <= 0.1 + 1e-6
    assert all(n >= 5 for n in counts.values()), counts
    assert sum(a != 0 for a in angles) > len(angles) / 2
    assert seconds < 15  # a couple of seconds on an idle core; generous for shared CI machines


def test_objects_are_drawn(demo_default: tuple[Path, float]) -> None:
    """Each object's box differs from the ground around it (the annotation matches the pixels)."""
    root, _ = demo_default
    im = _ann(root)["images"][0]
    img = np.asarray(Image.open(root / im["file_name"])).astype(float)
    for obj in im["objects"]:
        x1, y1, x2, y2 = (int(round(v)) for v in obj["bbox"])
        inside = img[y1:y2, x1:x2]
        assert inside.std() > 15 or abs(inside.mean() - img.mean()) > 20, obj


def test_deterministic_and_seed_dependent(tmp_path: Path, demo_default: tuple[Path, float]) -> None:
    root, _ = demo_default
    again = generate_demo(tmp_path / "again", n_images=2, size=256, seed=0, max_obj=32)
    again2 = generate_demo(tmp_path / "again2", n_images=2, size=256, seed=0, max_obj=32)
    other = generate_demo(tmp_path / "other", n_images=2, size=256, seed=1, max_obj=32)
    assert _ann(again) == _ann(again2)
    for i in range(2):
        name = f"images/demo_{i:04d}.png"
        assert (again / name).read_bytes() == (again2 / name).read_bytes()
        assert (again / name).read_bytes() != (other / name).read_bytes()
    assert _ann(again) != _ann(other)
    assert Image.open(again / "images/demo_0000.png").size == (256, 256)
    for im in _ann(again)["images"]:
        assert all(max(o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]) <= 32 for o in im["objects"])
    assert not list(tmp_path.glob(".again.*"))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_obj"):
        generate_demo(tmp_path / "x", min_obj=50, max_obj=40)
    with pytest.raises(ValueError, match="objects_per_image"):
        generate_demo(tmp_path / "x", objects_per_image=(5, 2))
    assert not (tmp_path / "x").exists()


def test_simple_style_gives_each_class_its_colour_on_flat_ground(tmp_path: Path) -> None:
    """The default demo's style: flat ground (low spread away from objects), each class drawn in its own colour."""
    from data_prep.demo import _SIMPLE_BODY

    root = generate_demo(tmp_path / "simple", n_images=3, size=256, seed=0, min_obj=16, max_obj=64,
                         objects_per_image=(4, 6), style="simple")
    scene = generate_demo(tmp_path / "scene", n_images=3, size=256, seed=0, min_obj=16, max_obj=64,
                          objects_per_image=(4, 6), style="scene")
    corner = (slice(0, 24), slice(0, 24))  # background patches (checked free of boxes below)
    for r, flat in ((root, True), (scene, False)):
        for im in _ann(r)["images"]:
            img = np.asarray(Image.open(r / im["file_name"])).astype(float)
            if any(o["bbox"][0] < 24 and o["bbox"][1] < 24 for o in im["objects"]):
                continue
            assert bool(img[corner].std(axis=(0, 1)).max() < 4.5) == flat
    seen = set()
    for im in _ann(root)["images"]:
        img = np.asarray(Image.open(root / im["file_name"])).astype(int)
        for obj in im["objects"]:
            x1, y1, x2, y2 = (int(round(v)) for v in obj["bbox"])
            colour = np.array(_SIMPLE_BODY[obj["category"]])
            hits = (np.abs(img[y1:y2, x1:x2] - colour).max(-1) <= 2).sum()
            assert hits >= 4, obj  # the class colour is painted inside its box
            seen.add(obj["category"])
    assert len(seen) >= 3
    with pytest.raises(ValueError, match="unknown demo style"):
        generate_demo(tmp_path / "x", style="fancy")


def test_workflow_schema_defaults_are_the_generator_defaults(repo_root: Path) -> None:
    """fetch_raw passes the (schema-filled) ``demo:`` block straight through: both name the same defaults."""
    import inspect

    import yaml

    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["$defs"]["dataset"]["properties"]["demo"]["properties"]
    sig = inspect.signature(generate_demo).parameters
    assert set(props) == set(sig) - {"out_root"}
    for key, spec in props.items():
        default = sig[key].default
        assert spec["default"] == (list(default) if isinstance(default, tuple) else default), key
