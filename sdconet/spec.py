"""Run specifications of SDCoNet and its ablations: resolve the settings, build the spec, train and evaluate from it.

The settings of a run are resolved here, once, in this order (later wins)::

    model/train YAML (config/sdconet/*.yaml)
      < the experiments row's switches (saliency, sr_branch, routing, ... : sdconet.methods)
      < the workflow's ``sdconet.set`` (or the CLI's ``--set``)
      < the workflow's ``sdconet.rows.<row id>`` (per-row overrides, e.g. the released ablation schedules)
      < the row's ``set`` cell
      < what the run owns: lr.scale = the degradation's scale (also the SR decoder's upscale), lr.on_the_fly,
        num_classes = the dataset's categories, train.seed = the run's seed

The keys of the last line cannot be set anywhere else (an error names the key and its owner). The workflow
(``workflow/rules/common.smk``) and ``python -m sdconet train`` both call :func:`build_spec`, so a DAG run and a CLI
run with the same settings have the same specification (and the same ``spec_hash``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from benchcore.config import ConfigError
from benchcore.runspec import data_paths, make_spec, run_dir

#: Settings a run owns, and who owns them (an override of one of these is an error).
OWNED = {
    "model.lr.scale": "the run's degradation (degradations.<id>.scale; 1 for an HR-input row)",
    "model.lr.on_the_fly": "the run's degradation (x2 torch-bicubic without blur, noise or JPEG runs in the model)",
    "model.num_classes": "the dataset's categories",
    "train.seed": "the run's seed (seeds: in the workflow config, --seed on the CLI)",
}


class SpecError(ConfigError):
    """A setting that cannot be resolved (the message names the source and the key)."""


def lr_on_the_fly(degradation: Mapping[str, Any]) -> bool:
    """True when the model makes its LR input itself, exactly as the released code (x2 bicubic of the normalised HR
    tensor, no antialias): the degradation is x2 torch-bicubic with no blur, noise or JPEG. Otherwise the run reads
    the data stage's offline LR tiles."""
    return (degradation["scale"] == 2 and degradation["kernel"] == "torch-bicubic" and not degradation["blur"]
            and not degradation["noise"] and degradation["jpeg"] is None)


def _check_not_owned(keys: Sequence[str], source: str) -> None:
    for key in keys:
        full = key if key.startswith(("model.", "train.")) else f"model.{key}"
        if full in OWNED:
            raise SpecError(f"{source}: '{key}' cannot be set here: it belongs to {OWNED[full]}")


