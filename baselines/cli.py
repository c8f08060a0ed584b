"""``python -m baselines``: train / run the serial "SR model, then detector" baselines (thin adapters over
:mod:`baselines.pipeline`, which the Snakemake scripts call too).

    python -m baselines sr-train --model edsr --pairs results/data/nwpu/bicubic_x2/pairs --out runs/sr/edsr \
        [--scale 2 (default: the pairs' manifest)] [--config config/baselines/paper.yaml] [--set sr.iters=1000 ...] [--resume]
    python -m baselines sr-infer (--checkpoint runs/sr/edsr/model.pth | --interp bicubic) \
        --lr results/data/nwpu/bicubic_x2/lr [--hr results/data/nwpu/tiles/images] --out runs/sr/edsr/sr [--scale 2]
    python -m baselines det-train --detector frcnn --images runs/sr/edsr/sr --partition results/data/nwpu/partition \
        --out runs/det/frcnn_edsr [--config ...] [--set frcnn.epochs=2 ...] [--resume]
    python -m baselines det-eval --detector frcnn --weights runs/det/frcnn_edsr/model.pt --images runs/sr/edsr/sr \
        --partition results/data/nwpu/partition --split test --out results/nwpu/bicubic_x2/frcnn_edsr/seed0/metrics.json \
        --method frcnn_edsr --dataset nwpu --degradation bicubic_x2 --seed 0 [--sr-metrics runs/sr/edsr/sr/sr_metrics.json]

Config files (``config/baselines/{demo,paper}.yaml``) have sections ``sr`` (+ ``sr_edsr``/``sr_rrdb``/``sr_swinir``),
``sr_infer``, ``yolo`` and ``frcnn``; ``--set key=value`` overrides one key (``section.key``; a bare key goes to the
command's section), values parsed as YAML. Explicit flags (``--model``, ``--scale``, ``--device``) win over both.
Errors print ``error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("baselines")


def _config(a: argparse.Namespace, default_section: str) -> dict[str, dict[str, Any]]:
    from baselines.pipeline import parse_sets, read_config  # noqa: PLC0415

    return read_config(a.config, parse_sets(a.set, default_section))


def _scale(a: argparse.Namespace, folder: Path, what: str) -> int:
    """``--scale``, else the ``scale`` of ``folder/manifest.json`` (written by the data stage's degrade and
    export-basicsr steps): the run's degradation owns the scale, nothing here defaults it."""
    if a.scale is not None:
        return int(a.scale)
    man = Path(folder) / "manifest.json"
    if man.is_file() and json.loads(man.read_text(encoding="utf-8")).get("scale") is not None:
        return int(json.loads(man.read_text(encoding="utf-8"))["scale"])
    raise ValueError(f"no --scale and no scale in {man} (the {what} folder of `python -m data_prep`)")


def _cmd_sr_train(a: argparse.Namespace) -> dict[str, Any]:
    from baselines.pipeline import section, sr_train_step  # noqa: PLC0415

    cfg = section(_config(a, "sr"), "sr", a.model)
    cfg["scale"] = _scale(a, a.pairs, "export-basicsr")
    if a.device is not None:
        cfg["device"] = a.device
    return sr_train_step(a.model, a.pairs, a.out, cfg, resume=a.resume)


def _cmd_sr_infer(a: argparse.Namespace) -> dict[str, Any]:
    from baselines.pipeline import section, sr_step  # noqa: PLC0415

    cfg = section(_config(a, "sr_infer"), "sr_infer")
    scale = a.scale if a.checkpoint is not None else _scale(a, a.lr, "degrade")  # a checkpoint knows its scale
    doc = sr_step(a.interp, a.lr, a.out, hr_dir=a.hr, checkpoint=a.checkpoint, scale=scale, cfg=cfg,
                  device=a.device or "auto")
    return {k: v for k, v in doc.items() if k != "per_tile"} | {"out": str(a.out)}


def _cmd_det_train(a: argparse.Namespace) -> dict[str, Any]:
    from baselines.pipeline import det_train_step, section  # noqa: PLC0415

    name = "frcnn" if a.detector == "frcnn" else "yolo"
    cfg = section(_config(a, name), name)
    return det_train_step(a.detector, a.images, a.partition, a.out, cfg, resume=a.resume, device=a.device)


