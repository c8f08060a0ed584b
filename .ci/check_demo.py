"""Check that the demo DAG produced every expected artefact (run by .ci/run after the demo)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(results: str) -> int:
    root = Path(results) / "data" / "demo"
    problems = []
    tiles = json.loads((root / "tiles" / "annotations.json").read_text())
    if not tiles["images"] or not tiles["annotations"]:
        problems.append("demo tiles have no images or no annotations")
    parts = {p: json.loads((root / "partition" / f"{p}.json").read_text()) for p in ("train", "val", "test")}
    srcs = [{im["source_image_id"] for im in parts[p]["images"]} for p in parts]
    if srcs[0] & srcs[1] or srcs[0] & srcs[2] or srcs[1] & srcs[2]:
        problems.append("a source image appears in two partitions")
    for p in ("yolo_hr/data.yaml", "bicubic_x2/yolo_lr/data.yaml", "bicubic_x2/lr/manifest.json"):
        if not (root / p).is_file():
            problems.append(f"missing {root / p}")
    n_pairs = len(list((root / "bicubic_x2" / "basicsr" / "train" / "LR").glob("*.png")))
    if n_pairs == 0:
        problems.append("no BasicSR training pairs")
    print(f"demo: {len(tiles['images'])} tiles, {len(tiles['annotations'])} boxes, "
          f"{n_pairs} train SR pairs; parts " + ", ".join(f"{p}={len(v['images'])}" for p, v in parts.items()))
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
