"""Benchmark tiling of the 650 positive NWPU VHR-10 images (512 px tiles, gap 200 -> 3,631 tiles).

Each worker count runs in a fresh subprocess so that peak memory (``ru_maxrss`` of the process plus its
largest child) is measured per configuration. Also times the two PNG writers on real tiles.

    .venv/bin/python benchmarks/bench_tiling.py [--workers 1 2] [--out /tmp/dir] [--keep]

Tiles are written under a temporary directory outside the repository (research-use data: never commit
derived tiles) and deleted afterwards unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nwpu_vhr10" / "NWPU VHR-10 dataset"
_GT = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*(\d+)")


def minimal_nwpu_coco(root: Path, out: Path) -> str:
    """Fallback converter: image sizes (PIL headers) and boxes of the positive set only."""
    from PIL import Image  # noqa: PLC0415

    images, anns = [], []
    for i, img in enumerate(sorted((root / "positive image set").glob("*.jpg")), 1):
        with Image.open(img) as im:
            w, h = im.size
        images.append({"id": i, "file_name": f"positive image set/{img.name}", "width": w, "height": h,
                       "negative": False, "split": None})
        for m in _GT.finditer((root / "ground truth" / f"{img.stem}.txt").read_text()):
            x1, y1, x2, y2, c = map(int, m.groups())
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if x2 > x1 and y2 > y1:
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "difficult": 0})
    cats = [{"id": k, "name": str(k), "supercategory": "nwpu"} for k in range(1, 11)]
    out.write_text(json.dumps({"info": {"dataset": "nwpu"}, "categories": cats, "images": images,
                               "annotations": anns}))
    return "minimal in-script loader"


def convert(root: Path, out: Path) -> str:
    """COCO json of NWPU at ``out``: data_prep.convert if available, else the minimal loader."""
    try:
        from data_prep.convert import convert_dataset  # noqa: PLC0415
    except ImportError:
        return minimal_nwpu_coco(root, out)
    convert_dataset("nwpu", root, out)
    return "data_prep.convert.convert_dataset"


def child(coco: Path, root: Path, out: Path, workers: int) -> None:
    """Run one tiling and print a json line with the figures."""
    import data_prep.split as split_mod  # noqa: PLC0415

    def rss_mb() -> tuple[float, float]:
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)

    # provenance() runs after all tiles are written and the pool is joined; it imports torch (device
    # string) and forks git, so snapshot the tiling-phase peak just before it.
    real_prov, phase = split_mod.provenance, {}

    def prov(*args: object, **kwargs: object) -> dict:
        phase.setdefault("tiling", (rss_mb(), time.perf_counter()))
        return real_prov(*args, **kwargs)

    split_mod.provenance = prov
    t0 = time.perf_counter()
    summ = split_mod.split_dataset(coco, root, out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    (t_self, t_kids), t_end = phase["tiling"]
    a_self, a_kids = rss_mb()
    print(json.dumps({"workers": workers, "tiles": summ["tiles"], "wall_s": wall, "tiles_per_s": summ["tiles"] / wall,
                      "tiling_s": t_end - t0, "peak_self_mb": t_self, "peak_child_mb": t_kids,
                      "peak_mb": t_self + t_kids, "peak_all_mb": a_self + a_kids, "objects_in": summ["objects_in"],
                      "objects_kept": summ["objects_kept"], "skipped": len(summ["skipped_images"])}))


def compare_writers(coco: Path, root: Path, n: int) -> None:
    """Encode ``n`` real 512x512 tiles with each PNG writer; print ms/tile and mean file size."""
    import numpy as np  # noqa: PLC0415

    from data_prep.split import _decode_rgb, _write_png  # noqa: PLC0415

    images = [im for im in json.loads(coco.read_text())["images"] if not im.get("negative")]
    crops = []
    for im in images[: max(1, n // 2)]:
        rgb = _decode_rgb(root / im["file_name"])
        crops += [np.ascontiguousarray(rgb[:512, :512]), np.ascontiguousarray(rgb[-512:, -512:])]
    with tempfile.TemporaryDirectory() as tmp:
        for writer in ("cv2", "pil"):
            _write_png(Path(tmp) / "warm.png", crops[0], writer)
            t0, size = time.perf_counter(), 0
            for k, crop in enumerate(crops[:n]):
                path = Path(tmp) / f"{writer}{k}.png"
                _write_png(path, crop, writer)
                size += path.stat().st_size
            ms = (time.perf_counter() - t0) * 1000 / len(crops[:n])
            print(f"png writer {writer:>3}: {ms:6.1f} ms/tile, {size / len(crops[:n]) / 1024:6.0f} KiB/tile")


def _sub(args: list[str], what: str) -> str:
    """Run this script with ``args`` in a fresh interpreter; return its last stdout line."""
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True,
                         text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        sys.exit(f"{what} failed:\n{res.stderr[-3000:]}")
    return res.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nwpu-root", type=Path, default=DEFAULT_ROOT, help="the 'NWPU VHR-10 dataset' folder")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=None, help="parent of the scratch dir (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--writer-tiles", type=int, default=60, help="tiles for the PNG writer comparison (0: skip)")
    ap.add_argument("--_child", nargs=4, metavar=("COCO", "ROOT", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    ap.add_argument("--_convert", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        coco, root, out, workers = a._child
        child(Path(coco), Path(root), Path(out), int(workers))
        return
    if a._convert:
        print(convert(Path(a._convert[0]), Path(a._convert[1])))
        return
    root = a.nwpu_root.resolve()
    if not (root / "positive image set").is_dir():
        sys.exit(f"NWPU VHR-10 not found at {root} (expected 'positive image set/'); pass --nwpu-root")
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_tiling_", dir=a.out))  # only this is ever deleted
    try:
        coco = scratch / "nwpu_coco.json"
        # Every stage runs in its own subprocess: Linux carries ru_maxrss over fork+exec, so a parent that
        # had imported torch (provenance does) would inflate every child's figure.
        t0 = time.perf_counter()
        how = _sub(["--_convert", str(root), str(coco)], "conversion")
        print(f"converted with {how} in {time.perf_counter() - t0:.1f} s")
        for workers in a.workers:
            r = json.loads(_sub(["--_child", str(coco), str(root), str(scratch / f"tiles_w{workers}"),
                                 str(workers)], f"workers={workers}"))
            print(f"workers={r['workers']}: {r['tiles']} tiles, {r['wall_s']:.1f} s wall "
                  f"({r['tiling_s']:.1f} s before provenance), {r['tiles_per_s']:.1f} tiles/s, "
                  f"tiling peak {r['peak_mb']:.0f} MB (main {r['peak_self_mb']:.0f} + largest child "
                  f"{r['peak_child_mb']:.0f}), peak incl. provenance {r['peak_all_mb']:.0f} MB; "
                  f"objects in {r['objects_in']}, tile annotations {r['objects_kept']}, skipped {r['skipped']}")
        if a.writer_tiles > 0:
            compare_writers(coco, root, a.writer_tiles)
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")


if __name__ == "__main__":
    main()
