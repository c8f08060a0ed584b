"""Steps of the serial "SR model, then detector" baselines: what ``python -m baselines`` and the Snakemake scripts call.

Configs: a YAML file with sections ``sr`` (+ optional per-model ``sr_edsr`` / ``sr_rrdb`` / ``sr_swinir`` merged over
it), ``sr_infer``, ``yolo`` and ``frcnn``, each validated by its :mod:`baselines.config` dataclass (an unknown key
is an error naming the key and the file). ``device: auto`` means CUDA when available, else CPU.

Input grid of the detectors: the native size of the images they are given (HR / SR tiles: the HR size; LR tiles:
HR / scale). Faster R-CNN pins ``min_size = max_size`` to it (``tile_size`` None); YOLO's ``imgsz`` follows it too
unless the config sets ``imgsz`` (a mapping key, or a non-default dataclass value). Every prediction is mapped back
to the HR grid of the partition json (:mod:`baselines.mapping`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from baselines.config import (ConfigError, FrcnnConfig, SRInferConfig, SRTrainConfig, YoloConfig, _Config,
                              require_scale)
from baselines.mapping import TileIndex
from benchcore import config as _cfg

DETECTORS = ("yolov8n", "yolov8s", "frcnn")
YOLO_MODELS = {"yolov8n": "yolov8n.yaml", "yolov8s": "yolov8s.yaml"}


def learned_sr_models() -> tuple[str, ...]:
    """The registered learned SR models (:data:`baselines.sr_models.SR_REGISTRY`; imports torch)."""
    from baselines.sr_models import sr_model_names  # noqa: PLC0415

    return sr_model_names()


SR_INTERP = ("bicubic", "nearest")
def config_sections() -> dict[str, type[_Config]]:
    """The sections of a baselines config: ``sr`` + one ``sr_<model>`` per registered SR model, ``sr_infer``,
    ``yolo``, ``frcnn``."""
    return {"sr": SRTrainConfig, **{f"sr_{m}": SRTrainConfig for m in learned_sr_models()},
            "sr_infer": SRInferConfig, "yolo": YoloConfig, "frcnn": FrcnnConfig}
ConfigLike = Mapping[str, Any] | _Config | None


# ----------------------------------------------------------------------------------------------------- configs
def parse_sets(items: Sequence[str] | None, default_section: str) -> dict[str, dict[str, Any]]:
    """``--set`` items in the suite's one grammar (:func:`benchcore.config.parse_sets`) -> ``{section: {key: value}}``.

    ``section.key=value`` (``yolo.epochs=3``, ``sr_edsr.iters=10``, ``yolo.overrides.lr0=1.0e-3`` for a nested
    key); values are YAML. A bare ``key=value`` goes to ``default_section`` (the command's own section, so
    ``det-train --detector frcnn --set epochs=2`` means ``frcnn.epochs=2``).
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in _cfg.parse_sets(items, error=ConfigError).items():
        section, _, rest = key.partition(".")
        if not rest:
            section, rest = default_section, key
        out[section] = _cfg.merge(out.get(section, {}), _cfg.nest({rest: value}, error=ConfigError))
    return out


