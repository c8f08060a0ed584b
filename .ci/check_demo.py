"""Check that the demo DAG produced every expected artefact (run by .ci/run after the demo).

Data products, one metrics.json per method, an efficiency file per method, and report tables that hold a
row for every method (a real number or "missing" would both be rows; here every run must be present).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(results: str) -> int:
    from benchcore.experiments import load_experiments

    res = Path(results)
    root = res / "data" / "demo"
    problems: list[str] = []
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
    exp = load_experiments(REPO / "config" / "experiments.tsv")
    for _, row in exp.iterrows():
        for f in (res / "demo" / "bicubic_x2" / row["id"] / "seed0" / "metrics.json", res / "efficiency" / f"{row['id']}.json"):
            if not f.is_file():
                problems.append(f"missing {f}")
    tables = res / "report" / "tables"
    main_rows = {r["Method"]: r for r in csv.DictReader(open(tables / "main_demo_bicubic_x2.csv"))}
    abl_rows = {r["Method"]: r for r in csv.DictReader(open(tables / "ablation_demo_bicubic_x2.csv"))}
    for _, row in exp.iterrows():
        table = abl_rows if row["kind"] == "ablation" else main_rows
        got = table.get(row["display"])
        if got is None:
            problems.append(f"report table has no row for {row['id']} ({row['display']!r})")
        elif got["AP"] == "missing":
            problems.append(f"report row for {row['id']} says missing")
    if not (res / "report" / "index.html").is_file():
        problems.append("no report/index.html")
    print(f"demo: {len(tiles['images'])} tiles, {len(tiles['annotations'])} boxes; parts "
          + ", ".join(f"{p}={len(v['images'])}" for p, v in parts.items())
          + f"; {len(main_rows)} main-table rows, {len(abl_rows)} ablation rows for {len(exp)} methods")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
