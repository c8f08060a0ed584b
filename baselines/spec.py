"""Run specifications of the serial baselines: the SR stage (kind ``sr``) and the detector pipelines (kind ``serial``).

Settings are resolved once, in this order (later wins)::

    baselines YAML (config/baselines/*.yaml: sections sr, sr_<model>, sr_infer, yolo, frcnn)
      < the workflow's ``baselines.set`` (or a CLI's ``--set``)
      < the experiments row's ``set`` cell (serial rows)
      < what the run owns: the scale (the degradation's) and the seed (the run's)

The owned keys (``*.scale``, ``*.seed``) cannot be set anywhere else; an error names the key and its owner. The
workflow and the CLIs build specifications through :func:`build_sr_spec` / :func:`build_serial_spec`; the rules
run them through the ``*_from_spec`` entry points.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from baselines.config import ConfigError, FrcnnConfig, SRInferConfig, SRTrainConfig, YoloConfig
from baselines.pipeline import (SR_INTERP, YOLO_MODELS, det_eval_step, det_train_step, read_config,
                                section, sr_step, sr_train_step)
from benchcore import config as _cfg
from benchcore.runspec import data_paths, make_spec, run_dir, sr_run_dir

OWNED = {"scale": "the run's degradation (degradations.<id>.scale)",
         "seed": "the run's seed (seeds: in the workflow config)"}


class SpecError(_cfg.ConfigError):
    """A setting that cannot be resolved (the message names the source and the key)."""


def _sections(sets: Sequence[str] | Mapping[str, Any] | None, source: str) -> dict[str, dict[str, Any]]:
    """``{"yolo.epochs": 3}`` or ``["yolo.epochs=3"]`` (the one ``--set`` grammar) -> ``{"yolo": {"epochs": 3}}``."""
    if sets is None:
        return {}
    try:
        flat = dict(sets) if isinstance(sets, Mapping) else _cfg.parse_sets(sets, error=ConfigError)
        out: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            sec, _, rest = str(key).partition(".")
            if not rest:
                raise ConfigError(f"'{key}': baselines overrides are section.key (e.g. yolo.epochs)")
            out[sec] = _cfg.merge(out.get(sec, {}), _cfg.nest({rest: value}, error=ConfigError))
        return out
    except ConfigError as exc:
        raise SpecError(f"{source}: {exc}") from None


def _check_not_owned(doc: Mapping[str, Mapping[str, Any]], source: str) -> None:
    for sec, values in doc.items():
        for key in values or {}:
            if key in OWNED:
                raise SpecError(f"{source}: '{sec}.{key}' cannot be set here: it belongs to {OWNED[key]}")


def resolve_sections(config_file: str | Path, sets: Sequence[str] | Mapping[str, Any] | None = None,
                     row_sets: Sequence[str] | None = None, row_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The validated sections of the baselines config with the workflow's and the row's overrides merged in.

    Building a DAG resolves the same (file, overrides) for every serial run and SR stage (1,353 calls for
    config/paper.yaml), so the result is computed once per file version and overrides; callers get a copy.
    """
    path = Path(config_file)
    mtime = path.stat().st_mtime_ns if path.is_file() else -1  # an edited file is read again
    frozen = json.dumps(dict(sets) if isinstance(sets, Mapping) else list(sets or []), sort_keys=True, default=str)
    return copy.deepcopy(_resolve_sections(str(path), mtime, frozen, tuple(row_sets or ()), row_id))


@functools.lru_cache(maxsize=256)
def _resolve_sections(config_file: str, mtime: int, sets_json: str, row_sets: tuple[str, ...],
                      row_id: str | None) -> dict[str, dict[str, Any]]:
    """:func:`resolve_sections` for hashable arguments (``mtime`` only keys the cache)."""
    path = Path(config_file)
    raw = _cfg.read_yaml(path, "baselines config", error=SpecError)
    if isinstance(raw, Mapping):
        _check_not_owned(raw, str(path))
    user = _sections(json.loads(sets_json), "baselines.set")
    _check_not_owned(user, "baselines.set")
    row = _sections(list(row_sets), f"experiments row {row_id!r}, column 'set'")
    _check_not_owned(row, f"experiments row {row_id!r}, column 'set'")
    # layer by layer, so that an error names where the bad key is: the file, the workflow's overrides, the row
    read_config(path)
    if user:
        _relabel(lambda: read_config(path, user), str(path), "baselines.set")
    overrides = {s: _cfg.merge(user.get(s, {}), row.get(s, {})) for s in {*user, *row}}
    return _relabel(lambda: read_config(path, overrides or None), str(path), f"experiments row {row_id!r}, column 'set'")