def read_config(path: str | os.PathLike | None = None, sets: Mapping[str, Mapping[str, Any]] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Sections of a YAML config merged with ``sets`` (``{section: {key: value}}``), every section validated.

    Precedence for an SR model: file ``sr`` < file ``sr_<model>`` < ``sets["sr"]`` < ``sets["sr_<model>"]``.
    """
    source = f"{path} + --set" if path and sets else str(path) if path else "--set"
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc})") from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: a baselines config is a mapping of sections {sorted(config_sections())}")
    sections = config_sections()
    merged: dict[str, dict[str, Any]] = {}
    for origin, doc in ((str(path), raw), ("--set", sets or {})):
        for section, values in doc.items():
            if section not in sections:
                raise ConfigError(_cfg.unknown_key_message(origin, str(section), sections, kind="section"))
            if values is not None and not isinstance(values, Mapping):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping, got {values!r}")
            merged[section] = _cfg.merge(merged.get(section, {}), values or {})
    sets = sets or {}
    for name in (n for n in merged if n.startswith("sr_") and n != "sr_infer"):  # --set sr.k beats a file's sr_<m>.k
        merged[name].update({k: v for k, v in sets.get("sr", {}).items() if k not in sets.get(name, {})})
    for section, values in merged.items():
        base = merged.get("sr", {}) if section.startswith("sr_") and section != "sr_infer" else {}
        sections[section].from_dict({**base, **values}, source=f"{source} [{section}]")
    return merged


def section(raw: Mapping[str, Mapping[str, Any]], name: str, model: str | None = None) -> dict[str, Any]:
    """The raw mapping of a section (``sr`` merged with ``sr_<model>`` when ``model`` is given)."""
    out = dict(raw.get(name, {}))
    if model is not None:
        out.update(raw.get(f"{name}_{model}", {}))
    return out


def _explicit(cfg: ConfigLike, cls: type[_Config]) -> dict[str, Any]:
    """Keys a config sets explicitly: a mapping's keys, or a dataclass's non-default fields."""
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if not isinstance(cfg, cls):
        raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(cfg).__name__}")
    default = cls()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if getattr(cfg, f.name) != getattr(default, f.name)}


def resolve_device(device: str | None, yolo: bool = False) -> str:
    """``auto``/None -> ``cuda`` (``0`` for ultralytics) when available, else ``cpu``; others unchanged."""
    if device not in (None, "auto"):
        return str(device)
    import torch  # noqa: PLC0415

    return ("0" if yolo else "cuda") if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------------- files
def partition_files(partition_dir: str | os.PathLike, parts: Sequence[str] = ("train", "val", "test"),
                    required: Sequence[str] = ("train", "val")) -> dict[str, Path]:
    """``{part: partition_dir/<part>.json}`` for the parts that exist; a missing required part is an error."""
    out = {p: Path(partition_dir) / f"{p}.json" for p in parts}
    for p in required:
        if not out[p].is_file():
            raise FileNotFoundError(f"partition file missing: {out[p]} (run `python -m data_prep partition` first)")
    return {p: f for p, f in out.items() if f.is_file()}


def flat_image_dir(images: str | os.PathLike, part_json: str | os.PathLike) -> Path:
    """The folder that holds the tiles of ``part_json`` by base name: ``images`` or ``images/images`` (tiles dir)."""
    index = TileIndex(part_json)
    if not len(index):
        raise ValueError(f"{part_json}: no images")
    name = Path(next(iter(index.by_stem.values()))["file_name"]).name
    for cand in (Path(images), Path(images) / "images"):
        if (cand / name).is_file():
            return cand
    raise FileNotFoundError(f"tile {name} of {part_json} not found in {images} (nor in {Path(images) / 'images'})")


def image_scale(image_dir: Path, index: TileIndex) -> tuple[int, int]:
    """(integer HR/image scale, image side) from the first tile: 1 for HR/SR tiles, ``s`` for LR tiles."""
    from PIL import Image  # noqa: PLC0415

    rec = next(iter(index.by_stem.values()))
    with Image.open(index.find_file(image_dir, rec)) as im:
        w, h = im.size
    s = max(1, round(rec["width"] / w))
    if abs(w * s - rec["width"]) > s or abs(h * s - rec["height"]) > s:
        raise ValueError(f"{rec['file_name']}: image {w}x{h} is not the HR size {rec['width']}x{rec['height']} "
                         f"divided by an integer scale")
    return s, max(w, h)


# ----------------------------------------------------------------------------------------------------- SR
def sr_train_step(model_name: str, pairs_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ConfigLike = None,
                  resume: bool = False) -> dict[str, Any]:
    """Train ``model_name`` on ``pairs_dir/<part>/{HR,LR}`` (BasicSR export) into ``out_dir`` (``model.pth``)."""
    from baselines.sr_train import train_sr  # noqa: PLC0415

    if model_name not in learned_sr_models():
        raise ValueError(f"unknown SR model {model_name!r}; expected one of {learned_sr_models()}")
    conf = SRTrainConfig.from_dict({**_explicit(cfg, SRTrainConfig), "model_name": model_name}, source="sr config")
    require_scale(conf, "sr config")
    kw = conf.to_kwargs()
    kw["device"] = resolve_device(kw["device"])
    return train_sr(pairs_dir=pairs_dir, out_dir=out_dir, resume=resume, **kw)


def sr_step(method: str | None, lr_dir: str | os.PathLike, out_dir: str | os.PathLike,
            hr_dir: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
            scale: int | None = None, cfg: ConfigLike = None, device: str | None = "cpu") -> dict[str, Any]:
    """Super-resolve every LR tile into ``out_dir`` (+ ``sr_metrics.json``, scored against ``hr_dir`` when given).

    ``method``: ``bicubic`` / ``nearest`` (PIL, :mod:`baselines.interp`) or a learned model whose ``checkpoint``
    (``model.pth`` of :func:`sr_train_step`) is required; None takes the model named by the checkpoint.
    """
    from baselines.interp import upscale_folder  # noqa: PLC0415
    from baselines.sr_infer import infer_sr, load_sr_checkpoint  # noqa: PLC0415

    model = ck = None
    if method not in SR_INTERP:
        if checkpoint is None:
            raise ValueError(f"SR method {method!r} needs --checkpoint (model.pth of sr-train)")
        model, ck = load_sr_checkpoint(checkpoint)
        if method is not None and ck["model"] != method:
            raise ValueError(f"{checkpoint} holds a {ck['model']!r} model, not {method!r}")
        if scale is not None and int(scale) != int(ck["scale"]):
            raise ValueError(f"scale {scale} differs from the checkpoint's {ck['scale']} ({checkpoint})")
        scale = int(ck["scale"])
    opts = SRInferConfig.from_dict({**_explicit(cfg, SRInferConfig), "method": method or ck["model"],
                                    **({"scale": scale} if scale else {})}, source="sr_infer config")
    require_scale(opts, "sr_infer config")
    if method in SR_INTERP:
        if checkpoint is not None:
            raise ValueError(f"{method} interpolation takes no checkpoint")
        return upscale_folder(lr_dir, out_dir, hr_dir=hr_dir, **opts.to_kwargs())
    kw = opts.to_kwargs()
    return infer_sr(model, lr_dir, out_dir, hr_dir=hr_dir, device=resolve_device(device), **kw)


# ----------------------------------------------------------------------------------------------------- detectors
def _detector_cfg(detector: str, cfg: ConfigLike, device: str | None) -> tuple[YoloConfig | FrcnnConfig, dict]:
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; expected one of {DETECTORS}")
    cls = FrcnnConfig if detector == "frcnn" else YoloConfig
    explicit = _explicit(cfg, cls)
    if detector != "frcnn":
        if "model" in explicit and isinstance(cfg, Mapping) and explicit["model"] != YOLO_MODELS[detector]:
            raise ConfigError(f"yolo.model {explicit['model']!r} contradicts --detector {detector}; "
                              f"leave 'model' out (the detector picks {YOLO_MODELS[detector]})")
        explicit["model"] = YOLO_MODELS[detector]
    if device is not None:
        explicit["device"] = device
    conf = cls.from_dict(explicit, source=f"{'frcnn' if detector == 'frcnn' else 'yolo'} config")
    return dataclasses.replace(conf, device=resolve_device(conf.device, yolo=detector != "frcnn")), explicit


def det_train_step(detector: str, image_set_dir: str | os.PathLike, partition_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, cfg: ConfigLike = None, resume: bool = False,
                   device: str | None = None) -> dict[str, Any]:
    """Train ``detector`` on the ``train`` partition read from ``image_set_dir`` (HR, LR or SR tiles).

    YOLO: the partitions are exported (``data_prep.export.export_yolo``) into ``out_dir/export`` (``train_yolo``
    then mirrors it into ``out_dir/dataset`` for its label cache); weights ``out_dir/train/weights/{best,last}.pt``.
    Faster R-CNN reads ``train.json`` and the tiles directly; weights ``out_dir/model.pt``.
    Returns ``{"detector", "weights", "imgsz" | "tile_size", ...}``.
    """
    conf, explicit = _detector_cfg(detector, cfg, device)
    parts = partition_files(partition_dir)
    images = flat_image_dir(image_set_dir, parts["train"])
    out = Path(out_dir)
    if detector == "frcnn":
        from baselines.frcnn import train_frcnn  # noqa: PLC0415

        res = train_frcnn(parts["train"], images, out, resume=resume, **conf.to_kwargs())
        return {"detector": detector, **res}
    from baselines.yolo import train_yolo  # noqa: PLC0415
    from data_prep.export import export_yolo  # noqa: PLC0415

    export = out / "export"
    if not (resume and (export / "data.yaml").is_file()):
        export_yolo(parts, images, export, link="hardlink")
    kw = conf.to_kwargs()
    if kw["imgsz"] is None:  # the native size of the images
        kw["imgsz"] = image_scale(images, TileIndex(parts["train"]))[1]
    weights = train_yolo(export / "data.yaml", out, resume=resume, **kw)
    return {"detector": detector, "weights": str(weights), "imgsz": kw["imgsz"], "device": conf.device,
            "data_yaml": str(export / "data.yaml")}


def _sr_block(sr_metrics: str | os.PathLike | Mapping[str, Any] | None, index: TileIndex,
              split: str) -> dict[str, Any] | None:
    """PSNR/SSIM of the SR stage over the tiles of ``split`` (all tiles when the per-tile names do not match)."""
    if sr_metrics is None:
        return None
    doc = dict(sr_metrics) if isinstance(sr_metrics, Mapping) else json.loads(Path(sr_metrics).read_text())
    if doc.get("psnr") is None:
        raise ValueError(f"{sr_metrics if not isinstance(sr_metrics, Mapping) else 'sr metrics'}: no PSNR "
                         f"(the SR step ran without --hr)")
    rows = [r for r in doc.get("per_tile", []) if Path(r["name"]).stem in index.by_stem and "psnr" in r]
    keep = {k: doc.get(k) for k in ("method", "scale", "crop_border", "test_y_channel")}
    if rows:
        return {"psnr": sum(r["psnr"] for r in rows) / len(rows), "ssim": sum(r["ssim"] for r in rows) / len(rows),
                "n": len(rows), "tiles": split, **keep}
    return {"psnr": doc["psnr"], "ssim": doc["ssim"], "n": doc.get("n"), "tiles": "all", **keep}


def det_eval_step(detector: str, weights: str | os.PathLike, image_set_dir: str | os.PathLike,
                  partition_dir: str | os.PathLike, out: str | os.PathLike, method: str, dataset: str,
                  degradation: str, seed: int, split: str = "test",
                  sr_metrics: str | os.PathLike | Mapping[str, Any] | None = None, cfg: ConfigLike = None,
                  device: str | None = None, scale_to_hr: int | None = None,
                  run_spec: Mapping[str, Any] | None = None, protocol: str = "coco") -> dict[str, Any]:
    """Detect on the ``split`` tiles, map boxes to the HR grid, score (COCO) and write ``out`` (metrics.json).

    ``detections.json`` (COCO results, HR pixels) is written beside ``out``. ``sr_metrics``: the
    ``sr_metrics.json`` of the SR stage that made ``image_set_dir`` (its PSNR/SSIM over the ``split`` tiles goes
    into the ``sr`` block). ``scale_to_hr`` (the run spec's: the degradation scale for LR tiles, 1 for HR / SR
    tiles) is checked against the images' sizes; without it the ratio of the sizes is used. ``run_spec``
    (:func:`benchcore.runspec.provenance_block`) is recorded in the provenance. ``protocol``: the AP protocol
    (``coco`` or ``mmdet``, :func:`benchcore.metrics.detection.coco_evaluate`). Returns the metrics document.
    """
    from benchcore.metrics.detection import coco_evaluate  # noqa: PLC0415
    from benchcore.metrics.results import write_metrics  # noqa: PLC0415
    from benchcore.atomic import atomic_write_json  # noqa: PLC0415

    conf, explicit = _detector_cfg(detector, cfg, device)
    gt = partition_files(partition_dir, parts=(split,), required=(split,))[split]
    index = TileIndex(gt)
    images = flat_image_dir(image_set_dir, gt)
    scale, side = image_scale(images, index)
    if scale_to_hr is not None and int(scale_to_hr) != scale:
        raise ValueError(f"{images}: the tiles are 1/{scale} of the HR size, but the run spec says 1/{scale_to_hr}")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"detector weights not found: {weights}")
    if detector == "frcnn":
        from baselines.frcnn import predict_frcnn  # noqa: PLC0415

        dets = predict_frcnn(weights, gt, images, scale_to_hr=float(scale), device=conf.device)
    else:
        from baselines.yolo import predict_yolo  # noqa: PLC0415

        kw = conf.predict_kwargs()  # imgsz None: the training size stored in the weights
        dets = predict_yolo(weights, images, gt, scale_to_hr=float(scale), **kw)
    detection = coco_evaluate(gt, dets, protocol=protocol)
    config = {"detector": detector, "detector_config": conf.to_dict(), "weights": str(Path(weights).resolve()),
              "images": str(images.resolve()), "partition": str(gt.resolve()), "split": split,
              **(dict(run_spec) if run_spec else {})}
    extra = {"split": split, "images": len(index), "scale_to_hr": scale, "input_side": side,
             "num_detections": len(dets)}
    dev = f"cuda:{conf.device}" if str(conf.device).isdigit() else conf.device  # ultralytics "0" -> cuda:0
    doc = write_metrics(out, method=method, dataset=dataset, degradation=degradation, seed=int(seed),
                        detection=detection, sr=_sr_block(sr_metrics, index, split), config=config,
                        device=dev, extra=extra)
    atomic_write_json(Path(out).parent / "detections.json", dets, indent=None)
    return doc
