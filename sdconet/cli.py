r"""``python -m sdconet``: train, evaluate and summarise SDCoNet (thin adapters over the tested library functions).

    python -m sdconet train --config config/sdconet/paper.yaml --data results/data/nwpu --out runs/nwpu/sdconet \
        [--method sdconet_no_sr] [--set train.epochs=36 ...] [--lr-dir results/data/nwpu/matlab_x4/lr] [--resume]
    torchrun --nproc_per_node 8 -m sdconet train ...       # DDP (the engine reads torchrun's env; batch per GPU)
    python -m sdconet evaluate --checkpoint runs/nwpu/sdconet/last.pt --data results/data/nwpu \
        --out results/nwpu/bicubic_x2/sdconet/seed0/metrics.json [--split test] [--sr]
    python -m sdconet summary --preset paper [--method sdconet_separate]

``--data`` is the data stage's folder ``results/data/{dataset}``: ``partition/{train,val,test}.json`` (COCO, file
names relative to ``tiles/``) and ``tiles/images``. ``num_classes`` comes from the partition json's categories.
``train`` writes ``OUT/run_config.json`` (resolved model + train config, method, data) beside the checkpoints;
``evaluate`` rebuilds the model from the ``run_config.json`` next to the checkpoint (or ``--config``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

log = logging.getLogger("sdconet")
RUN_CONFIG = "run_config.json"


class UsageError(Exception):
    """A bad argument, config or data folder (reported as ``error: ...`` with exit status 2, no traceback)."""


@contextlib.contextmanager
def _usage() -> Iterator[None]:
    """Turn the config / data resolution errors raised inside the block into :class:`UsageError`."""
    from sdconet.models.config import ConfigError  # noqa: PLC0415
    from sdconet.train_config import TrainConfigError  # noqa: PLC0415

    try:
        yield
    except (ConfigError, TrainConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from exc


def strict_json(obj: Any) -> Any:
    """Copy of ``obj`` with non-finite floats as the strings "inf" / "-inf" / "nan" (strict JSON; the model config
    reader maps "inf" back in ``saliency.level_ranges``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "model.swin.window_size=8"]`` -> dotted-key dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value (e.g. train.epochs=3)")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def data_paths(data: Path, split: str) -> tuple[Path, Path]:
    """(partition json of ``split``, image dir that its ``file_name``s are relative to) of a data folder."""
    ann, images = data / "partition" / f"{split}.json", data / "tiles"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} not found: --data must be the data stage's folder results/data/<dataset> "
                                f"(with partition/{{train,val,test}}.json and tiles/images)")
    if not images.is_dir():
        raise FileNotFoundError(f"{images} not found (the tiles of the data folder {data})")
    return ann, images


def num_classes_of(ann: Path) -> int:
    """Number of categories of a COCO json."""
    cats = json.loads(ann.read_text(encoding="utf-8")).get("categories") or []
    if not cats:
        raise ValueError(f"{ann}: no categories")
    return len(cats)


def lr_scale(lr_dir: Path | None, default: int) -> int:
    """Scale of an offline LR folder (its ``manifest.json``), else ``default``."""
    if lr_dir is None:
        return default
    if not lr_dir.is_dir():
        raise FileNotFoundError(f"--lr-dir {lr_dir} is not a folder")
    man = lr_dir / "manifest.json"
    return int(json.loads(man.read_text())["scale"]) if man.is_file() else default


def _degradation(lr_dir: str | None, scale: int) -> str:
    """``results/data/<ds>/<degradation>/lr`` -> ``<degradation>``; on the fly: ``bicubic_x<scale>``."""
    return Path(lr_dir).parent.name if lr_dir else f"bicubic_x{scale}"