def _relabel(fn: Any, path: str, source: str) -> Any:
    """``fn()``, with a config error's "<file> + --set" origin renamed to ``source`` (where the overrides came from)."""
    try:
        return fn()
    except ConfigError as exc:
        raise SpecError(str(exc).replace(f"{path} + --set", source).replace("--set", source)) from None


def sr_settings(sections: Mapping[str, Mapping[str, Any]], sr_model: str, scale: int, seed: int) -> dict[str, Any]:
    """``{"sr": SRTrainConfig dict | None, "sr_infer": SRInferConfig dict}`` of one SR stage (learned or interp)."""
    infer = SRInferConfig.from_dict({**section(sections, "sr_infer"), "method": sr_model, "scale": scale},
                                    source="sr_infer")
    from baselines.sr_models import SR_REGISTRY  # noqa: PLC0415

    train = None
    if sr_model in SR_REGISTRY:
        if scale not in SR_REGISTRY[sr_model].scales:
            raise SpecError(f"SR model {sr_model!r} supports scale {SR_REGISTRY[sr_model].scales}, not the "
                            f"degradation's {scale}: leave its rows out of that degradation (sweep / methods)")
        train = SRTrainConfig.from_dict({**section(sections, "sr", sr_model), "model_name": sr_model,
                                         "scale": scale, "seed": seed}, source=f"sr_{sr_model}").to_dict()
    elif sr_model not in SR_INTERP:
        raise SpecError(f"unknown SR model {sr_model!r}; expected one of {(*SR_REGISTRY, *SR_INTERP)}")
    return {"sr": train, "sr_infer": infer.to_dict()}


def detector_settings(sections: Mapping[str, Mapping[str, Any]], detector: str, seed: int) -> dict[str, Any]:
    """The detector's config dict (``yolo`` with the row's model yaml, or ``frcnn``), seeded by the run."""
    if detector == "frcnn":
        return FrcnnConfig.from_dict({**section(sections, "frcnn"), "seed": seed}, source="frcnn").to_dict()
    if detector not in YOLO_MODELS:
        raise SpecError(f"unknown detector {detector!r}; expected frcnn or one of {sorted(YOLO_MODELS)}")
    yolo = dict(section(sections, "yolo"))
    if "model" in yolo and yolo["model"] != YOLO_MODELS[detector]:
        raise SpecError(f"yolo.model {yolo['model']!r} contradicts the row's detector {detector}; leave it out")
    return YoloConfig.from_dict({**yolo, "model": YOLO_MODELS[detector], "seed": seed}, source="yolo").to_dict()


def detector_init(detector: str, settings: dict[str, Any], store: str) -> dict[str, Any]:
    """Resolve the detector's ``init`` (``docs/weights.md``) in place: ``settings["weights"]`` becomes the staged
    catalogue file (``imagenet`` / ``coco``, unless the user named a file); return the ``settings.init`` record
    (:func:`benchcore.weights.resolve_init`)."""
    from benchcore.weights import WeightsError, resolve_init  # noqa: PLC0415

    section_name = "frcnn" if detector == "frcnn" else "yolo"
    network = ("frcnn_r50_fpn" if settings["preset"] == "paper" else f"frcnn_{settings['preset']}") \
        if detector == "frcnn" else detector
    try:
        rec = resolve_init(network, settings["init"], store, file=settings["weights"], source=f"{section_name}.init")
    except WeightsError as exc:
        raise SpecError(str(exc)) from None
    settings["weights"] = rec["file"]
    return rec


