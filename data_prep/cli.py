"""Command-line interface of the data stage (also what the Snakemake rules call).

Each sub-command is a thin adapter around one tested library function; heavy imports happen
inside the handlers so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from data_prep.errors import DataError

log = logging.getLogger("data_prep")


def _ratios(text: str) -> dict[str, float]:
    """Parse ``train=0.7,val=0.1,test=0.2``."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"bad ratio item {item!r}; expected name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = float(v)
    return out


def _ratios_raw(text: str) -> dict[str, str]:
    """Parse ``val=test,trainval=train`` into a dict of strings."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _cmd_fetch(a: argparse.Namespace) -> dict:
    from data_prep.fetch import fetch_dataset

    return fetch_dataset(a.dataset, a.dest, archives=[Path(p) for p in a.archive or []],
                         allow_download=a.allow_download, manifest=a.manifest, url=a.url, md5=a.md5,
                         hrrsd_annotations=a.hrrsd_annotations, force=a.force,
                         download_dir=a.download_dir)


def _cmd_convert(a: argparse.Namespace) -> dict:
    from data_prep.convert import convert_coco, convert_dataset

    if a.dataset == "coco":
        if a.annotations is None:
            raise DataError("convert --dataset coco needs --annotations (the COCO json); --root is its image folder")
        return convert_coco(a.annotations, a.root, a.out, name=a.name or "coco", strict=a.strict)
    return convert_dataset(a.dataset, a.root, a.out, strict=a.strict)


def _cmd_split(a: argparse.Namespace) -> dict:
    from data_prep.split import split_dataset

    return split_dataset(a.coco, a.image_root, a.out, tile=a.tile, gap=a.gap, keep_ratio=a.keep_ratio,
                         pad=not a.no_pad, workers=a.workers, strict=a.strict,
                         include_negative=a.include_negative, max_source_images=a.max_source_images)


def _cmd_partition(a: argparse.Namespace) -> dict:
    from data_prep.partition import MIN_SOURCE_IMAGES, partition_tiles

    split_map = {k: str(v) for k, v in _ratios_raw(a.split_map).items()} if a.split_map else None
    return partition_tiles(a.tiles, a.out, mode=a.mode, ratios=a.ratios, seed=a.seed, split_map=split_map,
                           min_source_images=MIN_SOURCE_IMAGES if a.min_source_images is None
                           else a.min_source_images)


def _cmd_degrade(a: argparse.Namespace) -> dict:
    from data_prep.degrade import degrade_folder

    return degrade_folder(a.images, a.out, scale=a.scale, kernel=a.kernel, blur=a.blur, noise=a.noise,
                          jpeg=a.jpeg, seed=a.seed, workers=a.workers, strict=a.strict)


def _parts(a: argparse.Namespace) -> dict[str, Path]:
    parts = {}
    for name in ("train", "val", "test"):
        p = Path(a.partition_dir) / f"{name}.json"
        if not p.exists():
            raise DataError(f"partition file missing: {p} (run `python -m data_prep partition` first)")
        parts[name] = p
    return parts


def _cmd_export_yolo(a: argparse.Namespace) -> dict:
    from data_prep.export import export_yolo

    return {"data_yaml": str(export_yolo(_parts(a), Path(a.images), Path(a.out), link=a.link))}


def _cmd_export_basicsr(a: argparse.Namespace) -> dict:
    from data_prep.export import export_basicsr_pairs

    return export_basicsr_pairs(_parts(a), Path(a.hr), Path(a.lr), Path(a.out), link=a.link)


def _cmd_demo(a: argparse.Namespace) -> dict:
    from data_prep.demo import generate_demo

    return {"root": str(generate_demo(a.out, n_images=a.n, size=a.size, seed=a.seed))}


def build_parser() -> argparse.ArgumentParser:
    from benchcore.cli import command_parser  # noqa: PLC0415

    p, sub = command_parser("python -m data_prep", __doc__)

    f = sub.add_parser("fetch", help="place a raw dataset under DEST and verify it")
    f.add_argument("--dataset", required=True, choices=["nwpu", "dota", "hrrsd"])
    f.add_argument("--dest", required=True, type=Path)
    f.add_argument("--archive", action="append", help="a user-supplied archive or folder (repeatable)")
    f.add_argument("--allow-download", action="store_true", help="download from the public source")
    f.add_argument("--manifest", type=Path, help="per-file sha256 manifest to verify against")
    f.add_argument("--url", help="override the download URL")
    f.add_argument("--md5", help="expected md5 of the archive / download")
    f.add_argument("--hrrsd-annotations", type=Path, help="local clone or archive of the HRRSD repository")
    f.add_argument("--force", action="store_true", help="re-extract even if DEST already verifies")
    f.add_argument("--download-dir", type=Path, help="where downloaded archives are kept (default: beside DEST)")
    f.set_defaults(func=_cmd_fetch)

    c = sub.add_parser("convert", help="raw dataset -> one COCO json (HR pixels)")
    c.add_argument("--dataset", required=True, choices=["nwpu", "dota", "hrrsd", "demo", "coco"])
    c.add_argument("--root", required=True, type=Path, help="dataset root (coco: the image folder)")
    c.add_argument("--annotations", type=Path, help="coco: the COCO instances json")
    c.add_argument("--name", help="coco: the dataset id written to info.dataset (default: coco)")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--strict", action="store_true", help="error on corrupt images instead of skipping")
    c.set_defaults(func=_cmd_convert)

    s = sub.add_parser("split", help="tile images (DOTA_devkit ImgSplit semantics)")
    s.add_argument("--coco", required=True, type=Path)
    s.add_argument("--image-root", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--tile", type=int, default=512)
    s.add_argument("--gap", type=int, default=200)
    s.add_argument("--keep-ratio", type=float, default=0.7)
    s.add_argument("--no-pad", action="store_true", help="do not zero-pad border tiles of small images")
    s.add_argument("--include-negative", action="store_true", help="also tile images flagged negative")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--strict", action="store_true")
    s.add_argument("--max-source-images", type=int, default=None, help="tile a seeded subset (small-budget runs)")
    s.set_defaults(func=_cmd_split)

    t = sub.add_parser("partition", help="train/val/test by source image")
    t.add_argument("--tiles", required=True, type=Path, help="annotations.json of the tiles")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--mode", choices=["ratio", "official"], default="ratio")
    t.add_argument("--ratios", type=_ratios, default={"train": 0.7, "val": 0.1, "test": 0.2})
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split-map", default=None, help="official mode: rename splits, e.g. val=test (DOTA)")
    t.add_argument("--min-source-images", type=int, default=None,
                   help="warn about a part with fewer source images than this (default: MIN_SOURCE_IMAGES, 2)")
    t.set_defaults(func=_cmd_partition)

    d = sub.add_parser("degrade", help="make low-quality copies of tiles")
    d.add_argument("--images", required=True, type=Path)
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--scale", type=int, required=True, help="downsampling factor (the degradation's scale)")
    d.add_argument("--kernel", default="torch-bicubic", choices=["torch-bicubic", "matlab-bicubic", "bilinear"])
    d.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma (HR pixels)")
    d.add_argument("--noise", type=float, default=0.0, help="Gaussian noise sigma (0..255)")
    d.add_argument("--jpeg", type=int, default=None, help="JPEG quality (1..100)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--strict", action="store_true")
    d.set_defaults(func=_cmd_degrade)

    y = sub.add_parser("export-yolo", help="ultralytics dataset (data.yaml + labels)")
    y.add_argument("--partition-dir", required=True, type=Path)
    y.add_argument("--images", required=True, type=Path, help="tile images (HR, LR or SR)")
    y.add_argument("--out", required=True, type=Path)
    y.add_argument("--link", choices=["hardlink", "symlink", "copy"], default="hardlink")
    y.set_defaults(func=_cmd_export_yolo)

    b = sub.add_parser("export-basicsr", help="BasicSR paired HR/LR folders")
    b.add_argument("--partition-dir", required=True, type=Path)
    b.add_argument("--hr", required=True, type=Path)
    b.add_argument("--lr", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--link", choices=["hardlink", "symlink", "copy"], default="hardlink")
    b.set_defaults(func=_cmd_export_basicsr)

    g = sub.add_parser("demo", help="generate the embedded synthetic demo dataset")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--n", type=int, default=12)
    g.add_argument("--size", type=int, default=512)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; print its summary as JSON (exit 0) or ``error: ...`` (exit 2)."""
    from benchcore.cli import run_command  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    return run_command(args, args.func, (DataError, FileNotFoundError, KeyError, ValueError),
                       show=lambda r: r.get("summary", r) if isinstance(r, dict) else r, limit=4000)