def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from sdconet.data import TileDataset  # noqa: PLC0415
    from sdconet.engine import train  # noqa: PLC0415
    from sdconet.models.build import build_model, load_model_config  # noqa: PLC0415
    from sdconet.models.config import to_dict  # noqa: PLC0415
    from sdconet.train_config import TrainConfig  # noqa: PLC0415
    from benchcore.atomic import atomic_write_json  # noqa: PLC0415

    data = Path(a.data).resolve()
    lr_dir = Path(a.lr_dir).resolve() if a.lr_dir else None
    with _usage():
        train_ann, images = data_paths(data, "train")
        sets = parse_sets(a.set)
        if a.device:
            sets["train.device"] = a.device
        sets["model.num_classes"] = num_classes_of(train_ann)
        if lr_dir is not None:
            sets["model.lr.on_the_fly"] = False
            sets["model.lr.scale"] = lr_scale(lr_dir, int(sets.get("model.lr.scale", 2)))
        cfg, train_dict = load_model_config(a.config, sets, method=a.method)
        tcfg = TrainConfig.from_dict(train_dict)
        kw = dict(lr_dir=lr_dir, scale=cfg.lr.scale, seed=tcfg.seed)
        train_set = TileDataset(train_ann, images, train=True, **kw)
        val_ann = data / "partition" / "val.json"
        val_set = TileDataset(val_ann, images, train=False, **kw) if val_ann.is_file() else None
    if val_set is not None and len(val_set) == 0:
        val_set = None
    torch.manual_seed(tcfg.seed)  # model initialisation
    model = build_model(cfg)
    out = Path(a.out)
    run_cfg = {"model": to_dict(cfg), "train": tcfg.to_dict(), "method": a.method or "sdconet",
               "data": str(data), "lr_dir": str(lr_dir) if lr_dir else None,
               "degradation": _degradation(str(lr_dir) if lr_dir else None, cfg.lr.scale),
               "config_file": str(Path(a.config).resolve()), "sets": sets}
    if int(os.environ.get("RANK", "0")) == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG, strict_json(run_cfg))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    res = train(model, train_set, val_set, tcfg, out, resume=a.resume, distributed=distributed)
    hist = res["history"]
    return {"out": str(out), "last_checkpoint": res["last_checkpoint"], "epochs_run": len(hist),
            "final_loss": hist[-1]["loss"] if hist else None,
            "final_val": hist[-1].get("val") if hist else None}


def _run_config(a: argparse.Namespace, ckpt: Path) -> dict[str, Any]:
    """The run config next to the checkpoint, or one resolved from ``--config`` / ``--method`` / ``--set``."""
    from sdconet.models.build import load_model_config  # noqa: PLC0415
    from sdconet.models.config import to_dict  # noqa: PLC0415

    if a.config is None:
        path = ckpt.parent / RUN_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass --config (and --method/--set) to describe the model")
        return json.loads(path.read_text())
    sets = parse_sets(a.set)
    sets["model.num_classes"] = num_classes_of(data_paths(Path(a.data), a.split)[0])
    cfg, train = load_model_config(a.config, sets, method=a.method)
    return {"model": to_dict(cfg), "train": train, "method": a.method or "sdconet", "lr_dir": None}


def cmd_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from sdconet.checkpoint import load_checkpoint  # noqa: PLC0415
    from sdconet.data import TileDataset  # noqa: PLC0415
    from sdconet.engine import DistInfo, resolve_device  # noqa: PLC0415
    from sdconet.evaluate import evaluate, write_run_metrics  # noqa: PLC0415
    from sdconet.models.build import build_model  # noqa: PLC0415
    from sdconet.models.config import from_dict  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415

    ckpt = Path(a.checkpoint)
    with _usage():
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}")
        run_cfg = _run_config(a, ckpt)
        lr_dir = a.lr_dir or run_cfg.get("lr_dir")
        model_dict = dict(run_cfg["model"])
        if a.lr_dir:
            model_dict["lr"] = {**model_dict.get("lr", {}), "on_the_fly": False,
                                "scale": lr_scale(Path(a.lr_dir), model_dict.get("lr", {}).get("scale", 2))}
        cfg = from_dict(model_dict)
        ann, images = data_paths(Path(a.data), a.split)
        ds = TileDataset(ann, images, train=False, lr_dir=lr_dir, scale=cfg.lr.scale)
        device = resolve_device(a.device, DistInfo(False))
    model = build_model(cfg)
    state = load_checkpoint(ckpt, model, restore_rng=False)
    model.to(device)
    kw: dict[str, Any] = {"crop_border": 0, "test_y_channel": False} if a.sr_rgb else {}
    res = evaluate(model, ds, ds.coco, device, batch_size=a.batch_size, sr=a.sr, **kw)
    summ = parameter_summary(model)
    eff = {"params": summ["totals"]["total"], "params_inference": summ["totals"]["inference_path"],
           "params_millions": summ["millions"]}
    seed = a.seed if a.seed is not None else int(run_cfg.get("train", {}).get("seed", 0))
    doc = write_run_metrics(
        a.out, res, method=a.method or run_cfg.get("method", "sdconet"),
        dataset=a.dataset or Path(a.data).resolve().name,
        degradation=a.degradation or run_cfg.get("degradation") or _degradation(lr_dir, cfg.lr.scale),
        seed=seed, config=run_cfg, device=device, efficiency=eff,
        extra={"checkpoint": str(ckpt.resolve()), "epoch": int(state["epoch"]), "split": a.split,
               "images": len(ds)})
    return {"metrics": str(a.out), "detection": {k: doc["detection"][k] for k in ("AP", "AP50", "AP_s")},
            "sr": doc["sr"]}