def _cmd_det_eval(a: argparse.Namespace) -> dict[str, Any]:
    from baselines.pipeline import det_eval_step, section  # noqa: PLC0415

    name = "frcnn" if a.detector == "frcnn" else "yolo"
    cfg = section(_config(a, name), name)
    doc = det_eval_step(a.detector, a.weights, a.images, a.partition, a.out, method=a.method, dataset=a.dataset,
                        degradation=a.degradation, seed=a.seed, split=a.split, sr_metrics=a.sr_metrics, cfg=cfg,
                        device=a.device, protocol=a.protocol)
    det = doc["detection"]
    return {"metrics": str(a.out), "detection": {k: det[k] for k in ("AP", "AP50", "AP75", "AP_s")},
            "sr": {k: doc["sr"][k] for k in ("psnr", "ssim")} if doc["sr"] else None}


def _common(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument("--config", type=Path, help="YAML config (sections sr, sr_infer, yolo, frcnn)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override one config key (section.key; a bare key goes to '{section}'); repeatable")
    p.add_argument("--device", help="cpu, cuda, cuda:1, auto (ultralytics: 0, cpu); default: the config's")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m baselines``."""
    from baselines.pipeline import DETECTORS, SR_INTERP, learned_sr_models  # noqa: PLC0415

    from benchcore.cli import command_parser  # noqa: PLC0415

    p, sub = command_parser("python -m baselines", __doc__)

    t = sub.add_parser("sr-train", help="train an SR network on BasicSR paired folders")
    t.add_argument("--model", required=True, choices=learned_sr_models())
    t.add_argument("--pairs", required=True, type=Path, help="export-basicsr folder (<part>/HR, <part>/LR)")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--scale", type=int, help="SR factor (default: the scale in PAIRS/manifest.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    _common(t, "sr")
    t.set_defaults(func=_cmd_sr_train)

    i = sub.add_parser("sr-infer", help="super-resolve LR tiles (learned model or interpolation)")
    how = i.add_mutually_exclusive_group(required=True)
    how.add_argument("--checkpoint", type=Path, help="model.pth (or checkpoints/last.pt) of sr-train")
    how.add_argument("--interp", choices=SR_INTERP, help="PIL interpolation instead of a network")
    i.add_argument("--lr", required=True, type=Path, help="folder of LR tiles")
    i.add_argument("--hr", type=Path, help="folder of HR tiles (same names): PSNR/SSIM in OUT/sr_metrics.json")
    i.add_argument("--out", required=True, type=Path)
    i.add_argument("--scale", type=int, help="SR factor (default: the checkpoint's; for --interp the scale in "
                   "LR/manifest.json)")
    _common(i, "sr_infer")
    i.set_defaults(func=_cmd_sr_infer)

    d = sub.add_parser("det-train", help="train a detector on HR, LR or SR tiles")
    d.add_argument("--detector", required=True, choices=DETECTORS)
    d.add_argument("--images", required=True, type=Path, help="tile folder (HR tiles/, LR or SR copies)")
    d.add_argument("--partition", required=True, type=Path, help="folder with {train,val,test}.json")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--resume", action="store_true")
    _common(d, "yolo|frcnn")
    d.set_defaults(func=_cmd_det_train)

    e = sub.add_parser("det-eval", help="COCO metrics on the HR grid -> metrics.json (+ detections.json)")
    e.add_argument("--detector", required=True, choices=DETECTORS)
    e.add_argument("--weights", required=True, type=Path)
    e.add_argument("--images", required=True, type=Path)
    e.add_argument("--partition", required=True, type=Path)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--out", required=True, type=Path, help="metrics.json to write")
    e.add_argument("--method", required=True, help="method id (config/experiments.tsv)")
    e.add_argument("--dataset", required=True)
    e.add_argument("--degradation", required=True)
    e.add_argument("--seed", required=True, type=int)
    e.add_argument("--sr-metrics", type=Path, help="sr_metrics.json of the SR stage that made --images")
    _common(e, "yolo|frcnn")
    e.add_argument("--protocol", choices=["coco", "mmdet"], default="coco",
                   help="AP protocol: coco (every AP at 100 detections) or mmdet (the released code's: maxDets "
                        "100/300/1000)")
    e.set_defaults(func=_cmd_det_eval)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; print a JSON summary (exit 0) or ``error: ...`` (exit 2)."""
    from benchcore.cli import run_command  # noqa: PLC0415
    from data_prep.errors import DataError  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    return run_command(args, args.func, (DataError, FileNotFoundError, KeyError, ValueError, FloatingPointError),
                       limit=4000)