def parse_items(items: Sequence[str] | Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """``["train.epochs=3", ...]`` (the one ``--set`` grammar, :func:`benchcore.config.parse_sets`) or a
    ``{dotted key: value}`` mapping (the workflow config's ``sdconet.set``) -> ``{dotted key: value}``."""
    from benchcore.config import ConfigError, parse_sets  # noqa: PLC0415

    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    try:
        return parse_sets(items)
    except ConfigError as exc:
        raise SpecError(f"{source}: {exc}") from None


def check_row_ids(rows: Mapping[str, Any] | None, sdconet_ids: Sequence[str], all_ids: Sequence[str] = (),
                  source: str = "sdconet.rows") -> None:
    """Raise :class:`SpecError` naming ``source.<id>`` when a key of ``rows`` (the workflow's per-row overrides) is
    not an SDCoNet row of the sheet (``sdconet_ids``; ``all_ids``: every id of the sheet, to tell a serial row from
    a typo) or its value is not a mapping of dotted keys."""
    for rid, items in (rows or {}).items():
        if rid not in sdconet_ids:
            what = "a serial row (use baselines.set or its 'set' cell)" if rid in all_ids else "not a row of the sheet"
            raise SpecError(f"{source}.{rid}: {what}; SDCoNet rows: {list(sdconet_ids)}")
        if not isinstance(items, Mapping):
            raise SpecError(f"{source}.{rid}: must map dotted keys to values, e.g. {{train.epochs: 36}}")


def resolve_settings(config_file: str | Path, row: Mapping[str, Any], degradation: Mapping[str, Any],
                     num_classes: int, seed: int, sets: Sequence[str] | Mapping[str, Any] | None = None,
                     row_sets: Sequence[str] | None = None,
                     row_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The merged ``{"model": SDCoNetConfig dict, "train": TrainConfig dict}`` of one run (order: module docstring).

    ``row_overrides``: this row's entry of the workflow's ``sdconet.rows`` (dotted keys), applied after ``sets``.

    Raises:
        SpecError / sdconet.models.config.ConfigError: naming the file or source and the key.
    """
    from benchcore.config import flatten, read_yaml  # noqa: PLC0415
    from sdconet.cli import strict_json  # noqa: PLC0415
    from sdconet.methods import input_scale, method_row, reads_hr  # noqa: PLC0415
    from sdconet.models.build import resolve_config  # noqa: PLC0415
    from sdconet.models.config import to_dict  # noqa: PLC0415

    path = Path(config_file)
    doc = read_yaml(path, "run config", error=SpecError)
    if isinstance(doc, Mapping):
        _check_not_owned([f"{s}.{k}" for s in ("model", "train") for k in flatten(doc.get(s) or {})], str(path))
    user = parse_items(sets, "sdconet.set")
    _check_not_owned(list(user), "sdconet.set")
    rows_src = f"sdconet.rows.{row.get('id')}"
    per_row = parse_items(row_overrides, rows_src)
    _check_not_owned(list(per_row), rows_src)
    row_items = parse_items(row_sets, f"experiments row {row.get('id')!r}, column 'set'")
    _check_not_owned(list(row_items), f"experiments row {row.get('id')!r}, column 'set'")
    method_row(row)  # an SDCoNet row (ValueError otherwise)
    hr_input = reads_hr(row)
    owned = {"model.lr.scale": input_scale(row, degradation["scale"]),
             "model.lr.on_the_fly": lr_on_the_fly(degradation) and not hr_input,
             "model.num_classes": int(num_classes), "train.seed": int(seed)}
    # Resolve layer by layer so that an error names where the bad key is: the file, the workflow's overrides
    # (sdconet.set, sdconet.rows) or the row's cell. A layer adds a pass only when it holds something; the last
    # pass is the result.
    layers = [(str(path), {}), ("sdconet.set", user), (rows_src, per_row),
              (f"experiments row {row.get('id')!r}, column 'set'", row_items)]
    merged: dict[str, Any] = {}
    for source, items in [layers[0], *(layer for layer in layers[1:] if layer[1])]:
        merged.update(items)
        cfg, train = resolve_config(doc, {**merged, **owned}, method=row, source=source)
    return {"model": strict_json(to_dict(cfg)), "train": train}


def swin_init(swin: dict[str, Any], store: str) -> dict[str, Any]:
    """Resolve ``swin.pretrained`` (``scratch`` / null, ``imagenet``, a local file, ``timm``) in place into what the
    encoder loads (the staged catalogue file for ``imagenet``, None for scratch); return the ``settings.init``
    record (:func:`benchcore.weights.resolve_init`)."""
    from benchcore.weights import WeightsError, resolve_init  # noqa: PLC0415

    try:
        rec = resolve_init("swin_t", swin["pretrained"], store, source="model.swin.pretrained")
    except WeightsError as exc:
        raise SpecError(str(exc)) from None
    if rec["init"] != "timm":
        swin["pretrained"] = rec["file"]
    return rec


def build_spec(*, results: str, dataset: str, degradation: Mapping[str, Any], row: Mapping[str, Any], seed: int,
               config_file: str | Path, num_classes: int, sets: Sequence[str] | Mapping[str, Any] | None = None,
               experiments: str | None = None, out: str | None = None, data: str | None = None,
               lr_dir: str | None = None, class_names: Sequence[str] | None = None,
               rows: Mapping[str, Mapping[str, Any]] | None = None,
               weights_dir: str | None = None) -> dict[str, Any]:
    """The run specification of an SDCoNet row (``benchcore.runspec`` layout).

    ``data`` / ``lr_dir`` / ``out`` default to the workflow's path grammar under ``results``; the CLI passes its own.
    ``rows``: the workflow's ``sdconet.rows`` ({row id: {dotted key: value}}); this row's entry is applied after
    ``sets`` and recorded in ``sources.rows``. ``weights_dir``: where the weights stage puts the published files
    (default ``results/weights``); ``model.swin.pretrained: imagenet`` becomes that folder's Swin-T file
    (:func:`swin_init`).
    """
    from benchcore.experiments import row_sets  # noqa: PLC0415

    row = {k: v for k, v in dict(row).items() if k != "line"}
    method = row["id"]
    per_row = dict((rows or {}).get(method) or {})
    settings = resolve_settings(config_file, row, degradation, num_classes, seed, sets,
                                row_sets(row, f"experiments row {method!r}"), per_row)
    settings["init"] = swin_init(settings["model"]["swin"], weights_dir or f"{results}/weights")
    d = data_paths(results, dataset, degradation["name"], data)
    offline = not settings["model"]["lr"]["on_the_fly"]
    hr_input = settings["model"]["lr"]["scale"] == 1  # an input: hr row (sdconet.methods.input_scale)
    paths = {"data": d["data"], "partition": d["partition"], "tiles": d["tiles"],
             "lr": d["hr_images"] if hr_input else (lr_dir or d["lr"]) if offline else None,
             "out": out or run_dir(results, dataset, degradation["name"], method, seed)}
    sources = {"config": str(config_file), "sets": parse_items(sets, "sdconet.set"), "rows": per_row,
               "experiments": experiments, "classes": list(class_names) if class_names is not None else None}
    return make_spec("sdconet", dataset, seed, degradation, paths, settings, sources, method=row)


def train_from_spec(spec: Mapping[str, Any], resume: bool = False, device: str | None = None) -> dict[str, Any]:
    """Train the run a specification describes; checkpoints, ``train_log.jsonl`` and ``run_spec.json`` go to
    ``paths.out/train``. ``device`` (the CLI's ``--device``) replaces ``train.device`` for this process only."""
    import os  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from benchcore.runspec import RUN_SPEC, write_spec  # noqa: PLC0415
    from sdconet.data import TileDataset  # noqa: PLC0415
    from sdconet.engine import train  # noqa: PLC0415
    from sdconet.models.build import build_model  # noqa: PLC0415
    from sdconet.models.config import from_dict  # noqa: PLC0415
    from sdconet.train_config import TrainConfig  # noqa: PLC0415

    s = spec["settings"]
    cfg = from_dict(s["model"])
    tdict = dict(s["train"])
    if device:
        tdict["device"] = device
    tcfg = TrainConfig.from_dict(tdict)
    p = spec["paths"]
    images = Path(p["tiles"])
    kw = dict(lr_dir=p["lr"], scale=cfg.lr.scale, seed=tcfg.seed)
    train_set = TileDataset(Path(p["partition"]) / "train.json", images, train=True, **kw)
    if train_set.num_classes != cfg.num_classes:
        raise SpecError(f"{p['partition']}/train.json has {train_set.num_classes} categories but the run spec says "
                        f"num_classes={cfg.num_classes}")
    val_ann = Path(p["partition"]) / "val.json"
    val_set = TileDataset(val_ann, images, train=False, **kw) if val_ann.is_file() else None
    if val_set is not None and len(val_set) == 0:
        val_set = None
    torch.manual_seed(tcfg.seed)  # model initialisation
    model = build_model(cfg)
    out = Path(p["out"]) / "train"
    if int(os.environ.get("RANK", "0")) == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_spec(out / RUN_SPEC, spec)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    res = train(model, train_set, val_set, tcfg, out, resume=resume, distributed=distributed)
    hist = res["history"]
    return {"out": str(out), "last_checkpoint": res["last_checkpoint"], "epochs_run": len(hist),
            "final_loss": hist[-1]["loss"] if hist else None, "final_val": hist[-1].get("val") if hist else None}


def evaluate_from_spec(spec: Mapping[str, Any], spec_path: str | Path | None = None, split: str = "test",
                       n_boot: int = 0, batch_size: int = 2, device: str = "auto",
                       sr_rgb: bool = False, out: str | Path | None = None, protocol: str = "coco",
                       precision: str = "fp32") -> dict[str, Any]:
    """Evaluate ``paths.out/train/last.pt`` on ``split`` and write ``out`` (default ``paths.out/metrics.json``)
    + ``detections.json`` beside it (+ bootstrap CIs when ``n_boot``). The SR output is scored when the model
    has an SR branch. ``protocol``: the AP protocol (the workflow's ``evaluation.protocol``: ``coco`` or
    ``mmdet``, :func:`benchcore.metrics.detection.coco_evaluate`), recorded in the detection block. ``precision``:
    a key of :data:`sdconet.evaluate.PRECISIONS` (``fp32``, the protocol's, or ``fp16`` / ``bf16`` autocast), recorded
    in ``extra``."""
    from benchcore.runspec import provenance_block  # noqa: PLC0415
    from sdconet.checkpoint import load_checkpoint  # noqa: PLC0415
    from sdconet.data import TileDataset  # noqa: PLC0415
    from sdconet.engine import DistInfo, resolve_device  # noqa: PLC0415
    from sdconet.evaluate import PRECISIONS, evaluate, write_run_metrics  # noqa: PLC0415
    from sdconet.models.build import build_model  # noqa: PLC0415
    from sdconet.models.config import from_dict  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    p = spec["paths"]
    cfg = from_dict(spec["settings"]["model"])
    ckpt = Path(p["out"]) / "train" / "last.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt} (train the run first)")
    ann = Path(p["partition"]) / f"{split}.json"
    ds = TileDataset(ann, Path(p["tiles"]), train=False, lr_dir=p["lr"], scale=cfg.lr.scale)
    dev = resolve_device(device, DistInfo(False))
    model = build_model(cfg)
    state = load_checkpoint(ckpt, model, restore_rng=False)
    model.to(dev)
    kw: dict[str, Any] = {"crop_border": 0, "test_y_channel": False} if sr_rgb else {}
    res = evaluate(model, ds, ds.coco, dev, batch_size=batch_size, sr=cfg.use_sr, protocol=protocol,
                   amp_dtype=PRECISIONS[precision], **kw)
    summ = parameter_summary(model)
    eff = {"params": summ["totals"]["total"], "params_inference": summ["totals"]["inference_path"],
           "params_millions": summ["millions"]}
    out = Path(out) if out else Path(p["out"]) / "metrics.json"
    doc = write_run_metrics(out, res, method=spec["method"]["id"], dataset=spec["dataset"],
                            degradation=spec["degradation"]["name"], seed=spec["seed"],
                            config=provenance_block(spec, spec_path), device=dev, efficiency=eff,
                            extra={"checkpoint": str(ckpt.resolve()), "epoch": int(state["epoch"]), "split": split,
                                   "images": len(ds), "precision": precision})
    if n_boot:  # 95 % CIs of AP / AP_s over the test images
        from benchcore.metrics.results import add_bootstrap  # noqa: PLC0415

        doc = add_bootstrap(out, ann, n_boot=n_boot)
    return {"metrics": str(out), "detection": {k: doc["detection"][k] for k in ("AP", "AP50", "AP_s")},
            "sr": doc["sr"]}