def sr_init(sr_model: str, settings: dict[str, Any], store: str) -> dict[str, Any]:
    """Resolve a learned SR model's ``init`` (``docs/weights.md``) in place, as :func:`detector_init` does for the
    detectors: ``settings["weights"]`` (an ``SRTrainConfig`` dict) becomes the staged catalogue file of ``div2k``
    (the published weights of this model at the run's scale), unless the user named a file; return the
    ``settings.init`` record (:func:`benchcore.weights.resolve_init`, network ``<model>_x<scale>``)."""
    from benchcore.weights import WeightsError, resolve_init  # noqa: PLC0415

    try:
        rec = resolve_init(f"{sr_model}_x{settings['scale']}", settings["init"], store, file=settings["weights"],
                           source=f"sr_{sr_model}.init")
    except WeightsError as exc:
        raise SpecError(str(exc)) from None
    settings["weights"] = rec["file"]
    return rec


def build_sr_spec(*, results: str, dataset: str, degradation: Mapping[str, Any], sr_model: str, seed: int,
                  config_file: str | Path, sets: Sequence[str] | Mapping[str, Any] | None = None,
                  weights_dir: str | None = None) -> dict[str, Any]:
    """The specification of one SR stage: train (learned models) and super-resolve every LR tile.
    ``weights_dir``: where the weights stage puts the published files (default ``results/weights``)."""
    sections = resolve_sections(config_file, sets)
    settings = sr_settings(sections, sr_model, int(degradation["scale"]), seed)
    if settings["sr"] is not None:  # a learned model: how it starts (interpolations train nothing)
        settings["init"] = sr_init(sr_model, settings["sr"], weights_dir or f"{results}/weights")
    d = data_paths(results, dataset, degradation["name"])
    out = sr_run_dir(results, dataset, degradation["name"], sr_model, seed)
    paths = {"data": d["data"], "pairs": d["pairs"], "lr": d["lr"], "hr_images": d["hr_images"], "out": out,
             "model": f"{out}/model", "images": f"{out}/images"}
    sources = {"config": str(config_file), "sets": dict(sets) if isinstance(sets, Mapping) else list(sets or [])}
    return make_spec("sr", dataset, seed, degradation, paths, settings, sources, sr_model=sr_model)


def build_serial_spec(*, results: str, dataset: str, degradation: Mapping[str, Any], row: Mapping[str, Any],
                      seed: int, config_file: str | Path, sets: Sequence[str] | Mapping[str, Any] | None = None,
                      experiments: str | None = None, weights_dir: str | None = None) -> dict[str, Any]:
    """The specification of a serial row: the detector trained and scored on HR, LR or one SR stage's tiles.
    ``weights_dir``: where the weights stage puts the published files (default ``results/weights``)."""
    from benchcore.experiments import row_sets  # noqa: PLC0415

    row = {k: v for k, v in dict(row).items() if k != "line"}
    if row.get("kind") != "serial":
        raise SpecError(f"method {row.get('id')!r} is not a serial row (kind {row.get('kind')!r})")
    cell = row_sets(row, f"experiments row {row['id']!r}")
    shared = [item.split("=", 1)[0].strip() for item in cell if item.split("=", 1)[0].strip().startswith("sr")]
    if shared:
        raise SpecError(f"experiments row {row['id']!r}, column 'set': {shared[0]!r}: an SR stage is shared by every "
                        f"row that uses its model, so its settings go in baselines.set or the baselines config")
    sections = resolve_sections(config_file, sets, cell, row["id"])
    scale = int(degradation["scale"])
    d = data_paths(results, dataset, degradation["name"])
    settings: dict[str, Any] = {"detector": detector_settings(sections, row["detector"], seed),
                                "scale_to_hr": scale if row["input"] == "lr" else 1}
    settings["init"] = detector_init(row["detector"], settings["detector"], weights_dir or f"{results}/weights")
    paths: dict[str, Any] = {"data": d["data"], "partition": d["partition"],
                             "out": run_dir(results, dataset, degradation["name"], row["id"], seed)}
    sr_model = None
    if row["input"] == "hr":
        paths["images"] = d["tiles"]
    elif row["input"] == "lr":
        paths["images"] = d["lr"]
    else:
        sr_model = row["sr_model"]
        paths["images"] = f"{sr_run_dir(results, dataset, degradation['name'], sr_model, seed)}/images"
        settings["sr"] = build_sr_spec(results=results, dataset=dataset, degradation=degradation, sr_model=sr_model,
                                       seed=seed, config_file=config_file, sets=sets,
                                       weights_dir=weights_dir)["settings"]  # the stage that made the images
    sources = {"config": str(config_file), "sets": dict(sets) if isinstance(sets, Mapping) else list(sets or []),
               "experiments": experiments}
    return make_spec("serial", dataset, seed, degradation, paths, settings, sources, method=row, sr_model=sr_model)


