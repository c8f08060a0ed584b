r"""``python -m sdconet``: train, evaluate and summarise SDCoNet (thin adapters over the tested library functions).

    python -m sdconet train --spec results/nwpu/bicubic_x2/sdconet/seed0/run_spec.json [--resume]  # what the DAG runs
    python -m sdconet train --config config/sdconet/paper.yaml --data results/data/nwpu --out runs/nwpu/sdconet \
        [--method sdconet_no_sr] [--experiments my_sheet.tsv] [--set train.epochs=36 ...] \
        [--lr-dir results/data/nwpu/matlab_x4/lr] [--seed 1] [--resume]
    torchrun --nproc_per_node 8 -m sdconet train ...       # DDP (the engine reads torchrun's env; batch per GPU)
    python -m sdconet evaluate --run runs/nwpu/sdconet [--split test] [--bootstrap 200] [--out other/metrics.json]
    python -m sdconet summary --preset paper --scale 2 [--method sdconet_separate]

``train --config/--data/--out`` builds the run specification with the same builder as the workflow
(:func:`sdconet.spec.build_spec`): ``--data`` is the data stage's folder ``results/data/{dataset}``
(``partition/{train,val,test}.json`` and ``tiles/images``; ``num_classes`` comes from the partition's categories),
the degradation (and so the scale) comes from ``--lr-dir``'s manifest, or is the released code's x2 bicubic made
inside the model. ``OUT/train`` receives ``run_spec.json``, the checkpoints and ``train_log.jsonl``; ``evaluate``
rebuilds the model from that ``run_spec.json`` and writes ``OUT/metrics.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from benchcore.config import parse_sets  # the one --set grammar: ["train.epochs=3"] -> {"train.epochs": 3}

log = logging.getLogger("sdconet")


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


#: The degradation of a CLI run without ``--lr-dir``: the released code's x2 bicubic of the normalised HR tensor,
#: made inside the model (``sdconet.spec.lr_on_the_fly``).
ON_THE_FLY_DEGRADATION = {"name": "bicubic_x2", "scale": 2, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0,
                          "jpeg": None, "seed": 0}


def degradation_of_lr_dir(lr_dir: Path) -> dict[str, Any]:
    """The degradation of an offline LR folder, from its ``manifest.json`` (``data_prep degrade`` writes it); its
    name is the folder's parent (``results/data/<ds>/<degradation>/lr``)."""
    man = lr_dir / "manifest.json"
    if not man.is_file():
        raise FileNotFoundError(f"{man} not found: --lr-dir must be a folder written by `python -m data_prep degrade`")
    doc = json.loads(man.read_text(encoding="utf-8"))
    return {"name": lr_dir.parent.name, **{k: doc[k] for k in ("scale", "kernel", "blur", "noise", "jpeg", "seed")}}