def cmd_summary(a: argparse.Namespace) -> dict[str, Any]:
    from sdconet.models.build import build_model, resolve_config  # noqa: PLC0415
    from sdconet.models.config import to_dict  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415

    with _usage():
        sets = parse_sets(a.set)
        if a.num_classes is not None:
            sets["model.num_classes"] = a.num_classes
        doc = yaml.safe_load(Path(a.config).read_text()) if a.config else {"model": {"preset": a.preset}}
        doc.setdefault("train", {})
        doc["train"] = {"epochs": 1, "batch_size": 1, **(doc["train"] or {})}  # the summary needs no schedule
        cfg, _ = resolve_config(doc, sets, method=a.method, source=str(a.config or f"preset {a.preset}"))
    out = parameter_summary(build_model(cfg))
    out.update(method=a.method or "sdconet", preset=doc["model"].get("preset", "paper"), config=to_dict(cfg))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m sdconet``."""
    p = argparse.ArgumentParser(prog="python -m sdconet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train SDCoNet (or an ablation) on a data folder")
    t.add_argument("--config", required=True, help="run config YAML (config/sdconet/paper.yaml)")
    t.add_argument("--data", required=True, help="data folder results/data/<dataset>")
    t.add_argument("--out", required=True, help="run folder (checkpoints, train_log.jsonl, run_config.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--method", default=None, help="experiments.tsv id of an SDCoNet variant")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=3 (repeatable)")
    t.add_argument("--lr-dir", default=None, help="offline LR tiles (results/data/<ds>/<degradation>/lr)")
    t.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides train.device)")
    e = sub.add_parser("evaluate", help="evaluate a checkpoint and write metrics.json + detections.json")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="data folder results/data/<dataset>")
    e.add_argument("--out", required=True, help="metrics.json path (detections.json is written beside it)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--sr", action="store_true", help="also score the SR output (PSNR/SSIM)")
    e.add_argument("--sr-rgb", action="store_true", help="SR metrics on RGB without border crop (spec 10 row 12)")
    e.add_argument("--lr-dir", default=None, help="offline LR tiles (default: the run's)")
    e.add_argument("--config", default=None, help="run config YAML when the run folder has no run_config.json")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="overrides with --config")
    e.add_argument("--method", default=None, help="method id (default: the run's)")
    e.add_argument("--dataset", default=None, help="dataset name (default: the data folder's name)")
    e.add_argument("--degradation", default=None, help="degradation name (default: the run's)")
    e.add_argument("--seed", type=int, default=None, help="seed recorded in metrics.json (default: the run's)")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--device", default="auto")
    s = sub.add_parser("summary", help="per-component parameter counts as JSON")
    s.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    s.add_argument("--config", default=None, help="run config YAML instead of a preset")
    s.add_argument("--method", default=None, help="experiments.tsv id of an SDCoNet variant")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sub-command; print its JSON result on stdout. Returns the exit status (2 for a usage error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "summary": cmd_summary}
    try:
        result = handlers[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(strict_json(result), indent=1, default=str, allow_nan=False))
    return 0