# ------------------------------------------------------------------------------------------------ entry points
def train_sr_from_spec(spec: Mapping[str, Any], resume: bool = True) -> dict[str, Any]:
    """Train the SR model of a kind-``sr`` spec into ``paths.model`` (``model.pth``; resumable)."""
    s, p = spec["settings"], spec["paths"]
    if s["sr"] is None:
        raise SpecError(f"{spec['sr_model']} is an interpolation: nothing to train")
    return sr_train_step(spec["sr_model"], p["pairs"], p["model"], cfg=s["sr"], resume=resume)


def super_resolve_from_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Every LR tile of ``paths.lr`` through the SR stage into ``paths.images`` (+ ``sr_metrics.json``)."""
    s, p = spec["settings"], spec["paths"]
    m = spec["sr_model"]
    ckpt = Path(p["model"]) / "model.pth" if s["sr"] is not None else None
    device = s["sr"]["device"] if s["sr"] else "cpu"
    infer = {k: v for k, v in s["sr_infer"].items() if k not in ("method", "scale")}
    return sr_step(m, p["lr"], p["images"], hr_dir=p["hr_images"], checkpoint=ckpt, scale=s["sr_infer"]["scale"],
                   cfg=infer, device=device)


def train_detector_from_spec(spec: Mapping[str, Any], resume: bool = True) -> dict[str, Any]:
    """Train the row's detector on ``paths.images`` (its ``train`` partition) into ``paths.out/train``."""
    p = spec["paths"]
    return det_train_step(spec["method"]["detector"], p["images"], p["partition"], Path(p["out"]) / "train",
                          cfg=spec["settings"]["detector"], resume=resume)


def evaluate_detector_from_spec(spec: Mapping[str, Any], spec_path: str | Path | None = None,
                                n_boot: int = 0, split: str = "test", protocol: str = "coco") -> dict[str, Any]:
    """Score the trained detector on ``split`` on the HR grid; writes ``paths.out/metrics.json`` + detections.
    ``protocol``: the AP protocol (the workflow's ``evaluation.protocol``, ``coco`` or ``mmdet``)."""
    from benchcore.runspec import provenance_block  # noqa: PLC0415

    p, row = spec["paths"], spec["method"]
    done = Path(p["out"]) / "train" / "complete.json"
    if not done.is_file():
        raise FileNotFoundError(f"{done} not found (train the run first)")
    weights = json.loads(done.read_text(encoding="utf-8"))["weights"]
    sr_metrics = Path(p["images"]) / "sr_metrics.json" if row["input"] == "sr" else None
    out = Path(p["out"]) / "metrics.json"
    doc = det_eval_step(row["detector"], weights, p["images"], p["partition"], out, method=row["id"],
                        dataset=spec["dataset"], degradation=spec["degradation"]["name"], seed=spec["seed"],
                        split=split, sr_metrics=sr_metrics, cfg=spec["settings"]["detector"],
                        scale_to_hr=spec["settings"]["scale_to_hr"], run_spec=provenance_block(spec, spec_path),
                        protocol=protocol)
    if n_boot:
        from benchcore.metrics.results import add_bootstrap  # noqa: PLC0415

        doc = add_bootstrap(out, Path(p["partition"]) / f"{split}.json", n_boot=n_boot)
    return doc