def spec_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The run specification of ``train --config ... --data ... --out ...`` (the same builder as the workflow's)."""
    from benchcore.experiments import load_experiments  # noqa: PLC0415
    from sdconet.methods import SHEET  # noqa: PLC0415
    from sdconet.spec import build_spec  # noqa: PLC0415

    data = Path(a.data).resolve()
    train_ann, _ = data_paths(data, "train")
    lr_dir = Path(a.lr_dir).resolve() if a.lr_dir else None
    deg = degradation_of_lr_dir(lr_dir) if lr_dir else dict(ON_THE_FLY_DEGRADATION)
    sheet = Path(a.experiments) if a.experiments else SHEET
    rows = {r["id"]: r for r in load_experiments(sheet).to_dict(orient="records")}
    method = a.method or "sdconet"
    if method not in rows:
        raise ValueError(f"unknown method id {method!r} in {sheet}; rows: {sorted(rows)}")
    cats = json.loads(train_ann.read_text(encoding="utf-8")).get("categories") or []
    spec = build_spec(results=str(Path(a.out).resolve().parent), dataset=data.name, degradation=deg,
                      row=rows[method], seed=a.seed, config_file=Path(a.config).resolve(),
                      num_classes=num_classes_of(train_ann), sets=a.set or [], experiments=str(sheet.resolve()),
                      out=str(Path(a.out).resolve()), data=str(data), lr_dir=str(lr_dir) if lr_dir else None,
                      class_names=[c["name"] for c in sorted(cats, key=lambda c: c["id"])])
    if lr_dir is None and not spec["settings"]["model"]["lr"]["on_the_fly"]:
        raise ValueError("this configuration needs offline LR tiles: pass --lr-dir")
    return spec


def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    from benchcore.runspec import load_spec  # noqa: PLC0415
    from sdconet.spec import train_from_spec  # noqa: PLC0415

    with _usage():
        if a.spec:
            if a.config or a.data or a.out or a.set or a.method or a.lr_dir:
                raise ValueError("--spec describes the whole run: give it alone (with --resume / --device)")
            spec = load_spec(a.spec)
        else:
            missing = [f"--{k}" for k in ("config", "data", "out") if not getattr(a, k)]
            if missing:
                raise ValueError(f"train needs --spec, or {', '.join(missing)}")
            spec = spec_from_args(a)
    return train_from_spec(spec, resume=a.resume, device=a.device)


def cmd_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from benchcore.runspec import RUN_SPEC, load_spec  # noqa: PLC0415
    from sdconet.spec import evaluate_from_spec  # noqa: PLC0415

    with _usage():
        if bool(a.spec) == bool(a.run):
            raise ValueError("evaluate needs exactly one of --spec FILE or --run DIR")
        path = Path(a.spec) if a.spec else Path(a.run) / "train" / RUN_SPEC
        spec = load_spec(path)
        from sdconet.evaluate import PRECISIONS  # noqa: PLC0415

        if a.precision not in PRECISIONS:
            raise ValueError(f"--precision {a.precision!r}: expected one of {', '.join(PRECISIONS)}")
    return evaluate_from_spec(spec, spec_path=path, split=a.split, n_boot=a.bootstrap, batch_size=a.batch_size,
                              device=a.device, sr_rgb=a.sr_rgb, out=a.out, protocol=a.protocol,
                              precision=a.precision)


def cmd_summary(a: argparse.Namespace) -> dict[str, Any]:
    from sdconet.models.build import build_model, resolve_config  # noqa: PLC0415
    from sdconet.models.config import to_dict  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415

    with _usage():
        sets = parse_sets(a.set)
        if a.num_classes is not None:
            sets["model.num_classes"] = a.num_classes
        sets["model.lr.scale"] = a.scale
        sets["model.swin.pretrained"] = "scratch"  # parameter counts do not depend on the initialisation
        doc = yaml.safe_load(Path(a.config).read_text()) if a.config else {"model": {"preset": a.preset}}
        doc.setdefault("train", {})
        doc["train"] = {"epochs": 1, "batch_size": 1, **(doc["train"] or {})}  # the summary needs no schedule
        cfg, _ = resolve_config(doc, sets, method=a.method, source=str(a.config or f"preset {a.preset}"))
    out = parameter_summary(build_model(cfg))
    out.update(method=a.method or "sdconet", preset=doc["model"].get("preset", "paper"), config=to_dict(cfg))
    return out


def cmd_convert_official(a: argparse.Namespace) -> dict[str, Any]:
    from sdconet.official import convert_checkpoint  # noqa: PLC0415

    with _usage():
        res = convert_checkpoint(a.checkpoint, a.out, config=a.config, allow_unmapped=a.allow_unmapped)
    r = res["report"]
    for key, why in {**r["unmapped"], **r["shape_mismatch"], **r["value_mismatch"]}.items():
        print(f"not converted: {key} ({why})", file=sys.stderr)
    for key in r["unfilled"]:
        print(f"not filled (random init): {key}", file=sys.stderr)
    return res


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m sdconet``."""
    from benchcore.cli import command_parser  # noqa: PLC0415

    p, sub = command_parser("python -m sdconet", __doc__)
    t = sub.add_parser("train", help="train SDCoNet (or an ablation): from a run spec, or from a config + data folder")
    t.add_argument("--spec", default=None, help="run_spec.json (what the workflow writes); nothing else is needed")
    t.add_argument("--config", default=None, help="model + train config YAML (config/sdconet/paper.yaml)")
    t.add_argument("--data", default=None, help="data folder results/data/<dataset>")
    t.add_argument("--out", default=None, help="run folder: OUT/train holds checkpoints, train_log.jsonl, run_spec.json")
    t.add_argument("--method", default=None, help="id of an SDCoNet row of the experiments sheet (default sdconet)")
    t.add_argument("--experiments", default=None, help="experiments sheet (default: the repository's)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=3 (repeatable)")
    t.add_argument("--lr-dir", default=None, help="offline LR tiles (results/data/<ds>/<degradation>/lr); the run's "
                   "degradation and scale come from its manifest. Without it: x2 bicubic inside the model")
    t.add_argument("--seed", type=int, default=0, help="the run's seed (train.seed)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/train/last.pt")
    t.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides train.device)")
    e = sub.add_parser("evaluate", help="evaluate a trained run and write metrics.json + detections.json")
    e.add_argument("--spec", default=None, help="the run's run_spec.json")
    e.add_argument("--run", default=None, help="the run folder (reads RUN/train/run_spec.json)")
    e.add_argument("--out", default=None, help="metrics.json path (default: the run folder's metrics.json)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--sr-rgb", action="store_true", help="SR metrics on RGB without border crop (spec 10 row 12)")
    e.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates for AP / AP_s CIs (0 = off)")
    e.add_argument("--protocol", choices=["coco", "mmdet"], default="coco",
                   help="AP protocol: coco (every AP at 100 detections) or mmdet (the released code's: maxDets "
                        "100/300/1000)")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", default="fp32",
                   help="inference precision: fp32 (the protocol's) | fp16 | bf16 (autocast), to check AP under mixed "
                        "precision against fp32 (benchmarks/precision_ap.py); recorded in metrics.json")
    s = sub.add_parser("summary", help="per-component parameter counts as JSON")
    s.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    s.add_argument("--config", default=None, help="run config YAML instead of a preset")
    s.add_argument("--method", default=None, help="experiments.tsv id of an SDCoNet variant")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--scale", type=int, required=True, help="HR / LR scale (2, 3, 4 or 8): sets the SR head")
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    c = sub.add_parser("convert-official", help="convert a released mmdetection SDCoNet checkpoint (sdconet.official)")
    c.add_argument("checkpoint", help="released .pth (mmengine checkpoint with 'state_dict', or a bare state dict)")
    c.add_argument("out", help="suite checkpoint to write (OUT.json beside it: the model settings and the report)")
    c.add_argument("--config", default=None, help="released model config as JSON (an mmdetection model dict, "
                   "a dumped mmengine config or the fixture's config.json); default: the released full-size model")
    c.add_argument("--allow-unmapped", action="store_true", help="write even if keys stay unmapped or unfilled")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sub-command; print its JSON result on stdout. Returns the exit status (2 for a usage error)."""
    from benchcore.cli import run_command  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "summary": cmd_summary,
                "convert-official": cmd_convert_official}
    return run_command(args, handlers[args.command], (UsageError,), show=strict_json,
                       log_format="%(asctime)s %(levelname)s %(name)s: %(message)s")
